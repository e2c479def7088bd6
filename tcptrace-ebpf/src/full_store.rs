//! The full socket store, the `SOCKS` map (the modes without
//! `Config::lean_socks`): a socket's state, entry time, owner and
//! CLOSE_WAIT endpoints, kept by `inet_sock_set_state`.

use aya_ebpf::programs::TracePointContext;
use tcptrace_common::{
    Counter, DWELL_UNKNOWN, Owner, TcpState,
    track::{OwnerSource, apply_transition, is_gap, is_owner_transition},
};

use crate::{
    maps::{BPF_NOEXIST, NEW_SOCK, SOCKS, count},
    owner_cache::owner_replaced,
    store::first_sighting,
    task::current_owner,
    tracepoint::{SetStateHead, SetStateRecord},
};

/// A transition in the full socket map (`SOCKS`): state, entry time,
/// owner, stacks and CLOSE_WAIT endpoints. Returns the dwell in the old
/// state and the owner to report.
#[inline(always)]
pub(crate) fn full_transition(
    ctx: &TracePointContext,
    rec: &impl SetStateRecord,
    h: &SetStateHead,
    now: u64,
) -> Result<(u64, Owner, u32), i64> {
    let (skaddr, old, new) = (h.skaddr, h.old, h.new);
    // A known entry is updated in place (the BPF stack is 512 bytes). A new
    // one is built in a per-CPU slot and inserted whole: no second lookup.
    let found = SOCKS.get_ptr_mut(skaddr);
    let known = found.is_some();
    let (ptr, fresh) = match found {
        Some(p) => (Some(p), false),
        // The entry outlives CLOSE (see apply_transition); tcp_destroy_sock
        // removes it. A socket first seen at CLOSE has nothing worth keeping.
        None if new != TcpState::Close as u32 => {
            first_sighting(old);
            (NEW_SOCK.get_ptr_mut(0), true)
        }
        None => (None, false),
    };
    Ok(match ptr {
        Some(p) => {
            // SAFETY: a pointer into a map value (the socket's entry, or this
            // CPU's slot) returned by the lookup helper, valid for the
            // duration of this program run.
            let info = unsafe { &mut *p };
            let before = (info.owner_source, info.owner.tgid);
            if is_gap(known, info.state, old, new) {
                count(Counter::TransitionGaps);
            }
            // For a fresh slot (`known` false) this rewrites every field.
            let dwell_ns = apply_transition(info, known, old, new, now, current_owner);
            // close()/shutdown() by another process than the last owner.
            if known {
                owner_replaced(skaddr, before, info.owner.tgid);
            }
            if new == TcpState::CloseWait as u32 {
                info.addrs = rec.addrs(h)?;
            }
            if fresh {
                if SOCKS.insert(skaddr, &*info, BPF_NOEXIST).is_ok() {
                    count(Counter::SockInserts);
                } else {
                    // Reported like any untracked socket: unknown dwell,
                    // the owner only from an owner transition.
                    count(Counter::SockInsertErrors);
                    // Target `tcptrace`, the crate, not this module's path: the name
                    // that userspace's log line shows.
                    aya_log_ebpf::warn!(ctx, target: "tcptrace", "socket map insert failed");
                }
            }
            (dwell_ns, info.owner, info.owner_source)
        }
        // Untracked (first seen at CLOSE, or the insert failed): the same
        // rule without an entry.
        None if is_owner_transition(old, new) => {
            (DWELL_UNKNOWN, current_owner(), OwnerSource::Syscall as u32)
        }
        None => (DWELL_UNKNOWN, Owner::default(), OwnerSource::Unknown as u32),
    })
}
