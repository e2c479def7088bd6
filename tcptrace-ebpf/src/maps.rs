//! The maps that several modules share: the reset and failure ring, the
//! socket stores, the comm cache, the slot new entries are built in, and the
//! counters. A map that one module alone uses lives in that module.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use tcptrace_common::{
    Counter, LeanSock, NUM_COUNTERS, SockInfo,
    comms::{self, CommSlot},
    table::LeanBucket,
};

/// `BPF_F_MMAPABLE`: an array userspace can mmap.
pub(crate) const BPF_F_MMAPABLE: u32 = 1 << 10;
/// `BPF_NOEXIST`: insert only if the key is absent.
pub(crate) const BPF_NOEXIST: u64 = 1;

/// Reset and failure records, and the modes' other records. Userspace
/// sizes it before load.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Live TCP sockets keyed by `struct sock` address. LRU so that a flood of
/// sockets evicts the oldest instead of failing inserts; evictions are derived
/// by userspace as inserts - deletes - live entries. Userspace sets the size
/// at load (`--max-sockets`, default 131072); this one is only the object's.
#[map]
pub(crate) static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65_536, 0);

/// The lean alternative to `SOCKS` (`Config::lean_socks`), first part: a
/// table of two-slot buckets indexed by a hash of the socket's address
/// (`tcptrace_common::table`). Mappable, so that userspace counts its
/// sockets without a system call per slot.
#[map]
pub(crate) static LEAN_TABLE: Array<LeanBucket> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The lean alternative's second part: sockets whose bucket was full, 24
/// bytes each, LRU like `SOCKS`. Userspace sizes the socket store not in use
/// down to almost nothing.
#[map]
pub(crate) static LEAN: LruHashMap<u64, LeanSock> = LruHashMap::with_max_entries(65_536, 0);

/// The comm cache (`tcptrace_common::comms`): the comms of the threads
/// whose owner transitions `Config::noted_new_states` asks for, by thread
/// id. The lean store keeps pid and tid only; userspace looks the owner of
/// a logged record ([`tcptrace_common::cpulog`]) up here, through a shared
/// mapping. It sizes the cache down to one slot when the mode names nobody.
#[map]
pub(crate) static COMMS: Array<CommSlot> = Array::with_max_entries(comms::SLOTS, BPF_F_MMAPABLE);

/// Where a new socket's entry is built before its insert (per CPU: the
/// 512-byte BPF stack has no room for it).
#[map]
pub(crate) static NEW_SOCK: PerCpuArray<SockInfo> = PerCpuArray::with_max_entries(1, 0);

/// Event and loss counters, one slot per [`Counter`].
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[inline(always)]
pub(crate) fn count(c: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}
