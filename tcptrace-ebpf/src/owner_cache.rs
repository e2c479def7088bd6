//! The recv/send hooks' per-CPU cache of settled (socket, process) pairs,
//! `IO_CACHE`, and the per-slot generations in `IO_GEN` that invalidate
//! its pairs when a socket's entry goes or its owner changes.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use tcptrace_common::{LeanSock, track::OwnerSource};

/// A (socket, process) pair whose socket entry needs nothing from that
/// process's recv/send: its owner is that process and its first-touch stack
/// is taken. Valid while its slot's [`IO_GEN`] equals `generation`.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct IoSlot {
    pub(crate) sk: u64,
    pub(crate) generation: u64,
    pub(crate) tgid: u32,
    pub(crate) _pad: u32,
}

/// Slots per CPU, direct-mapped by socket address.
const IO_SLOTS: usize = 64;

/// Per-CPU cache of settled pairs in front of the `SOCKS` lookup in the
/// recv/send hooks, which run on every recv and send of every process:
/// keep-alive traffic finds its pair here and does no hash lookup.
#[map]
pub(crate) static IO_CACHE: PerCpuArray<[IoSlot; IO_SLOTS]> = PerCpuArray::with_max_entries(1, 0);

/// One generation per slot index, shared by all CPUs. Bumped when a cached
/// pair in that slot may have gone stale on any CPU: a socket's entry
/// removed (its address may come back as another socket) or a known owner
/// replaced (by another process's I/O, close or shutdown). Per slot, so
/// that the sockets a busy host closes every second invalidate 1/64 of the
/// cache each, not all of it. Not bumped on an LRU eviction: an evicted
/// socket's pair skips nothing that the missing entry would not. A plain
/// increment: two CPUs racing may lose one, but the value still moves past
/// every stamp taken before either change.
#[unsafe(no_mangle)]
pub(crate) static mut IO_GEN: [Generation; IO_SLOTS] = [Generation(0); IO_SLOTS];

/// One generation per cache line: a socket closed on one CPU does not slow
/// the recv of an unrelated socket on another.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Generation(pub(crate) u64);

#[inline(always)]
pub(crate) fn bump_io_generation(i: usize) {
    // SAFETY: an aligned global, `i` below IO_SLOTS (from io_slot); see
    // IO_GEN for why a racy increment is enough.
    unsafe {
        let g = core::ptr::read_volatile(&raw const IO_GEN[i].0);
        core::ptr::write_volatile(&raw mut IO_GEN[i].0, g.wrapping_add(1));
    }
}

/// A socket's owner went from `before` (source, tgid) to `tgid`: another
/// CPU may hold a pair for the previous owner, which must no longer skip
/// that owner's recv/send (it would take the socket back). None can exist
/// while the owner is unknown: pairs are only stamped for the owner.
#[inline(always)]
pub(crate) fn owner_replaced(sk: u64, before: (u32, u32), tgid: u32) {
    let (source, previous) = before;
    if config!(io_hooks) != 0 && source != OwnerSource::Unknown as u32 && previous != tgid {
        bump_io_generation(io_slot(sk));
    }
}

/// [`owner_replaced`] for a lean entry whose owner was `before`.
#[inline(always)]
pub(crate) fn lean_owner_replaced(sk: u64, before: &LeanSock, tgid: u32) {
    let (previous, _, source) = before.owner();
    owner_replaced(sk, (source as u32, previous), tgid);
}

/// The cache slot of a socket: `struct sock`s are slab objects over a
/// kilobyte apart, so the bits above the low ten spread them.
#[inline(always)]
pub(crate) fn io_slot(sk: u64) -> usize {
    #[expect(clippy::cast_possible_truncation, reason = "masked to IO_SLOTS")]
    let i = ((sk >> 10) ^ (sk >> 16)) as usize;
    // SAFETY: a read of a local; volatile so that LLVM keeps the mask the
    // verifier needs to bound the index.
    unsafe { core::ptr::read_volatile(&raw const i) & (IO_SLOTS - 1) }
}
