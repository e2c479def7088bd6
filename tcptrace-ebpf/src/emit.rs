//! Sending records to userspace: state records through this CPU's ring in
//! `STATE_RINGS` or its log in `CPU_LOG`, the other records through
//! `EVENTS`, with the reader's wakeups batched.

use aya_ebpf::{
    btf_maps::{ArrayOfMaps, RingBuf as CpuRing},
    helpers::generated::bpf_get_smp_processor_id,
    macros::{btf_map, map},
    maps::Array,
};
use tcptrace_common::{Addrs, Counter, Header, Owner, StateLine, cpulog};

use crate::maps::{BPF_F_MMAPABLE, EVENTS, count};

/// One [`cpulog::CpuLog`] per possible CPU for the modes that log state
/// records instead of sending them through `EVENTS` (`--timewait`);
/// userspace sizes it, one entry in the other modes, and reads it through a
/// shared mapping.
#[map]
static CPU_LOG: Array<cpulog::CpuLog> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// One ring buffer per possible CPU for the stream's state records, which
/// a CPU writes only to its own ring: no ring lock, producer position or
/// record line shared with another CPU's transitions, as one ring for all
/// CPUs would have. Userspace sizes the outer array to the possible CPUs
/// and creates the rings, of any size (the kernel does not compare an inner
/// ring's size with this one-page template), before it attaches the
/// programs; it drains them on a timer and merges them by time.
#[btf_map]
pub(crate) static STATE_RINGS: ArrayOfMaps<CpuRing<StateLine, 4096>, 1> = ArrayOfMaps::new();

/// `bpf_ringbuf_submit` flags: `BPF_RB_NO_WAKEUP`, `BPF_RB_FORCE_WAKEUP`,
/// and the `bpf_ringbuf_query` item `BPF_RB_AVAIL_DATA`.
pub(crate) const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Emit an IPv4 transition, stamped with `header`, as a [`StateLine`]: one
/// cache line of `ring`.
#[inline(always)]
pub(crate) fn emit_line(
    ring: &CpuRing<StateLine, 4096>,
    header: Header,
    skaddr: u64,
    dwell_ns: u64,
    owner: &Owner,
    owner_source: u32,
    transition: (u32, u32),
    a: &Addrs,
) {
    let Some(mut slot) = ring.reserve(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot
    // of the right size; every field is written before submit.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "states are 1..=12, owner sources 0..=3"
    )]
    unsafe {
        (*ev).header = header;
        (*ev).skaddr = skaddr;
        (*ev).dwell_ns = dwell_ns;
        (*ev).tgid = owner.tgid;
        (*ev).tid = owner.tid;
        (*ev).sport = a.sport;
        (*ev).dport = a.dport;
        (*ev).saddr = [a.saddr[0], a.saddr[1], a.saddr[2], a.saddr[3]];
        (*ev).daddr = [a.daddr[0], a.daddr[1], a.daddr[2], a.daddr[3]];
        (*ev).old_state = transition.0 as u8;
        (*ev).new_state = transition.1 as u8;
        (*ev).owner_source = owner_source as u8;
        (*ev)._pad = 0;
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    count(Counter::StateEvents);
}

/// Append a record of `old -> new` at `now` to this CPU's log
/// ([`cpulog`]): its next slot, one cache line, stamped with the sequence
/// number and sealed, then the head moves on. No lock and no line shared
/// with another CPU but the reader's; no comm (userspace joins it from the
/// comm cache).
#[inline(always)]
pub(crate) fn log_state(now: u64, owner: &Owner, old: u32, new: u32, a: Addrs, netns: u32) {
    // SAFETY: a helper with no arguments and no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(log) = CPU_LOG.get_ptr_mut(cpu) else {
        // More CPUs than userspace sized the log for: cannot happen with
        // the possible-CPU count, counted like a full ring if it does.
        count(Counter::RingbufFull);
        return;
    };
    // SAFETY: this CPU's log, an array value valid for this program run and
    // written by no other program while this one runs; the slot index is
    // masked within the slots.
    unsafe {
        let seq = (*log).head;
        let r = &raw mut (*log).slots[(seq & cpulog::SLOT_MASK) as usize];
        #[expect(
            clippy::cast_possible_truncation,
            reason = "modulo 2^16; AF_INET and AF_INET6 fit a byte"
        )]
        {
            (*r).seq = seq as u16;
            (*r).family = a.family as u8;
        }
        (*r).states = cpulog::pack_states(old, new);
        (*r).ts_ns = now;
        (*r).tgid = owner.tgid;
        (*r).tid = owner.tid;
        (*r).netns = netns;
        (*r).sport = a.sport;
        (*r).dport = a.dport;
        (*r).saddr = a.saddr;
        (*r).daddr = a.daddr;
        (*r).seal = cpulog::seal(seq, &*r);
        core::ptr::write_volatile(&raw mut (*log).head, seq + 1);
    }
    count(Counter::StateEvents);
}

/// Batch the reader's wakeups (`Config::wakeup_bytes`): each one costs an
/// irq_work, so the records of `wakeup_bytes` share one.
#[inline(always)]
pub(crate) fn submit_flags() -> u64 {
    let threshold = config!(wakeup_bytes);
    if threshold == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA) >= u64::from(threshold) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
pub(crate) fn emit<T: 'static>(ev: T, counter: Counter, flags: u64) {
    match EVENTS.reserve::<T>(0) {
        Some(mut slot) => {
            slot.write(ev);
            slot.submit(flags);
            count(counter);
        }
        None => count(Counter::RingbufFull),
    }
}
