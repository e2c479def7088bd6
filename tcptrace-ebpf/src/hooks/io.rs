//! `sock_recv_length` / `sock_send_length`: a process's own I/O on a
//! socket, the only reliable owner for accepted sockets (their first
//! transitions run in softirq), and leak mode's first touch and EOF.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    macros::tracepoint,
    programs::{TracePointContext, tracing::StackIdContext},
};
use tcptrace_common::{
    Counter, LeanSock,
    config::{DIRECT_SOCK_LENGTH, SockLengthOffsets},
    table,
    track::{OwnerSource, io_needs_owner_update},
};

use crate::{
    lean_store::{lean_slot, note_comm},
    maps::{LEAN, count},
    netns::{netns_filtered_out, sock_netns},
    owner_cache::{IO_CACHE, IO_GEN, IoSlot, io_slot, lean_owner_replaced, owner_replaced},
    sock_details::details,
    stacks::capture_stack,
    task::current_owner,
    tracepoint::{IO_RECORD, IPPROTO_TCP, Raw, ctx_field},
};

/// The tracepoints' part of the recv/send hooks: the record's protocol,
/// socket and return value, then [`on_tcp_io`] for TCP.
#[inline(always)]
fn on_io(ctx: &TracePointContext, is_recv: bool) -> Result<(), i64> {
    #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid")]
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // (protocol, sk, ret): straight from the context for the standard
    // layout, else from one copy of the record at tracefs's offsets.
    let (protocol, sk, ret) = if config!(direct_ctx) & DIRECT_SOCK_LENGTH != 0 {
        const O: SockLengthOffsets = SockLengthOffsets::STANDARD;
        (
            ctx_field::<u16, { O.protocol as usize }>(ctx),
            ctx_field::<u64, { O.sk as usize }>(ctx),
            ctx_field::<i32, { O.ret as usize }>(ctx),
        )
    } else {
        let o = if is_recv {
            config!(offsets.recv_length)
        } else {
            config!(offsets.send_length)
        };
        let mut buf = [0u8; IO_RECORD];
        let raw = Raw::<IO_RECORD>::fill(ctx, &raw mut buf)?;
        (raw.get(o.protocol)?, raw.get(o.sk)?, raw.get(o.ret)?)
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    on_tcp_io(ctx, tgid, sk, ret, is_recv);
    Ok(())
}

/// Shared body of the recv/send hooks (the tracepoints, and their fexit
/// fallback in [`super::io_fexit`]). They fire on every recv and send of
/// every process, so the common path is kept to a cheap filter and a hit in
/// the per-CPU pair cache, with no stack spill: the helper call comes first
/// and the rare cases (new owner, first touch, first EOF) are a BPF
/// subprogram, [`io_update`], whose registers the common path does not pay
/// for.
#[inline(always)]
pub(super) fn on_tcp_io<C: StackIdContext>(ctx: &C, tgid: u32, sk: u64, ret: i32, is_recv: bool) {
    let i = io_slot(sk);
    // The generation is read before the entry: a change made after this
    // read bumps it past the stamp io_update writes.
    // SAFETY: a read of an aligned global; `i` is below IO_SLOTS.
    let generation = unsafe { core::ptr::read_volatile(&raw const IO_GEN[i].0) };
    // The common path: the same process again on a settled socket, and not
    // an EOF (which has work to do).
    let eof = is_recv && ret == 0;
    if !eof && let Some(slots) = IO_CACHE.get_ptr(0) {
        // SAFETY: this CPU's slots, only this CPU touches them while we
        // run; `i` is below IO_SLOTS.
        let slot = unsafe { &(*slots)[i] };
        if slot.sk == sk && slot.tgid == tgid && slot.generation == generation {
            return;
        }
    }
    io_update(ctx, sk, IoStamp { generation, tgid }, eof);
}

/// What [`on_io`] read before its cache missed: the slot generation and the
/// caller's tgid.
#[derive(Clone, Copy)]
struct IoStamp {
    generation: u64,
    tgid: u32,
}

/// The recv/send hooks' work when the pair cache missed: take the owner,
/// create the details on the owner's first touch, note the first EOF, and
/// cache the settled pair. A BPF subprogram (see [`on_io`]).
#[inline(never)]
fn io_update<C: StackIdContext>(ctx: &C, sk: u64, stamp: IoStamp, eof: bool) {
    let IoStamp { generation, tgid } = stamp;
    // `--netns`: another namespace's socket is settled at once, so that its
    // next I/O stops at the pair cache.
    let settled = if netns_filtered_out(|| sock_netns(sk)) {
        true
    } else if config!(lean_socks) != 0 && config!(sock_details) == 0 {
        io_lean_owner(sk)
    } else {
        io_details(ctx, sk, tgid, eof)
    };
    // The stream keeps its owners in the lean store; leak mode (and the
    // full socket map) in the details.
    if settled && let Some(slots) = IO_CACHE.get_ptr_mut(0) {
        // SAFETY: this CPU's slots, as in on_io.
        unsafe {
            (*slots)[io_slot(sk)] = IoSlot {
                sk,
                generation,
                tgid,
                _pad: 0,
            };
        }
    }
}

/// A recv/send on `sk`, in the lean store: the caller's process takes the
/// socket unless it owns it already ([`LeanSock::io_owner`]), and its
/// thread's comm goes to the comm cache. Returns whether the socket is
/// tracked, and so settled: the pair can be cached.
#[inline(always)]
fn io_lean_owner(sk: u64) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(slot) = lean_slot(sk) {
        // SAFETY: a slot of an array value, valid for this program run.
        let s = unsafe { *slot };
        // A torn slot is left for the socket's next transition to restart.
        if !s.is_intact() {
            return false;
        }
        if let Some((tgid, tid)) = io_take_owner(sk, &s.sock, pid_tgid) {
            let e = LeanSock {
                tgid,
                tid,
                ..s.sock
            };
            // Only the owner and the seal: a transition of the socket racing
            // on another CPU keeps its state and time, and the seal then
            // fails, which its next transition sees (see table_transition).
            // SAFETY: as above.
            unsafe {
                (*slot).sock.tgid = tgid;
                (*slot).sock.tid = tid;
                (*slot).sock.seal = table::seal(sk, &e);
            }
        }
        true
    } else if let Some(p) = LEAN.get_ptr_mut(sk) {
        // SAFETY: lookup result, valid for this program run.
        let e = unsafe { *p };
        if let Some((tgid, tid)) = io_take_owner(sk, &e, pid_tgid) {
            // SAFETY: as above; the owner only, as for a table slot.
            unsafe {
                (*p).tgid = tgid;
                (*p).tid = tid;
            }
        }
        true
    } else {
        false
    }
}

/// The owner to write into lean entry `e` of `sk` for a recv/send by
/// thread `pid_tgid`, if it changes: other CPUs' cached pairs of the
/// previous owner are invalidated and the thread's comm noted. None on the
/// common path, the owner calling again.
#[inline(always)]
fn io_take_owner(sk: u64, e: &LeanSock, pid_tgid: u64) -> Option<(u32, u32)> {
    let (tgid, tid) = e.io_owner(pid_tgid)?;
    lean_owner_replaced(sk, e, tgid);
    note_comm(pid_tgid);
    Some((tgid, tid))
}

/// A recv/send on `sk`, in its details: take the owner, create the details
/// on the owner's first touch, note the first EOF. Returns whether the
/// socket is settled: this process owns it, and its first-touch stack
/// (when asked for) is taken; only an EOF or another process has work to
/// do then.
#[inline(always)]
fn io_details<C: StackIdContext>(ctx: &C, sk: u64, tgid: u32, eof: bool) -> bool {
    // The owner's first touch creates the details, filled in below.
    let Some(info) = details(sk, config!(sock_details) != 0) else {
        return false;
    };
    // SAFETY: lookup result, valid for this program run; updated in place.
    let info = unsafe { &mut *info };
    if io_needs_owner_update(info, tgid) {
        owner_replaced(sk, (info.owner_source, info.owner.tgid), tgid);
        info.owner = current_owner();
        info.owner_source = OwnerSource::Io as u32;
        // SAFETY: no preconditions.
        info.cgroup = unsafe { bpf_get_current_cgroup_id() };
    }
    let capture = config!(capture_stacks) != 0;
    if capture && !info.first_stack.is_some() {
        info.first_stack = capture_stack(ctx, tgid);
    }
    if eof && info.eof_ns == 0 {
        // SAFETY: no preconditions.
        info.eof_ns = unsafe { bpf_ktime_get_ns() };
        if capture {
            info.eof_stack = capture_stack(ctx, tgid);
        }
    }
    !capture || info.first_stack.is_some()
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    if on_io(&ctx, true).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    if on_io(&ctx, false).is_err() {
        count(Counter::ReadErrors);
    }
    0
}
