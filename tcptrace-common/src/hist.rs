//! Log-linear histogram buckets, shared by the kernel (which counts) and
//! userspace (which reads percentiles). Each power of two is split into
//! [`SUB`] linear sub-buckets, so a bucket is at most 1/8 of its lower bound
//! wide: a percentile read at a bucket's midpoint is within 6.25% of the true
//! value (plain log2 buckets would only give a factor of 2).

/// Sub-buckets per power of two (a power of two itself).
pub const SUB_BITS: u32 = 3;
pub const SUB: u64 = 1 << SUB_BITS;
const SUB_U32: u32 = 1 << SUB_BITS;
/// Buckets for values up to `u64::MAX`.
pub const SLOTS: u32 = (64 - SUB_BITS + 1) * SUB_U32;
/// Length of one state's row in the by-state histogram array: every slot,
/// then the minimum (inverted) at [`ROW_MIN_INV`] and the maximum at
/// [`ROW_MAX`].
pub const ROW: usize = 512;
/// The index of the maximum in a row.
pub const ROW_MAX: usize = ROW - 1;
/// The index of the minimum in a row, stored as `!min` so that the largest
/// value wins and 0 means none (a minimum of `u64::MAX` is no dwell).
pub const ROW_MIN_INV: usize = ROW - 2;
const _: () = assert!((SLOTS as usize) < ROW_MIN_INV && ROW.is_power_of_two());

/// The `HistKey::slot` holding the maximum value seen.
pub const MAX_SLOT: u32 = 0xffff;

/// The bucket of `v`. Values below `SUB` have one bucket each.
#[inline(always)]
#[must_use]
pub const fn slot(v: u64) -> u32 {
    if v < SUB {
        #[expect(clippy::cast_possible_truncation, reason = "v < 8")]
        return v as u32;
    }
    let k = v.ilog2(); // >= SUB_BITS
    let sub = ((v >> (k - SUB_BITS)) & (SUB - 1)) as u32; // 3 bits
    (k - SUB_BITS + 1) * SUB_U32 + sub
}

/// The smallest value in bucket `s`. A slot past the last (malformed map
/// data: [`slot`] never gives one) reads as the last bucket.
#[must_use]
pub const fn lower(s: u32) -> u64 {
    if s < SUB_U32 {
        return s as u64;
    }
    let s = if s < SLOTS { s } else { SLOTS - 1 };
    let k = s / SUB_U32 + SUB_BITS - 1;
    let sub = (s % SUB_U32) as u64;
    (1u64 << k) + (sub << (k - SUB_BITS))
}

/// One past the largest value in bucket `s`; `u64::MAX` for the last
/// bucket and any slot past it.
#[must_use]
pub const fn upper(s: u32) -> u64 {
    if s >= SLOTS - 1 {
        u64::MAX
    } else {
        lower(s + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_inside_its_bucket() {
        let mut v = 0u64;
        while v < 1 << 40 {
            let s = slot(v);
            assert!(lower(s) <= v && v < upper(s), "v={v} s={s}");
            assert!(s < SLOTS);
            v = v * 3 / 2 + 1;
        }
        assert!(slot(u64::MAX) < SLOTS);
    }

    #[test]
    fn buckets_are_at_most_an_eighth_of_their_value_wide() {
        for s in SUB_U32..SLOTS - 1 {
            let (lo, hi) = (lower(s), upper(s));
            assert!((hi - lo) * SUB <= lo, "slot {s}: [{lo}, {hi})");
        }
    }

    /// Userspace reads slots from kernel maps: any `u32` must give a bucket.
    #[test]
    fn slots_past_the_last_read_as_the_last_bucket() {
        for s in [SLOTS, SLOTS + 1, 509, MAX_SLOT, u32::MAX] {
            assert_eq!(lower(s), lower(SLOTS - 1), "slot {s}");
            assert_eq!(upper(s), u64::MAX, "slot {s}");
        }
    }

    #[test]
    fn slots_are_monotonic() {
        assert_eq!(slot(7), 7);
        assert_eq!(slot(8), 8);
        assert_eq!(slot(15), 15);
        assert_eq!(slot(16), 16);
        assert_eq!(slot(17), 16);
        assert!(slot(200_000_000) > slot(100_000_000));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// Every value lies in its bucket, whose bounds round-trip.
        #[test]
        fn any_value_lies_in_its_bucket(v: u64, shift in 0u32..64) {
            let v = v >> shift; // every magnitude, not mostly huge values
            let s = slot(v);
            assert!(s < SLOTS);
            assert!(lower(s) <= v && (v < upper(s) || upper(s) == u64::MAX), "v={v} s={s}");
            assert_eq!(slot(lower(s)), s);
        }

        /// Any slot, as kernel map data may hold, gives ordered bounds.
        #[test]
        fn any_slot_has_ordered_bounds(s: u32) {
            assert!(lower(s) <= upper(s));
            if s + 1 < SLOTS {
                assert_eq!(upper(s), lower(s + 1));
            }
        }
    }
}
