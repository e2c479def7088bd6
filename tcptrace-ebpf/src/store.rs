//! What the hooks ask of the socket store in use, the full socket map
//! ([`crate::full_store`]) or the lean store ([`crate::lean_store`]): a
//! socket's state and owner, and whether a new entry is a first sighting.

use tcptrace_common::{Counter, Owner, TcpState, track::OwnerSource};

use crate::{
    lean_store::{lean_owner, lean_slot},
    maps::{LEAN, SOCKS, count},
};

/// A socket without an entry is about to get one at a transition out of
/// `old`. A socket starts its life at CLOSE->SYN_SENT, CLOSE->LISTEN or
/// LISTEN->SYN_RECV (a child cloned from its listener). Any other first
/// sighting is a socket older than the tracer, or evicted: counted.
#[inline(always)]
pub(crate) fn first_sighting(old: u32) {
    if old != TcpState::Close as u32 && old != TcpState::Listen as u32 {
        count(Counter::SockUnknown);
    }
}

/// The state and owner recorded for `skaddr`, from whichever socket map is
/// in use; state 0 and no owner if the socket is not tracked.
#[inline(always)]
pub(crate) fn tracked(skaddr: u64) -> (u32, Owner, u32) {
    let unknown = (0, Owner::default(), OwnerSource::Unknown as u32);
    if skaddr == 0 {
        return unknown;
    }
    if config!(lean_socks) != 0 {
        let e = if let Some(slot) = lean_slot(skaddr) {
            // SAFETY: a slot of an array value, valid for this program run.
            let s = unsafe { *slot };
            if !s.is_intact() {
                return unknown;
            }
            s.sock
        } else if let Some(p) = LEAN.get_ptr(skaddr) {
            // SAFETY: lookup result, valid for this program run.
            unsafe { *p }
        } else {
            return unknown;
        };
        let (owner, source) = lean_owner(&e);
        return (e.state, owner, source);
    }
    match SOCKS.get_ptr(skaddr) {
        // SAFETY: lookup result, valid for this program run.
        Some(p) => unsafe { ((*p).state, (*p).owner, (*p).owner_source) },
        None => unknown,
    }
}
