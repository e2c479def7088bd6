//! Dwell histograms in userspace: built from the kernel's log-linear buckets
//! (or fed values directly, for TIME_WAIT), with percentiles and the log2
//! rows that the text report draws.

use std::collections::BTreeMap;

use tcptrace_common::{HistBy, hist};

/// What a percentile from these buckets is worth, said with every report.
pub const RESOLUTION: &str = "log-linear buckets, 8 per power of two: percentiles are bucket \
     midpoints held within the exact min and max, within 6.25% of the true value; max is exact. \
     For exact per-socket dwell times use the event stream (tcptrace --json, dwell_ns).";

/// Counts by bucket, plus the exact maximum and, when known, the exact
/// minimum. Counts saturate: the kernel's maps may hold anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hist {
    pub buckets: BTreeMap<u32, u64>,
    pub max_ns: u64,
    /// None when the source keeps no minimum (the kernel's `--by` maps).
    pub min_ns: Option<u64>,
}

impl Hist {
    /// Record one value (userspace-measured dwells).
    pub fn add(&mut self, v: u64) {
        self.add_bucket(hist::slot(v), 1);
        self.max_ns = self.max_ns.max(v);
        self.add_min(v);
    }

    /// Add a kernel bucket count.
    pub fn add_bucket(&mut self, slot: u32, n: u64) {
        if slot == hist::MAX_SLOT {
            self.max_ns = self.max_ns.max(n);
        } else {
            let c = self.buckets.entry(slot).or_default();
            *c = c.saturating_add(n);
        }
    }

    /// Add an exact minimum (the kernel's by-state rows keep one).
    pub fn add_min(&mut self, v: u64) {
        self.min_ns = Some(self.min_ns.map_or(v, |m| m.min(v)));
    }

    /// Add `other`'s counts, maximum and minimum: the histogram of both
    /// sets of values. The minimum stays known only if both know theirs (or
    /// one is empty).
    pub fn merge(&mut self, other: &Hist) {
        let empty = |h: &Hist| h.buckets.is_empty() && h.max_ns == 0;
        if empty(other) {
            return;
        }
        self.min_ns = if empty(self) {
            other.min_ns
        } else {
            self.min_ns.zip(other.min_ns).map(|(a, b)| a.min(b))
        };
        for (&s, &c) in &other.buckets {
            let n = self.buckets.entry(s).or_default();
            *n = n.saturating_add(c);
        }
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.values().fold(0, |a, &c| a.saturating_add(c))
    }

    /// The `p`-quantile (0..=1): the midpoint of the bucket holding that rank,
    /// kept within the exact minimum and maximum (the true quantile lies
    /// between them, so this only brings it closer).
    #[must_use]
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within a count"
        )]
        let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
        let mut seen: u64 = 0;
        for (&s, &c) in &self.buckets {
            seen = seen.saturating_add(c);
            if seen >= rank {
                let (lo, hi) = (hist::lower(s), hist::upper(s));
                let mid = lo + (hi - lo) / 2;
                let capped = if self.max_ns > 0 {
                    mid.min(self.max_ns)
                } else {
                    mid
                };
                return Some(capped.max(self.min_ns.unwrap_or(0)));
            }
        }
        Some(self.max_ns)
    }

    /// Counts regrouped by power of two: `(lower, upper, count)`, for display.
    #[must_use]
    pub fn log2_rows(&self) -> Vec<(u64, u64, u64)> {
        let mut rows: BTreeMap<u32, u64> = BTreeMap::new();
        for (&s, &c) in &self.buckets {
            let lo = hist::lower(s);
            let k = if lo == 0 { 0 } else { 64 - lo.leading_zeros() };
            let row = rows.entry(k).or_default();
            *row = row.saturating_add(c);
        }
        let (Some(&first), Some(&last)) = (rows.keys().next(), rows.keys().last()) else {
            return Vec::new();
        };
        (first..=last)
            .map(|k| {
                let lo = if k == 0 { 0 } else { 1u64 << (k - 1) };
                let hi = if k == 0 {
                    1
                } else {
                    1u64.checked_shl(k).unwrap_or(u64::MAX)
                };
                (lo, hi, rows.get(&k).copied().unwrap_or(0))
            })
            .collect()
    }
}

/// The name of a `--by` split, as flags, reports and metric labels spell
/// it; None when not split.
#[must_use]
pub fn by_name(by: HistBy) -> Option<&'static str> {
    match by {
        HistBy::Off | HistBy::State => None,
        HistBy::LocalPort => Some("lport"),
        HistBy::RemotePort => Some("rport"),
        HistBy::RemoteAddr => Some("raddr"),
        HistBy::Comm => Some("comm"),
        HistBy::Netns => Some("netns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_count_both_sets() {
        let mut a = Hist::default();
        a.add(1_000);
        a.add(5_000);
        let mut b = Hist::default();
        b.add(300);
        b.add(9_000_000);
        let mut m = Hist::default();
        m.merge(&a);
        assert_eq!(m, a, "into an empty one: a copy");
        m.merge(&Hist::default());
        assert_eq!(m, a, "an empty one adds nothing");
        m.merge(&b);
        assert_eq!(m.count(), 4);
        assert_eq!((m.min_ns, m.max_ns), (Some(300), 9_000_000));
        // The kernel's --by rows keep no minimum: then neither does the sum.
        let mut k = Hist::default();
        k.add_bucket(hist::slot(700), 2);
        m.merge(&k);
        assert_eq!((m.count(), m.min_ns), (6, None));
    }

    #[test]
    fn percentiles_are_within_the_stated_resolution() {
        let mut h = Hist::default();
        for i in 0..50u64 {
            h.add(200_000_000 + i * 1_000_000); // 200..249 ms
        }
        assert_eq!(h.count(), 50);
        let p50 = h.percentile(0.5).unwrap();
        let true_p50 = 224_000_000f64;
        #[expect(clippy::cast_precision_loss, reason = "test ratio")]
        let err = (p50 as f64 - true_p50).abs() / true_p50;
        assert!(err < 0.0625 * 2.0, "p50 {p50} vs {true_p50}");
        assert_eq!(h.max_ns, 249_000_000);
        assert!(
            h.percentile(0.99).unwrap() <= h.max_ns,
            "capped at the exact max"
        );
        assert_eq!(Hist::default().percentile(0.5), None);
    }

    /// 70.2µs lies in the bucket [65.5µs, 73.7µs): its midpoint, 69.6µs,
    /// printed as the median below the exact minimum until held within it.
    #[test]
    fn percentiles_stay_within_the_exact_min_and_max() {
        let mut h = Hist::default();
        h.add_bucket(hist::slot(70_200), 3);
        h.add_bucket(hist::MAX_SLOT, 73_000);
        h.add_min(70_200);
        assert_eq!(h.percentile(0.5), Some(70_200));
        h.add_bucket(hist::slot(66_000), 1);
        h.add_min(66_000);
        assert_eq!(
            h.percentile(0.01),
            Some(69_632),
            "the midpoint, within bounds"
        );
    }

    /// Slots and counts come from kernel maps: any values give a result.
    #[test]
    fn malformed_kernel_buckets_do_not_panic() {
        let mut h = Hist::default();
        h.add_bucket(u32::MAX, u64::MAX);
        h.add_bucket(hist::SLOTS, u64::MAX);
        h.add_bucket(hist::SLOTS, 1);
        assert_eq!(h.count(), u64::MAX);
        assert!(h.percentile(0.5).is_some());
        assert!(!h.log2_rows().is_empty());
    }

    #[test]
    fn kernel_buckets_and_max_slot() {
        let mut h = Hist::default();
        h.add_bucket(hist::slot(1000), 3);
        h.add_bucket(hist::MAX_SLOT, 1100);
        assert_eq!(h.count(), 3);
        assert_eq!(h.max_ns, 1100);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Percentiles of userspace-fed values: within the bucket's stated
        /// resolution (half a bucket, at most 1/16 of the value: 6.25%) of the
        /// true sample quantile at the same rank, and min <= p50 <= p99 <= max.
        #[test]
        fn percentiles_are_within_resolution_and_ordered(
            values in proptest::collection::vec((proptest::prelude::any::<u64>(), 0u32..64), 1..200),
            p in 0.0f64..=1.0,
        ) {
            let mut values: Vec<u64> = values.into_iter().map(|(v, s)| v >> s).collect();
            let mut h = Hist::default();
            for &v in &values {
                h.add(v);
            }
            values.sort_unstable();
            let n = values.len();
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss,
                     clippy::cast_precision_loss, reason = "a rank within a count")]
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            let truth = values[rank - 1];
            let got = h.percentile(p).unwrap();
            assert!(u128::from(got.abs_diff(truth)) * 16 <= u128::from(truth), "{got} vs {truth}");
            let (min, max) = (values[0], values[n - 1]);
            let (p50, p99) = (h.percentile(0.5).unwrap(), h.percentile(0.99).unwrap());
            assert!(min <= p50 && p50 <= p99 && p99 <= max, "{min} {p50} {p99} {max}");
        }

        /// Kernel rows (slots, counts, min and max from a map) give a
        /// percentile without a panic, whatever they hold.
        #[test]
        fn any_kernel_row_gives_a_percentile(
            rows in proptest::collection::vec((proptest::prelude::any::<u32>(), proptest::prelude::any::<u64>()), 0..20),
            min: u64,
            p in 0.0f64..=1.0,
        ) {
            let mut h = Hist::default();
            for (s, c) in rows {
                h.add_bucket(s % (hist::SLOTS + 20), c);
            }
            h.add_min(min);
            let _ = (h.percentile(p), h.log2_rows(), h.count());
        }
    }
}
