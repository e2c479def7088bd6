//! The lean socket store (`Config::lean_socks`): `LEAN_TABLE`, a table of
//! two-slot buckets, then the `LEAN` map for sockets whose bucket is full.
//! State, entry time and the owner's pid and tid; comms go to `COMMS`.

use aya_ebpf::helpers::{
    bpf_get_current_comm,
    generated::{self, bpf_get_current_cgroup_id},
};
use tcptrace_common::{
    Counter, LeanSock, Owner, TcpState,
    comms::{self, CommSlot},
    table::{self, LeanBucket, LeanSlot},
    track::{apply_lean_transition, is_gap, is_owner_transition},
};

use crate::{
    config::Variant,
    maps::{BPF_NOEXIST, COMMS, LEAN, LEAN_TABLE, count},
    owner_cache::lean_owner_replaced,
    store::first_sighting,
};

/// A transition in the lean socket store (`Config::lean_socks`): the table
/// first, then the `LEAN` map. State, entry time and the owner's pid from
/// owner transitions; no comm.
#[inline(always)]
pub(crate) fn lean_transition<V: Variant>(
    skaddr: u64,
    old: u32,
    new: u32,
    now: u64,
) -> (u64, Owner, u32) {
    let bucket = lean_bucket(skaddr);
    if let Some(b) = bucket
        && let Some(slot) = table_find(b, skaddr)
    {
        return table_transition::<V>(slot, skaddr, old, new, now);
    }
    // A listener's child is new to both; anything else may be in the map.
    let found = if table::is_birth(old, new) {
        None
    } else {
        LEAN.get_ptr_mut(skaddr)
    };
    if let Some(p) = found {
        // SAFETY: lookup result, valid for this program run; 24 bytes
        // copied out and written back in place.
        let mut e = unsafe { *p };
        let reported = lean_advance::<V>(&mut e, skaddr, true, (old, new), now);
        // SAFETY: as above.
        unsafe { *p = e };
        return reported;
    }
    let mut e = LeanSock::default();
    let reported = lean_advance::<V>(&mut e, skaddr, false, (old, new), now);
    // As in full_transition: first sightings at CLOSE are not kept.
    if new != TcpState::Close as u32 {
        first_sighting(old);
        if bucket.is_some_and(|b| table_claim(b, skaddr, &e)) {
            count(Counter::SockInserts);
        } else if LEAN.insert(skaddr, &e, BPF_NOEXIST).is_ok() {
            count(Counter::SockInserts);
        } else {
            count(Counter::SockInsertErrors);
        }
    }
    reported
}

/// Apply `old -> new` at `now` to a lean entry: the dwell in `old` and the
/// owner to report.
#[inline(always)]
fn lean_advance<V: Variant>(
    e: &mut LeanSock,
    skaddr: u64,
    known: bool,
    transition: (u32, u32),
    now: u64,
) -> (u64, Owner, u32) {
    let (old, new) = transition;
    let before = *e;
    if is_gap(known, e.state, old, new) {
        count(Counter::TransitionGaps);
    }
    // SAFETY: no preconditions.
    let dwell_ns = apply_lean_transition(e, known, old, new, now, || unsafe {
        generated::bpf_get_current_pid_tgid()
    });
    // The owner's side effects once per transition, outside the closure:
    // a closure with a body of its own becomes a BPF subprogram whose stack
    // adds to the generic program's (over 512 bytes on kernels before 6.13,
    // which have no private stacks).
    if is_owner_transition(old, new) {
        let pid_tgid = (u64::from(e.tgid) << 32) | u64::from(e.tid);
        if setting!(V, noted_new_states) & (1 << (new & 31)) != 0 {
            note_comm(pid_tgid);
        }
        // The stream's recv/send hooks write owners into the lean entry: a
        // close() by another process must stop other CPUs' cached pairs of
        // the previous owner (leak mode's hooks write the details instead).
        if known && setting!(V, sock_details) == 0 {
            lean_owner_replaced(skaddr, &before, e.tgid);
        }
    }
    // A child born where an earlier socket's entry was left (its destroy
    // missed: see track::starts_life) drops that owner; its cached pairs
    // must not skip the child's I/O. connect() and listen() are owner
    // transitions, covered above.
    if known && table::is_birth(old, new) && before.tgid != 0 && setting!(V, sock_details) == 0 {
        lean_owner_replaced(skaddr, &before, 0);
    }
    let (owner, source) = lean_owner(e);
    (dwell_ns, owner, source)
}

/// The table bucket of `skaddr` (an inlined array index, no helper call).
#[inline(always)]
fn lean_bucket(skaddr: u64) -> Option<*mut LeanBucket> {
    LEAN_TABLE.get_ptr_mut(table::bucket_of(skaddr, config!(lean_table_mask)))
}

/// The table slot that holds `skaddr`, if any.
#[inline(always)]
pub(crate) fn lean_slot(skaddr: u64) -> Option<*mut LeanSlot> {
    lean_bucket(skaddr).and_then(|b| table_find(b, skaddr))
}

/// The slot of bucket `b` that holds `skaddr`.
#[inline(always)]
fn table_find(b: *mut LeanBucket, skaddr: u64) -> Option<*mut LeanSlot> {
    // SAFETY: `b` is an array value returned by the lookup, valid for this
    // program run; the index is a constant below `table::SLOTS`.
    unsafe {
        let s0 = &raw mut (*b).slots[0];
        if (*s0).skaddr == skaddr {
            return Some(s0);
        }
        let s1 = &raw mut (*b).slots[1];
        if (*s1).skaddr == skaddr {
            return Some(s1);
        }
    }
    None
}

/// Write `e` and its seal into `slot` for `skaddr`.
#[inline(always)]
fn table_store(slot: *mut LeanSlot, skaddr: u64, e: &LeanSock) {
    let sealed = LeanSock {
        seal: table::seal(skaddr, e),
        ..*e
    };
    // SAFETY: a slot of an array value, valid for this program run. The
    // stores may interleave with a racing claim's: the seal tells.
    unsafe {
        (*slot).skaddr = skaddr;
        (*slot).sock = sealed;
    }
}

/// Take a free slot of bucket `b` for `skaddr`; false when both are taken.
#[inline(always)]
fn table_claim(b: *mut LeanBucket, skaddr: u64, e: &LeanSock) -> bool {
    match table_find(b, 0) {
        Some(slot) => {
            table_store(slot, skaddr, e);
            true
        }
        None => false,
    }
}

/// A transition of a socket found in the table.
#[inline(always)]
fn table_transition<V: Variant>(
    slot: *mut LeanSlot,
    skaddr: u64,
    old: u32,
    new: u32,
    now: u64,
) -> (u64, Owner, u32) {
    // SAFETY: a slot of an array value, valid for this program run.
    let s = unsafe { *slot };
    // A slot torn by a racing claim has no trustworthy entry: this
    // transition starts it again (see tcptrace_common::table).
    let intact = s.is_intact();
    if !intact {
        count(Counter::SockUnknown);
    }
    let mut e = s.sock;
    let reported = lean_advance::<V>(&mut e, skaddr, intact, (old, new), now);
    table_store(slot, skaddr, &e);
    reported
}

/// Note the current thread's comm in the comm cache unless its slot holds
/// it already. Threads rarely rename themselves, so the common path is an
/// array index and a compare, and no write to a line other CPUs read.
#[inline(always)]
pub(crate) fn note_comm(pid_tgid: u64) {
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if let Some(slot) = COMMS.get_ptr_mut(comms::slot_of(pid_tgid)) {
        // SAFETY: an array value, valid for this program run. A racing
        // writer of the same slot is caught by the seal.
        unsafe {
            if !(*slot).holds(pid_tgid, &comm, cgroup) {
                *slot = CommSlot::new(pid_tgid, comm, cgroup);
            }
        }
    }
}

/// The owner a lean entry records: pid and tid, no comm (userspace joins
/// it from the comm cache).
#[inline(always)]
pub(crate) fn lean_owner(e: &LeanSock) -> (Owner, u32) {
    let (tgid, tid, source) = e.owner();
    let owner = Owner {
        tgid,
        tid,
        comm: [0; 16],
    };
    (owner, source as u32)
}
