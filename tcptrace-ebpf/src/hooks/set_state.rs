//! `inet_sock_set_state`: every TCP state change. The generic program and
//! its variants update the socket store, count the transition, time the
//! dwell in the old state, and log or send the mode's records.

use aya_ebpf::{
    helpers::generated::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tcptrace_common::{
    AF_INET, Counter, DWELL_UNKNOWN, Header, HistBy, HistKey, PaddedStateEvent, RecordKind,
    TcpState, config::DIRECT_SET_STATE, hist, track::starts_life,
};

use crate::{
    config::{Fixed, Generic, Variant, accepts},
    emit::{BPF_RB_NO_WAKEUP, STATE_RINGS, emit_line, log_state},
    full_store::full_transition,
    hist::{HIST_STATE, TRANSITIONS, hist_add},
    lean_store::lean_transition,
    maps::count,
    netns::sock_netns,
    sock_details::{detail_transition, forget_earlier_socket},
    tracepoint::{
        CopiedSetState, DirectSetState, IPPROTO_TCP, RECORD, Raw, SetStateHead, SetStateRecord,
    },
};

/// The `inet_sock_set_state` program `$name`, of variant `$v`. Its name
/// must be the one userspace attaches for that variant: checked at compile
/// time. The body is inlined into the program's entry: as a subprogram of
/// its own (LLVM's choice for the generic one) its caller's empty frame
/// would still count 32 bytes towards the 512-byte limit of kernels
/// without private stacks (before 6.13).
macro_rules! set_state_program {
    ($name:ident, $v:ty) => {
        #[tracepoint]
        #[inline(always)]
        pub fn $name(ctx: TracePointContext) -> u32 {
            const _: () = assert!(tcptrace_common::config::const_str_eq(
                <$v as Variant>::NAME,
                stringify!($name),
            ));
            if try_set_state::<$v>(&ctx).is_err() {
                count(Counter::ReadErrors);
            }
            0
        }
    };
}

set_state_program!(inet_sock_set_state, Generic);
set_state_program!(inet_sock_set_state_stream, Fixed<0>);
set_state_program!(inet_sock_set_state_hist, Fixed<1>);
set_state_program!(inet_sock_set_state_timewait, Fixed<2>);
set_state_program!(inet_sock_set_state_leaks, Fixed<3>);
set_state_program!(inet_sock_set_state_combined, Fixed<4>);

#[inline(always)]
fn try_set_state<V: Variant>(ctx: &TracePointContext) -> Result<(), i64> {
    // CONFIG is read-only and frozen, so the verifier knows this branch's
    // outcome and drops the other path.
    if config!(direct_ctx) & DIRECT_SET_STATE != 0 {
        set_state::<V>(ctx, &DirectSetState(ctx))
    } else {
        let rec = CopiedSetState {
            raw: Raw::<RECORD>::load(ctx)?,
            o: config!(offsets.set_state),
        };
        set_state::<V>(ctx, &rec)
    }
}

/// One transition: the filters, the clock where the mode needs it, the
/// socket store, the transition counter and histograms, then the mode's
/// record. The counters and the record are written here, not in functions
/// of their own: moving them out changes the code LLVM generates, and can
/// take the generic program over the 512-byte BPF stack.
#[inline(always)]
fn set_state<V: Variant>(ctx: &TracePointContext, rec: &impl SetStateRecord) -> Result<(), i64> {
    let h = rec.head()?;
    // Cheap filters first: protocol, family, ports.
    if h.protocol != IPPROTO_TCP || !accepts(h.family, h.sport, h.dport) {
        return Ok(());
    }
    let SetStateHead {
        skaddr,
        old,
        new,
        sport,
        dport,
        ..
    } = h;
    // `--netns`: the namespace is read first only when it filters; else
    // where a record or a histogram key needs it.
    let only = config!(netns_filter);
    let known_ns = if only == 0 { 0 } else { sock_netns(skaddr) };
    if known_ns != only {
        return Ok(());
    }
    let netns = || {
        if known_ns != 0 {
            known_ns
        } else {
            sock_netns(skaddr)
        }
    };
    // The clock only where the mode times a dwell or emits or logs a record
    // (the mask bounds the shifts; states are 1..=12).
    let emit_old = setting!(V, emit_old_states);
    let log_old = setting!(V, log_old_states);
    let timed = setting!(V, timed_states);
    let now = if timed & ((1 << (old & 31)) | (1 << (new & 31))) != 0
        || (emit_old | log_old) & (1 << (old & 31)) != 0
    {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    let (dwell_ns, owner, owner_source) = if setting!(V, lean_socks) != 0 {
        lean_transition::<V>(skaddr, old, new, now)
    } else {
        full_transition(ctx, rec, &h, now)?
    };
    if setting!(V, sock_details) != 0 {
        if starts_life(old, new) {
            forget_earlier_socket(skaddr);
        } else if old == TcpState::CloseWait as u32 || new == TcpState::CloseWait as u32 {
            detail_transition(rec, &h, now, netns())?;
        }
    }

    if let Some(slot) = TRANSITIONS.get_ptr_mut((old & 15) * 16 + (new & 15)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
    let by = setting!(V, hist_by);
    if by == HistBy::State as u32 && dwell_ns != DWELL_UNKNOWN {
        if let Some(row) = HIST_STATE.get_ptr_mut(old & 15) {
            // The mask bounds the index for the verifier (slots stop at 495,
            // below the minimum's and maximum's indices). The volatile read
            // keeps LLVM, which knows the bound, from dropping the mask.
            let slot = hist::slot(dwell_ns) as usize;
            // SAFETY: a read of a local.
            let s = unsafe { core::ptr::read_volatile(&raw const slot) } & (hist::ROW - 1);
            // SAFETY: a per-CPU row, only this CPU writes it while we run;
            // every index is within the row.
            unsafe {
                if s < hist::ROW_MIN_INV {
                    (*row)[s] += 1;
                }
                if (*row)[hist::ROW_MAX] < dwell_ns {
                    (*row)[hist::ROW_MAX] = dwell_ns;
                }
                if (*row)[hist::ROW_MIN_INV] < !dwell_ns {
                    (*row)[hist::ROW_MIN_INV] = !dwell_ns;
                }
            }
        }
        let long = config!(long_dwell_ns);
        if long != 0 && dwell_ns >= long {
            count(Counter::LongDwells);
        }
    } else if by != HistBy::Off as u32 && dwell_ns != DWELL_UNKNOWN {
        let mut key = HistKey {
            state: old,
            slot: hist::slot(dwell_ns),
            group: [0; 16],
        };
        if by == HistBy::LocalPort as u32 {
            key.group[..2].copy_from_slice(&sport.to_ne_bytes());
        } else if by == HistBy::RemotePort as u32 {
            key.group[..2].copy_from_slice(&dport.to_ne_bytes());
        } else if by == HistBy::RemoteAddr as u32 {
            key.group = rec.addrs(&h)?.daddr;
        } else if by == HistBy::Comm as u32 {
            key.group = owner.comm;
        } else if by == HistBy::Netns as u32 {
            key.group[..4].copy_from_slice(&netns().to_ne_bytes());
        }
        hist_add(&key, dwell_ns);
    }

    if old >= 32 {
        return Ok(());
    }
    if log_old & (1 << old) != 0 {
        log_state(now, &owner, old, new, rec.addrs(&h)?, netns());
    }
    if emit_old & (1 << old) == 0 {
        return Ok(());
    }
    let addrs = rec.addrs(&h)?;
    // SAFETY: a helper with no arguments and no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(ring) = STATE_RINGS.get(cpu) else {
        // No ring for this CPU: cannot happen with the possible-CPU count.
        count(Counter::RingbufFull);
        return Ok(());
    };
    let ns = netns();
    let stamp = |kind: RecordKind| Header {
        kind: kind as u32,
        netns: ns,
        ts_ns: now,
    };
    if addrs.family == AF_INET {
        emit_line(
            ring,
            stamp(RecordKind::StateLine),
            skaddr,
            dwell_ns,
            &owner,
            owner_source,
            (old, new),
            &addrs,
        );
        return Ok(());
    }
    let Some(mut slot) = ring.reserve_untyped::<PaddedStateEvent>(0) else {
        count(Counter::RingbufFull);
        return Ok(());
    };
    let padded = slot.as_mut_ptr();
    // SAFETY: `padded` points at a reserved, exclusively owned ring-buffer
    // slot of the right size; every field is written before submit.
    unsafe {
        (*padded)._pad = 0;
        let ev = &raw mut (*padded).event;
        (*ev).header = stamp(RecordKind::State);
        (*ev).skaddr = skaddr;
        (*ev).dwell_ns = dwell_ns;
        (*ev).owner = owner;
        (*ev).addrs = addrs;
        (*ev).old_state = old;
        (*ev).new_state = new;
        (*ev).owner_source = owner_source;
        (*ev)._pad = 0;
    }
    // Userspace drains the CPU rings on a timer: no wakeup, no irq_work.
    slot.submit(BPF_RB_NO_WAKEUP);
    count(Counter::StateEvents);
    Ok(())
}
