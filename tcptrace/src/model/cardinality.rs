//! Bounded label sets for `/metrics` (`--top`): what traced processes do
//! (destinations, ports, comms) must not become one series each. Gauges
//! keep the N largest and sum the rest as `other`; counters, which must
//! never go down, keep the first N keys they see and count the rest as
//! `other`.

use std::collections::BTreeMap;

use crate::model::histogram::Hist;

/// The label value that stands for everything past the top N.
pub const OTHER: &str = "other";

/// The default `--top`.
pub const DEFAULT_TOP: usize = 20;

/// The `n` largest of `items` by `size` (ties keep their order), and, when
/// any are left over, `other` with each of them folded into it.
pub fn top_n<T>(
    mut items: Vec<T>,
    n: usize,
    size: impl Fn(&T) -> f64,
    other: T,
    mut fold: impl FnMut(&mut T, &T),
) -> Vec<T> {
    if items.len() <= n {
        return items;
    }
    items.sort_by(|a, b| size(b).total_cmp(&size(a)));
    let rest = items.split_off(n);
    let mut other = other;
    for r in &rest {
        fold(&mut other, r);
    }
    items.push(other);
    items
}

/// Dwell histograms by (state, group): of each state's groups, the `n`
/// with the most dwells, and the rest merged into the group `other`.
/// Ungrouped histograms (no `--by`) pass as they are.
#[must_use]
pub fn top_groups(
    hists: Vec<(String, Option<String>, Hist)>,
    n: usize,
) -> Vec<(String, Option<String>, Hist)> {
    let mut by_state: BTreeMap<String, Vec<(String, Option<String>, Hist)>> = BTreeMap::new();
    let mut out = Vec::new();
    for h in hists {
        if h.1.is_some() {
            by_state.entry(h.0.clone()).or_default().push(h);
        } else {
            out.push(h);
        }
    }
    for (state, groups) in by_state {
        let other = (state, Some(OTHER.to_owned()), Hist::default());
        #[expect(clippy::cast_precision_loss, reason = "an order, not a value")]
        out.extend(top_n(
            groups,
            n,
            |h| h.2.count() as f64,
            other,
            |o, h| {
                o.2.merge(&h.2);
            },
        ));
    }
    out
}

/// Counters by key, at most `cap` keys per group (a group is a namespace
/// and call, say); a group's later keys count under its `other` key.
/// Counts only go up, as Prometheus counters must.
#[derive(Clone, Debug)]
pub struct CappedCounters<G: Ord + Clone, K: Ord + Clone> {
    cap: usize,
    counts: BTreeMap<G, BTreeMap<K, u64>>,
    other: K,
    /// Groups at most; past it a new group counts under the first's
    /// `other`, so that the whole table stays bounded.
    max_groups: usize,
}

impl<G: Ord + Clone, K: Ord + Clone> CappedCounters<G, K> {
    #[must_use]
    pub fn new(cap: usize, max_groups: usize, other: K) -> Self {
        CappedCounters {
            cap,
            counts: BTreeMap::new(),
            other,
            max_groups: max_groups.max(1),
        }
    }

    /// Count one under `key` in `group`.
    pub fn add(&mut self, group: G, key: K) {
        let group = if self.counts.contains_key(&group) || self.counts.len() < self.max_groups {
            group
        } else if let Some(first) = self.counts.keys().next() {
            first.clone()
        } else {
            group
        };
        let keys = self.counts.entry(group).or_default();
        let key = if keys.contains_key(&key) || keys.len() < self.cap {
            key
        } else {
            self.other.clone()
        };
        *keys.entry(key).or_insert(0) += 1;
    }

    /// Every (group, key, count).
    pub fn iter(&self) -> impl Iterator<Item = (&G, &K, u64)> {
        (self.counts.iter()).flat_map(|(g, keys)| keys.iter().map(move |(k, n)| (g, k, *n)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn top_n_keeps_the_largest_and_folds_the_rest() {
        let items = vec![("a", 1), ("b", 5), ("c", 3), ("d", 4)];
        let kept = top_n(items, 2, |x| f64::from(x.1), (OTHER, 0), |o, x| o.1 += x.1);
        assert_eq!(kept, vec![("b", 5), ("d", 4), (OTHER, 4)]);
    }

    #[test]
    fn top_n_leaves_few_items_alone() {
        let items = vec![("a", 1), ("b", 5)];
        let kept = top_n(
            items.clone(),
            2,
            |x| f64::from(x.1),
            (OTHER, 0),
            |o, x| o.1 += x.1,
        );
        assert_eq!(kept, items, "no `other` when nothing is left over");
    }

    #[test]
    fn capped_counters_send_late_keys_to_other_and_never_go_down() {
        let mut c = CappedCounters::new(2, 8, OTHER.to_owned());
        for port in ["80", "81", "82", "80", "83"] {
            c.add("ns1", port.to_owned());
        }
        c.add("ns2", "9".to_owned());
        let got: Vec<(&str, &str, u64)> = c.iter().map(|(g, k, n)| (*g, k.as_str(), n)).collect();
        assert_eq!(
            got,
            vec![
                ("ns1", "80", 2),
                ("ns1", "81", 1),
                ("ns1", OTHER, 2),
                ("ns2", "9", 1)
            ]
        );
    }

    #[test]
    fn top_groups_merge_each_states_small_groups() {
        let hist = |n: u64| {
            let mut h = Hist::default();
            for _ in 0..n {
                h.add(1_000);
            }
            h
        };
        let g = |state: &str, group: Option<&str>, n| {
            (state.to_owned(), group.map(str::to_owned), hist(n))
        };
        let got = top_groups(
            vec![
                g("TIME_WAIT", None, 9),
                g("CLOSE_WAIT", Some("80"), 1),
                g("CLOSE_WAIT", Some("81"), 5),
                g("CLOSE_WAIT", Some("82"), 2),
                g("ESTABLISHED", Some("80"), 3),
            ],
            1,
        );
        let counts: Vec<(&str, Option<&str>, u64)> = (got.iter())
            .map(|(s, g, h)| (s.as_str(), g.as_deref(), h.count()))
            .collect();
        assert_eq!(
            counts,
            vec![
                ("TIME_WAIT", None, 9),
                ("CLOSE_WAIT", Some("81"), 5),
                ("CLOSE_WAIT", Some(OTHER), 3),
                ("ESTABLISHED", Some("80"), 3),
            ]
        );
    }

    proptest! {
        /// Whatever the keys, at most cap + 1 series per group and at most
        /// max_groups groups, and no count is lost.
        #[test]
        fn capped_counters_stay_bounded(keys in proptest::collection::vec((0u8..6, 0u16..500), 0..400)) {
            let mut c = CappedCounters::new(10, 3, u16::MAX);
            for (g, k) in &keys {
                c.add(*g, *k);
            }
            let mut per_group: BTreeMap<u8, usize> = BTreeMap::new();
            for (g, _, _) in c.iter() {
                *per_group.entry(*g).or_default() += 1;
            }
            prop_assert!(per_group.len() <= 3);
            prop_assert!(per_group.values().all(|n| *n <= 11));
            prop_assert_eq!(c.iter().map(|(_, _, n)| n).sum::<u64>(), keys.len() as u64);
        }

        /// top_n returns at most n + 1 items and keeps the total.
        #[test]
        fn top_n_is_bounded_and_keeps_the_sum(sizes in proptest::collection::vec(0u32..1000, 0..200), n in 0usize..30) {
            let items: Vec<(u32, u64)> = sizes.iter().map(|s| (*s, u64::from(*s))).collect();
            let total: u64 = items.iter().map(|x| x.1).sum();
            let kept = top_n(items, n, |x| f64::from(x.0), (u32::MAX, 0), |o, x| o.1 += x.1);
            prop_assert!(kept.len() <= n + 1);
            prop_assert_eq!(kept.iter().map(|x| x.1).sum::<u64>(), total);
        }
    }
}
