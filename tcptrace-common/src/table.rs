//! The lean socket table (`LEAN_TABLE`): two-slot buckets in a plain BPF
//! array, indexed by a hash of the socket's address, each slot sealed.
//! Mechanism: docs/internals.md, "The lean socket table".

use crate::{LeanSock, TcpState};

/// Slots per bucket: two 32-byte slots fill one cache line.
pub const SLOTS_U32: u32 = 2;
pub const SLOTS: usize = SLOTS_U32 as usize;

/// One socket in the table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeanSlot {
    /// The socket's `struct sock` address; 0: free.
    pub skaddr: u64,
    /// Its entry. `LeanSock::seal` is [`seal`] over the slot.
    pub sock: LeanSock,
}

const _: () = assert!(core::mem::size_of::<LeanSlot>() == 32);

/// One value of the `LEAN_TABLE` array.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeanBucket {
    pub slots: [LeanSlot; SLOTS],
}

const _: () = assert!(core::mem::size_of::<LeanBucket>() == 64);

/// Fibonacci hashing's multiplier (2^64 / golden ratio, odd).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The bucket of `skaddr` in a table of `mask + 1` buckets (a power of two).
/// Socket addresses are slab objects a few KiB apart; the product's upper
/// half mixes all of their bits.
#[inline(always)]
#[must_use]
pub const fn bucket_of(skaddr: u64, mask: u32) -> u32 {
    let h = (skaddr.wrapping_mul(GOLDEN) >> 32) as u32;
    h & mask
}

/// The seal of a slot holding `skaddr` and `e` (whose own `seal` is
/// ignored): never 0, so that a zeroed slot is never intact.
#[inline(always)]
#[must_use]
pub const fn seal(skaddr: u64, e: &LeanSock) -> u32 {
    let x = skaddr
        ^ e.entered_ns.rotate_left(29)
        ^ ((e.state as u64) | ((e.tgid as u64) << 8) | ((e.tid as u64) << 40));
    let h = (x.wrapping_mul(GOLDEN) >> 32) as u32;
    h | 1
}

impl LeanSlot {
    /// Whether the slot holds a socket and its fields were written together.
    #[inline(always)]
    #[must_use]
    pub const fn is_intact(&self) -> bool {
        self.skaddr != 0 && self.sock.seal == seal(self.skaddr, &self.sock)
    }
}

/// Buckets for a table of about `slots` slots: a power of two, at least one.
#[must_use]
pub const fn buckets_for(slots: u32) -> u32 {
    let b = slots / SLOTS_U32;
    if b <= 1 {
        1
    } else if b.is_power_of_two() {
        b
    } else {
        // The largest power of two below b.
        1 << b.ilog2()
    }
}

/// How `--max-sockets` is split between the table and the `LEAN` map: the
/// table takes the largest power of two of slots up to half, the map the
/// rest, so that the two together hold exactly `max_sockets`. The map takes
/// the sockets whose bucket is full (with half the capacity in the table,
/// about a third of them when the table is full) and keeps its LRU eviction.
/// Returns `(buckets, map entries)`.
#[must_use]
pub const fn split(max_sockets: u32) -> (u32, u32) {
    let buckets = buckets_for(max_sockets / 2);
    let table_slots = buckets * SLOTS_U32;
    (buckets, max_sockets - table_slots)
}

/// Whether `old -> new` creates the socket it is about: a child cloned from
/// its listener, which no map can know yet.
#[inline(always)]
#[must_use]
pub const fn is_birth(old: u32, new: u32) -> bool {
    old == TcpState::Listen as u32 && new == TcpState::SynRecv as u32
}

/// Live and CLOSE_WAIT sockets among intact slots, for userspace's count.
#[must_use]
pub fn count_states(buckets: &[LeanBucket]) -> (u64, u64) {
    let mut live = 0;
    let mut close_wait = 0;
    for s in buckets.iter().flat_map(|b| &b.slots) {
        if s.is_intact() {
            live += 1;
            if s.sock.state == TcpState::CloseWait as u32 {
                close_wait += 1;
            }
        }
    }
    (live, close_wait)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    fn sock(state: TcpState, tgid: u32, entered_ns: u64) -> LeanSock {
        LeanSock {
            state: state as u32,
            tgid,
            tid: tgid + 1,
            seal: 0,
            entered_ns,
        }
    }

    fn sealed(skaddr: u64, mut e: LeanSock) -> LeanSlot {
        e.seal = seal(skaddr, &e);
        LeanSlot { skaddr, sock: e }
    }

    #[test]
    fn a_sealed_slot_is_intact_and_a_free_one_is_not() {
        let s = sealed(0xffff_8880_1234_5600, sock(TcpState::Established, 7, 1_000));
        assert!(s.is_intact());
        assert!(!LeanSlot::default().is_intact());
        let mut e = sock(TcpState::Established, 7, 1_000);
        e.seal = 0;
        assert!(
            !LeanSlot { skaddr: 0, sock: e }.is_intact(),
            "key 0 is a free slot"
        );
    }

    /// Two claims of one slot interleaved field by field: whatever mix of
    /// the two writers' fields is left, either it is one writer's whole
    /// slot, or it fails its seal.
    #[test]
    fn a_slot_mixed_from_two_writers_fails_its_seal() {
        let a = sealed(0xffff_8880_0a00_1200, sock(TcpState::SynRecv, 0, 5_000_123));
        let b = sealed(
            0xffff_8880_0b00_3400,
            sock(TcpState::SynSent, 42, 5_000_456),
        );
        // Fields: key, state, tgid, tid, seal, entered; each from a or b.
        for mask in 0u32..64 {
            let pick = |bit: u32| mask & (1 << bit) != 0;
            let s = LeanSlot {
                skaddr: if pick(0) { b.skaddr } else { a.skaddr },
                sock: LeanSock {
                    state: if pick(1) { b.sock.state } else { a.sock.state },
                    tgid: if pick(2) { b.sock.tgid } else { a.sock.tgid },
                    tid: if pick(3) { b.sock.tid } else { a.sock.tid },
                    seal: if pick(4) { b.sock.seal } else { a.sock.seal },
                    entered_ns: if pick(5) {
                        b.sock.entered_ns
                    } else {
                        a.sock.entered_ns
                    },
                },
            };
            let whole = s == a || s == b;
            assert_eq!(s.is_intact(), whole, "mask {mask:06b}: {s:?}");
        }
    }

    #[test]
    fn a_changed_field_breaks_the_seal() {
        let s = sealed(0xffff_8880_1234_5600, sock(TcpState::CloseWait, 9, 77));
        let mut t = s;
        t.sock.entered_ns += 1;
        assert!(!t.is_intact());
        let mut t = s;
        t.sock.state = TcpState::LastAck as u32;
        assert!(!t.is_intact());
        let mut t = s;
        t.skaddr += 64;
        assert!(!t.is_intact());
    }

    /// Slab addresses (here 2304-byte TCP sockets, 13 to a 32 KiB slab)
    /// spread over the buckets.
    #[test]
    fn slab_addresses_spread_over_the_buckets() {
        let mask = 1023;
        let mut used = HashSet::new();
        for slab in 0..80u64 {
            for obj in 0..13u64 {
                let addr = 0xffff_8881_0000_0000 + slab * 0x8000 + obj * 2304;
                let b = bucket_of(addr, mask);
                assert!(b <= mask);
                used.insert(b);
            }
        }
        // 1040 addresses into 1024 buckets: a random spread leaves about
        // 1 - 1/e of the buckets used (647); a bad hash far fewer.
        assert!(used.len() > 600, "{} buckets used", used.len());
    }

    #[test]
    fn max_sockets_splits_into_table_and_map_exactly() {
        assert_eq!(split(131_072), (32_768, 65_536));
        assert_eq!(split(1024), (256, 512));
        let (b, m) = split(3000);
        assert_eq!((b, m), (512, 1976));
        for n in [1024, 1025, 3000, 100_000, 131_072, 262_144, 16_777_216] {
            let (b, m) = split(n);
            assert!(b.is_power_of_two(), "{n}");
            assert_eq!(b * SLOTS_U32 + m, n);
            assert!(m >= n / 2, "{n}: the map keeps at least half");
        }
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(3), 1);
        assert_eq!(buckets_for(4), 2);
    }

    #[test]
    fn only_a_listeners_child_is_born() {
        assert!(is_birth(TcpState::Listen as u32, TcpState::SynRecv as u32));
        assert!(!is_birth(TcpState::Close as u32, TcpState::SynSent as u32));
        assert!(!is_birth(TcpState::Listen as u32, TcpState::Close as u32));
    }

    #[test]
    fn counts_intact_slots_and_close_wait() {
        let mut t = [LeanBucket::default(); 2];
        t[0].slots[0] = sealed(0x1000, sock(TcpState::CloseWait, 1, 10));
        t[0].slots[1] = sealed(0x2000, sock(TcpState::Established, 1, 10));
        t[1].slots[0] = sealed(0x3000, sock(TcpState::CloseWait, 1, 10));
        t[1].slots[0].sock.entered_ns = 11; // torn: not counted
        assert_eq!(count_states(&t), (2, 1));
    }
}
