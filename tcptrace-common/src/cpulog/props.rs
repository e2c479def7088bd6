//! Property tests of the log reader: any head, any cursor and any slot
//! contents (a mapping the kernel scribbled on) read without a panic, and
//! every record is either handed over intact or counted lost.

extern crate std;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

/// A log whose head is anything and whose slots are garbage, except the
/// sequence numbers in `intact`, which hold their sealed record.
struct Scribbled {
    head: u64,
    garbage: Vec<LogRecord>,
    intact: Vec<bool>,
}

impl LogView for Scribbled {
    fn head(&self) -> u64 {
        self.head
    }

    fn slot(&self, seq: u64) -> LogRecord {
        let i = usize::try_from(seq % self.garbage.len() as u64).unwrap();
        if self.intact[i] {
            #[expect(clippy::cast_possible_truncation, reason = "modulo 2^16")]
            let mut r = LogRecord {
                seq: seq as u16,
                ts_ns: seq,
                ..self.garbage[i]
            };
            r.seal = seal(seq, &r);
            r
        } else {
            self.garbage[i]
        }
    }
}

fn record() -> impl Strategy<Value = LogRecord> {
    (any::<[u64; 4]>(), any::<[u8; 32]>(), any::<(u16, u32)>()).prop_map(|(w, a, (seq, seal))| {
        #[expect(clippy::cast_possible_truncation, reason = "any bits will do")]
        LogRecord {
            seq,
            seal,
            ts_ns: w[0],
            tgid: w[1] as u32,
            tid: (w[1] >> 32) as u32,
            family: w[2] as u8,
            sport: (w[2] >> 16) as u16,
            dport: (w[2] >> 32) as u16,
            states: (w[3]) as u8,
            netns: (w[3] >> 8) as u32,
            saddr: a[..16].try_into().unwrap(),
            daddr: a[16..].try_into().unwrap(),
        }
    })
}

/// Sequence numbers near 0, near the wrap of u64, and anywhere.
fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..3 * SLOTS_U64,
        Just(u64::MAX),
        u64::MAX - 2 * SLOTS_U64..,
        any::<u64>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_log_reads_without_panic_and_accounts_for_every_record(
        head in seq(),
        next in seq(),
        slots in proptest::collection::vec((record(), any::<bool>()), 1..8),
    ) {
        let (garbage, intact) = slots.into_iter().unzip();
        let log = Scribbled { head, garbage, intact };
        let mut cursor = Cursor { next, stalled: None };
        let start = if head < next { 0 } else { next };
        let (mut taken, mut last) = (0u64, None);
        let lost = cursor.drain(&log, |r| {
            // An intact record's timestamp is its sequence number here.
            assert!(r.ts_ns >= start && r.ts_ns < head && last < Some(r.ts_ns), "in order, once");
            last = Some(r.ts_ns);
            taken += 1;
        });
        assert!(cursor.next <= head);
        assert_eq!(taken + lost, cursor.next - start, "read or lost, once each");
    }
}
