//! The per-CPU log: records read once and in order, and exactly the
//! overwritten or torn ones counted lost.

extern crate std;
use std::boxed::Box;
use std::cell::RefCell;
use std::vec::Vec;

use super::*;

/// A log in memory, written the way the eBPF side writes it.
struct Mem(RefCell<Box<[LogRecord]>>, RefCell<u64>);

impl Mem {
    fn new() -> Self {
        Mem(
            RefCell::new(std::vec![LogRecord::default(); SLOTS].into_boxed_slice()),
            RefCell::new(0),
        )
    }

    /// A log of `n` records, with timestamps 1 to `n`.
    fn with(n: u64) -> Self {
        let m = Mem::new();
        for ts in 1..=n {
            m.append(ts);
        }
        m
    }

    /// Append a record whose timestamp is `ts`.
    fn append(&self, ts: u64) {
        let seq = *self.1.borrow();
        #[expect(clippy::cast_possible_truncation, reason = "modulo 2^16")]
        let mut r = LogRecord {
            seq: seq as u16,
            ts_ns: ts,
            tgid: 7,
            sport: 80,
            ..LogRecord::default()
        };
        r.seal = seal(seq, &r);
        let idx = (seq & SLOT_MASK) as usize;
        self.0.borrow_mut()[idx] = r;
        *self.1.borrow_mut() = seq + 1;
    }
}

impl LogView for Mem {
    fn head(&self) -> u64 {
        *self.1.borrow()
    }

    fn slot(&self, seq: u64) -> LogRecord {
        self.0.borrow()[(seq & SLOT_MASK) as usize]
    }
}

fn drain(c: &mut Cursor, m: &Mem) -> (Vec<u64>, u64) {
    let mut got = Vec::new();
    let lost = c.drain(m, |r| got.push(r.ts_ns));
    (got, lost)
}

#[test]
fn records_come_out_once_in_order() {
    let m = Mem::with(10);
    let mut c = Cursor::default();
    assert_eq!(drain(&mut c, &m), ((1..=10).collect(), 0));
    assert_eq!(drain(&mut c, &m), (Vec::new(), 0));
    m.append(11);
    assert_eq!(drain(&mut c, &m), (std::vec![11], 0));
}

#[test]
fn a_lap_behind_loses_exactly_the_overwritten_records() {
    let n = SLOTS_U64 + 5;
    let m = Mem::with(n);
    let mut c = Cursor::default();
    let (got, lost) = drain(&mut c, &m);
    assert_eq!(lost, 5);
    assert_eq!(got.len(), SLOTS);
    assert_eq!(got.first(), Some(&6));
    assert_eq!(got.last(), Some(&n));
}

#[test]
fn a_torn_slot_waits_one_drain_then_counts_as_lost() {
    let m = Mem::with(3);
    let mut c = Cursor::default();
    // Record 1 half written: a word changed after its seal.
    m.0.borrow_mut()[1].daddr[15] ^= 1;
    assert_eq!(
        drain(&mut c, &m),
        (std::vec![1], 0),
        "stops at the torn slot"
    );
    assert_eq!(c.next, 1);
    assert_eq!(drain(&mut c, &m), (std::vec![3], 1), "still torn: lost");
    m.append(4);
    assert_eq!(drain(&mut c, &m), (std::vec![4], 0));
}

#[test]
fn a_slot_finished_by_the_next_drain_is_read() {
    let m = Mem::with(2);
    let mut c = Cursor::default();
    let good = m.slot(1);
    m.0.borrow_mut()[1].seq = 0; // the sequence number not visible yet
    assert_eq!(drain(&mut c, &m), (std::vec![1], 0));
    m.0.borrow_mut()[1] = good;
    assert_eq!(drain(&mut c, &m), (std::vec![2], 0));
}

#[test]
fn a_lap_behind_skips_to_the_oldest_record_left() {
    let m = Mem::with(SLOTS_U64 + 1);
    let mut c = Cursor::default();
    let (got, lost) = drain(&mut c, &m);
    assert_eq!(lost, 1);
    assert_eq!(got.first(), Some(&2));
    assert_eq!(got.last(), Some(&(SLOTS_U64 + 1)));
}

#[test]
fn a_slot_overwritten_under_the_reader_is_lost_not_read() {
    let m = Mem::with(SLOTS_U64);
    let mut c = Cursor::default();
    // The writer is writing record SLOTS into slot 0 (its head not moved
    // on yet) while the reader is still at record 0.
    let head = m.head();
    m.append(0xdead);
    *m.1.borrow_mut() = head;
    let (got, lost) = drain(&mut c, &m);
    assert_eq!(lost, 1);
    assert!(!got.contains(&0xdead));
    assert_eq!(got.first(), Some(&2));
    assert_eq!(got.len(), SLOTS - 1);
}

#[test]
fn the_seal_covers_every_word_and_the_sequence_number() {
    let r = LogRecord {
        seq: 7,
        ts_ns: 0xffff_8880_0102_0304,
        ..LogRecord::default()
    };
    let s = seal(7, &r);
    assert_ne!(s, 0);
    assert_ne!(s, seal(7 + SLOTS_U64, &r));
    for w in 1..=WORDS {
        let mut e = r;
        // SAFETY: as in seal(): eight words, no padding.
        let words: &mut [u64; WORDS + 1] = unsafe { &mut *core::ptr::from_mut(&mut e).cast() };
        words[w] ^= 1;
        assert_ne!(seal(7, &e), s, "word {w}");
    }
    assert_ne!(seal(0, &LogRecord::default()), 0);
    assert!(!LogRecord::default().is(0), "a zeroed slot holds no record");
}

#[test]
fn a_record_becomes_the_state_record_it_stands_for() {
    let r = LogRecord {
        ts_ns: 5,
        tgid: 10,
        tid: 11,
        family: 2,
        sport: 40000,
        dport: 80,
        netns: 4_026_531_840,
        states: pack_states(
            crate::TcpState::FinWait2 as u32,
            crate::TcpState::Close as u32,
        ),
        saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ..LogRecord::default()
    };
    let ev = state_event(&r, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(ev.header.ts_ns, 5);
    assert_eq!(ev.header.netns, 4_026_531_840);
    assert_eq!(ev.addrs.family, crate::AF_INET);
    assert_eq!((ev.owner.tgid, ev.owner.tid), (10, 11));
    assert_eq!(&ev.owner.comm[..4], b"curl");
    assert_eq!(ev.owner_source, crate::OwnerSource::Syscall as u32);
    assert_eq!((ev.addrs.sport, ev.addrs.dport), (40000, 80));
    assert_eq!(ev.addrs.saddr[..4], [127, 0, 0, 1]);
    assert_eq!(
        (ev.old_state, ev.new_state),
        (
            crate::TcpState::FinWait2 as u32,
            crate::TcpState::Close as u32
        )
    );
    assert_eq!(ev.dwell_ns, crate::DWELL_UNKNOWN);
    let unknown = state_event(&LogRecord::default(), [0; 16]);
    assert_eq!(unknown.owner_source, crate::OwnerSource::Unknown as u32);
}
