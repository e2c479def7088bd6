//! The per-CPU record log (`CPU_LOG`): state records that userspace reads in
//! batches through a shared mapping, each CPU writing its own log.
//! Mechanism: docs/internals.md, "The per-CPU record log".

use crate::{Addrs, StateEvent};

/// Slots in each CPU's log (a power of two): 4096 records of one cache
/// line, 256 KiB per CPU. Drained every 50 ms, one CPU can log 80 000
/// records a second before any is lost.
pub const SLOTS: usize = 4096;
/// [`SLOTS`] as a sequence-number distance.
pub const SLOTS_U64: u64 = SLOTS as u64;
/// Mask from a sequence number to its slot.
pub const SLOT_MASK: u64 = SLOTS_U64 - 1;
const _: () = assert!(SLOTS.is_power_of_two());

/// One record in a CPU's log: a state change without its dwell, its
/// socket's address or its owner's comm, in one cache line. Writing a
/// record costs the kernel about a line moved between CPUs (the writer's
/// and the reader's) per line, so a record of one line costs half the
/// ring buffer's 112-byte [`StateEvent`] (docs/benchmarks.md). Userspace
/// joins the comm from the comm cache ([`crate::comms`]).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's sequence number in its CPU's log, modulo 2^16: the
    /// seal covers the whole number, so a slot rewritten 2^16 records
    /// later still fails [`LogRecord::is`].
    pub seq: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// The old state in the high four bits, the new one in the low four
    /// ([`LogRecord::old_state`], [`LogRecord::new_state`]).
    pub states: u8,
    /// [`seal`] of the record; never 0, so that a zeroed slot fails.
    pub seal: u32,
    /// `bpf_ktime_get_ns()` of the transition.
    pub ts_ns: u64,
    /// The owner the socket's entry names (0: unknown).
    pub tgid: u32,
    pub tid: u32,
    /// The socket's network namespace inode, as in [`crate::Header`].
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<LogRecord>() == 64);

/// Words of a [`LogRecord`] after `seq` and `seal`.
const WORDS: usize = 7;

/// One CPU's log: the number of records it ever took, then the slots.
#[repr(C, align(64))]
pub struct CpuLog {
    /// Sequence number of the next record; the records before it are
    /// `head - SLOTS..head` (those that are not overwritten yet).
    pub head: u64,
    pub _pad: [u64; 7],
    pub slots: [LogRecord; SLOTS],
}

const _: () = assert!(core::mem::size_of::<CpuLog>() == 64 + SLOTS * 64);

/// Fibonacci hashing's multiplier (2^64 / golden ratio, odd).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The seal of record `r` with sequence number `seq`: every word after the
/// seal, each rotated by its own amount (so that swapped words change it),
/// folded and mixed. A slot whose words come from two records fails it.
#[inline(always)]
#[must_use]
pub fn seal(seq: u64, r: &LogRecord) -> u32 {
    // SAFETY: LogRecord is repr(C), 64-byte aligned, eight words long with
    // no padding (seq and seal fill the first), so every byte is
    // initialised.
    let words: &[u64; WORDS + 1] = unsafe { &*core::ptr::from_ref(r).cast() };
    // The first word's family and states, which share it with the seal.
    let mut x = seq ^ (u64::from(r.family) << 48) ^ (u64::from(r.states) << 56);
    let mut i = 1;
    while i <= WORDS {
        #[expect(clippy::cast_possible_truncation, reason = "i <= 7")]
        let rot = (i as u32) * 9;
        x ^= words[i].rotate_left(rot);
        i += 1;
    }
    let h = ((x ^ (x >> 29)).wrapping_mul(GOLDEN) >> 32) as u32;
    h | 1
}

/// [`LogRecord::states`] of `old -> new` (TCP states are 1..=12).
#[inline(always)]
#[must_use]
#[expect(clippy::cast_possible_truncation, reason = "states are 1..=12")]
pub const fn pack_states(old: u32, new: u32) -> u8 {
    (((old & 15) << 4) | (new & 15)) as u8
}

impl LogRecord {
    #[must_use]
    pub const fn old_state(&self) -> u32 {
        (self.states >> 4) as u32
    }

    #[must_use]
    pub const fn new_state(&self) -> u32 {
        (self.states & 15) as u32
    }

    /// The endpoints, as a state record carries them.
    #[must_use]
    pub fn addrs(&self) -> Addrs {
        Addrs {
            family: u16::from(self.family),
            sport: self.sport,
            dport: self.dport,
            _pad: 0,
            saddr: self.saddr,
            daddr: self.daddr,
        }
    }

    /// Whether this slot holds record `seq`, intact.
    #[inline(always)]
    #[must_use]
    pub fn is(&self, seq: u64) -> bool {
        #[expect(clippy::cast_possible_truncation, reason = "stored modulo 2^16")]
        let low = seq as u16;
        self.seq == low && self.seal == seal(seq, self)
    }
}

/// A state record for the rest of userspace: `r` with `comm` as its
/// owner's (zeros: unknown), its dwell unknown.
#[must_use]
pub fn state_event(r: &LogRecord, comm: [u8; 16]) -> StateEvent {
    StateEvent {
        header: crate::Header {
            kind: crate::RecordKind::State as u32,
            netns: r.netns,
            ts_ns: r.ts_ns,
        },
        skaddr: 0,
        dwell_ns: crate::DWELL_UNKNOWN,
        owner: crate::Owner {
            tgid: r.tgid,
            tid: r.tid,
            comm,
        },
        addrs: r.addrs(),
        old_state: r.old_state(),
        new_state: r.new_state(),
        owner_source: if r.tgid == 0 {
            crate::OwnerSource::Unknown as u32
        } else {
            crate::OwnerSource::Syscall as u32
        },
        _pad: 0,
    }
}

/// A reader's place in one CPU's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Sequence number of the next record to read.
    pub next: u64,
    /// The slot a drain stopped at because it failed its check while the
    /// writer was within reach of it; a second drain that stops there
    /// counts it lost.
    stalled: Option<u64>,
}

/// What a reader sees of one CPU's log.
pub trait LogView {
    /// The log's `head`, read afresh.
    fn head(&self) -> u64;
    /// A copy of the slot of sequence number `seq`.
    fn slot(&self, seq: u64) -> LogRecord;
}

impl Cursor {
    /// Hand every record logged since the last drain to `take`, oldest
    /// first; returns how many were lost (overwritten before they were
    /// read, or never intact).
    pub fn drain(&mut self, log: &impl LogView, mut take: impl FnMut(&LogRecord)) -> u64 {
        let head = log.head();
        let mut lost = 0;
        let mut i = self.next;
        if head < i {
            // Only a new log starts below its reader: begin again.
            i = 0;
            self.stalled = None;
        }
        if head - i > SLOTS_U64 {
            lost += head - i - SLOTS_U64;
            i = head - SLOTS_U64;
        }
        while i < head {
            let s = log.slot(i);
            if s.is(i) {
                take(&s);
                i += 1;
                continue;
            }
            // The writer reaches slot i again at record i + SLOTS (a
            // difference: a scribbled head near u64::MAX must not overflow).
            if log.head().saturating_sub(i) >= SLOTS_U64 || self.stalled == Some(i) {
                lost += 1;
                i += 1;
                continue;
            }
            // Still being written: the next drain reads it.
            self.stalled = Some(i);
            break;
        }
        if self.stalled.is_some_and(|s| s < i) {
            self.stalled = None;
        }
        self.next = i;
        lost
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests;
