//! The socket details (`Config::sock_details`, leak mode): entries in the
//! `SOCKS` map that the owner's first recv/send and CLOSE_WAIT create, with
//! the owner, its stacks, the first EOF and the CLOSE_WAIT endpoints.

use tcptrace_common::{Counter, SockInfo, TcpState};

use crate::{
    maps::{BPF_NOEXIST, SOCKS, count},
    owner_cache::{bump_io_generation, io_slot},
    tracepoint::{SetStateHead, SetStateRecord},
};

/// A transition into or out of CLOSE_WAIT in the socket details
/// (`Config::sock_details`, `SOCKS`): CLOSE_WAIT entry records the state,
/// time and endpoints, creating the details if the socket's owner has not
/// touched it yet; leaving it records the new state, so that leak reports
/// skip it (and no record names its owner: the details' owner stays the
/// one its I/O recorded).
#[inline(always)]
pub(crate) fn detail_transition(
    rec: &impl SetStateRecord,
    h: &SetStateHead,
    now: u64,
    netns: u32,
) -> Result<(), i64> {
    let (skaddr, new) = (h.skaddr, h.new);
    let entering = new == TcpState::CloseWait as u32;
    let Some(p) = details(skaddr, entering) else {
        return Ok(());
    };
    // SAFETY: lookup result, valid for this program run; updated in place.
    let info = unsafe { &mut *p };
    if entering {
        info.addrs = rec.addrs(h)?;
        info.netns = netns;
    }
    info.state = new;
    info.entered_ns = now;
    Ok(())
}

/// A socket starts its life at `skaddr` (`track::starts_life`): details
/// still there are an earlier socket's, whose `tcp_destroy_sock` the tracer
/// missed. They go, with the pair-cache slot of the address, so that the
/// new socket takes none of the old one's owner, stacks or EOF.
#[inline(always)]
pub(crate) fn forget_earlier_socket(skaddr: u64) {
    if SOCKS.remove(skaddr).is_ok() && config!(io_hooks) != 0 {
        bump_io_generation(io_slot(skaddr));
    }
}

/// The details of `skaddr`; with `create`, new ones that know nothing yet
/// if it has none. A racing insert on another CPU (a recv/send, a
/// CLOSE_WAIT entry) may win: both callers then update its entry.
#[inline(always)]
pub(crate) fn details(skaddr: u64, create: bool) -> Option<*mut SockInfo> {
    let found = SOCKS.get_ptr_mut(skaddr);
    if found.is_some() || !create {
        return found;
    }
    insert_details(skaddr);
    SOCKS.get_ptr_mut(skaddr)
}

/// `bpf_map_update_elem`'s error (negated) for a key already present.
const EEXIST: i32 = 17;

/// Details that know nothing yet: no state or entry time, owner unknown,
/// no stacks, no endpoints (every field's "unknown" is zero). A read-only
/// global, passed to the map update as it is: building it in a buffer took
/// a `memset` subprogram, whose frame counts towards the 512-byte stack
/// limit of kernels without private stacks.
// SAFETY: SockInfo is plain integers, for which all-zero bytes are valid.
static EMPTY_DETAILS: SockInfo = unsafe { core::mem::zeroed() };

/// Insert details that know nothing yet for `skaddr`, unless it has some.
/// Once per socket: a BPF subprogram, so that the hot paths that call it
/// keep their registers.
#[inline(never)]
fn insert_details(skaddr: u64) {
    // EEXIST: another hook inserted it first, which is fine.
    if let Err(e) = SOCKS.insert(skaddr, &EMPTY_DETAILS, BPF_NOEXIST)
        && e != -EEXIST
    {
        count(Counter::SockInsertErrors);
    }
}
