//! Bounded memory for tables that grow with traffic: [`Aged`], a map whose
//! entries expire when not touched for a while and whose size is capped,
//! [`TokenBucket`], a rate limit, and [`Sweep`], mark and sweep over two
//! passes. Pure: the caller passes the time and the keys.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::Duration,
};

/// A map of entries stamped with the last time they were touched.
/// [`Aged::prune`] drops those untouched for longer than its `ttl_ns`; a
/// new key beyond `cap` entries evicts the least recently touched one.
/// Both are counted. A second index by (touch time, key) finds the least
/// recently touched entries in O(log n), so that a flood of new keys (which
/// a traced process controls) costs O(log n) per key, not a scan.
#[derive(Clone, Debug)]
pub struct Aged<K, V> {
    map: BTreeMap<K, (V, u64)>,
    by_touch: BTreeSet<(u64, K)>,
    ttl_ns: u64,
    cap: usize,
    /// Entries dropped by [`Aged::prune`] (stale).
    pub expired: u64,
    /// Entries dropped to make room for a new key (the cap).
    pub evicted: u64,
}

impl<K: Ord + Clone, V> Aged<K, V> {
    /// Entries expire `ttl` after they were last touched (times are in
    /// nanoseconds, as the callers' clocks give them).
    #[must_use]
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Aged {
            map: BTreeMap::new(),
            by_touch: BTreeSet::new(),
            ttl_ns: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
            cap: cap.max(1),
            expired: 0,
            evicted: 0,
        }
    }

    /// Move `key`'s stamp from `old` to `new` in the recency index.
    fn restamp(&mut self, key: &K, old: u64, new: u64) {
        if old != new {
            self.by_touch.remove(&(old, key.clone()));
            self.by_touch.insert((new, key.clone()));
        }
    }

    /// The entry of `key`, touched at `now_ns`; `new` makes it if absent.
    pub fn touch(&mut self, key: K, now_ns: u64, new: impl FnOnce() -> V) -> &mut V {
        if let Some(old) = self.map.get(&key).map(|e| e.1) {
            self.restamp(&key, old, old.max(now_ns));
        } else {
            if self.map.len() >= self.cap
                && let Some((_, oldest)) = self.by_touch.pop_first()
            {
                self.map.remove(&oldest);
                self.evicted += 1;
            }
            self.by_touch.insert((now_ns, key.clone()));
        }
        let e = self.map.entry(key).or_insert_with(|| (new(), now_ns));
        e.1 = e.1.max(now_ns);
        &mut e.0
    }

    /// The entry of `key`, touched at `now_ns`, if present.
    pub fn touch_existing(&mut self, key: &K, now_ns: u64) -> Option<&mut V> {
        let old = self.map.get(key)?.1;
        let stamp = old.max(now_ns);
        self.restamp(key, old, stamp);
        self.map.get_mut(key).map(|e| {
            e.1 = stamp;
            &mut e.0
        })
    }

    #[must_use]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|e| &e.0)
    }

    #[must_use]
    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Drop the entries untouched for longer than the TTL at `now_ns`.
    pub fn prune(&mut self, now_ns: u64) {
        while let Some((t, _)) = self.by_touch.first() {
            if now_ns.saturating_sub(*t) <= self.ttl_ns {
                break;
            }
            if let Some((_, key)) = self.by_touch.pop_first() {
                self.map.remove(&key);
                self.expired += 1;
            }
        }
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, (v, _))| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(v, _)| v)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries dropped so far, stale or evicted.
    #[must_use]
    pub fn forgotten(&self) -> u64 {
        self.expired + self.evicted
    }
}

/// A token bucket: `per_s` tokens a second, at most `burst` saved up.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_s: u64,
    burst: u64,
    /// Tokens, in billionths (token-nanoseconds per second).
    nano_tokens: u64,
    last_ns: u64,
    /// Requests refused so far.
    pub refused: u64,
}

impl TokenBucket {
    /// A full bucket.
    #[must_use]
    pub fn new(per_s: u64, burst: u64) -> Self {
        TokenBucket {
            per_s,
            burst,
            nano_tokens: burst.saturating_mul(1_000_000_000),
            last_ns: 0,
            refused: 0,
        }
    }

    /// Take a token at `now_ns`: false (and counted) when none is left.
    pub fn take(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = self.burst.saturating_mul(1_000_000_000);
        self.nano_tokens = self
            .nano_tokens
            .saturating_add(elapsed.saturating_mul(self.per_s))
            .min(cap);
        if self.nano_tokens >= 1_000_000_000 {
            self.nano_tokens -= 1_000_000_000;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

/// Mark and sweep of a map that a concurrent writer adds to: a key is
/// deleted once two consecutive passes found it unreferenced. A key added
/// with its first reference between a pass's mark and its sweep looks
/// unreferenced in that pass only; by the next, its reference is marked.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    /// Keys unreferenced at the last pass.
    suspects: HashSet<u32>,
}

impl Sweep {
    /// One pass over the map's `present` keys, with `referenced` those in
    /// use now: the keys to delete (unreferenced in this pass and the last).
    pub fn pass(
        &mut self,
        present: impl IntoIterator<Item = u32>,
        referenced: &HashSet<u32>,
    ) -> Vec<u32> {
        let mut doomed = Vec::new();
        let mut suspects = HashSet::new();
        for k in present {
            if referenced.contains(&k) {
                continue;
            }
            if self.suspects.contains(&k) {
                doomed.push(k);
            } else {
                suspects.insert(k);
            }
        }
        self.suspects = suspects;
        doomed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_after_two_unreferenced_passes() {
        let mut s = Sweep::default();
        let refs = |v: &[u32]| v.iter().copied().collect::<HashSet<u32>>();
        // 1 in use, 2 and 3 not (3 may have been added after the mark).
        assert!(s.pass([1, 2, 3], &refs(&[1])).is_empty());
        // 3's socket is marked now; 2 is still unreferenced; 4 is new.
        assert_eq!(s.pass([1, 2, 3, 4], &refs(&[1, 3])), vec![2]);
        // 1's socket is gone: a suspect first.
        assert_eq!(s.pass([1, 3, 4], &refs(&[3])), vec![4]);
        assert_eq!(s.pass([1, 3], &refs(&[3])), vec![1]);
        // A suspect referenced again is cleared.
        let mut s = Sweep::default();
        assert!(s.pass([5], &refs(&[])).is_empty());
        assert!(s.pass([5], &refs(&[5])).is_empty());
        assert!(s.pass([5], &refs(&[])).is_empty());
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn entries_untouched_past_the_ttl_expire() {
        let mut m: Aged<u32, u64> = Aged::new(Duration::from_mins(1), 100);
        *m.touch(1, 0, || 0) += 1;
        *m.touch(2, 0, || 0) += 1;
        *m.touch(2, 50 * S, || 0) += 1;
        m.prune(61 * S);
        assert_eq!(m.get(&1), None, "untouched for 61 s");
        assert_eq!(m.get(&2), Some(&2), "touched 11 s ago");
        assert_eq!(m.expired, 1);
        assert!(m.touch_existing(&2, 100 * S).is_some());
        m.prune(160 * S);
        assert_eq!(m.len(), 1, "touch_existing refreshed it");
        m.prune(161 * S);
        assert!(m.is_empty());
        assert_eq!(m.forgotten(), 2);
    }

    #[test]
    fn the_cap_evicts_the_least_recently_touched() {
        let mut m: Aged<u32, ()> = Aged::new(Duration::MAX, 3);
        for k in 0..3 {
            m.touch(k, u64::from(k), || ());
        }
        m.touch(0, 10, || ()); // 1 is now the oldest
        m.touch(3, 11, || ());
        assert_eq!(m.len(), 3);
        assert!(!m.contains_key(&1));
        assert!(m.contains_key(&0) && m.contains_key(&3));
        assert_eq!(m.evicted, 1);
        // Ten thousand new keys: the map stays at its cap.
        for k in 4..10_004 {
            m.touch(k, u64::from(k) + 11, || ());
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.evicted, 10_001);
    }

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(4, 8);
        let granted = (0..100).filter(|_| b.take(0)).count();
        assert_eq!(granted, 8, "the burst");
        assert_eq!(b.refused, 92);
        // One second later: four more.
        let granted = (0..100).filter(|_| b.take(S)).count();
        assert_eq!(granted, 4);
        // Ten idle seconds refill to the burst, no more.
        let granted = (0..100).filter(|_| b.take(11 * S)).count();
        assert_eq!(granted, 8);
        // A quarter second gives one token.
        assert!(b.take(11 * S + S / 4));
        assert!(!b.take(11 * S + S / 4));
    }

    proptest::proptest! {
        /// The recency index agrees with a naive map that scans for the
        /// oldest entry, whatever the order of touches, prunes and
        /// evictions: same keys, same counts.
        #[test]
        fn matches_a_scanning_model(
            ops in proptest::collection::vec((0u8..3, 0u16..40, 0u64..50), 0..300),
        ) {
            let (ttl, cap) = (20, 8);
            let mut m: Aged<u16, ()> = Aged::new(Duration::from_nanos(ttl), cap);
            let mut naive: BTreeMap<u16, u64> = BTreeMap::new();
            let (mut expired, mut evicted, mut now) = (0u64, 0u64, 0u64);
            for (op, key, dt) in ops {
                now += dt;
                match op {
                    0 => {
                        m.touch(key, now, || ());
                        if !naive.contains_key(&key) && naive.len() >= cap {
                            let oldest = naive.iter().min_by_key(|(k, t)| (**t, **k)).map(|(k, _)| *k);
                            if let Some(k) = oldest {
                                naive.remove(&k);
                                evicted += 1;
                            }
                        }
                        let t = naive.entry(key).or_insert(now);
                        *t = (*t).max(now);
                    }
                    1 => {
                        let hit = m.touch_existing(&key, now).is_some();
                        proptest::prop_assert_eq!(hit, naive.contains_key(&key));
                        if let Some(t) = naive.get_mut(&key) {
                            *t = (*t).max(now);
                        }
                    }
                    _ => {
                        m.prune(now);
                        let before = naive.len();
                        naive.retain(|_, t| now - *t <= ttl);
                        expired += (before - naive.len()) as u64;
                    }
                }
                let keys: Vec<u16> = m.iter().map(|(k, ())| *k).collect();
                let want: Vec<u16> = naive.keys().copied().collect();
                proptest::prop_assert_eq!(keys, want);
                proptest::prop_assert_eq!((m.expired, m.evicted), (expired, evicted));
                proptest::prop_assert_eq!(m.by_touch.len(), m.map.len());
            }
        }
    }
}
