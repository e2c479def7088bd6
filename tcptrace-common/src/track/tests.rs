//! The tracking rules, transition by transition.

extern crate std;
use std::vec::Vec;

use super::*;
use crate::COMM_LEN;

const CLIENT: u32 = 100;
const SERVER: u32 = 200;

fn task(tgid: u32) -> Owner {
    let mut comm = [0u8; COMM_LEN];
    comm[..4].copy_from_slice(if tgid == CLIENT { b"clnt" } else { b"srvr" });
    Owner {
        tgid,
        tid: tgid + 1,
        comm,
    }
}

/// Replays transitions like the kernel program: `(old, new, on_cpu)`.
/// Returns the owner reported with each transition and the dwell.
fn replay(steps: &[(TcpState, TcpState, u32)], io: &[(usize, u32)]) -> Vec<(u32, u64)> {
    let mut entry: Option<SockInfo> = None;
    let mut out = Vec::new();
    for (i, &(old, new, on_cpu)) in steps.iter().enumerate() {
        // recv/send calls that happen before step i.
        for &(_, tgid) in io.iter().filter(|(at, _)| *at == i) {
            if let Some(e) = entry.as_mut()
                && io_needs_owner_update(e, tgid)
            {
                e.owner = task(tgid);
                e.owner_source = OwnerSource::Io as u32;
            }
        }
        let now = (i as u64 + 1) * 1_000;
        let known = entry.is_some();
        let mut info = entry.unwrap_or_default();
        let dwell = apply_transition(&mut info, known, old as u32, new as u32, now, || {
            task(on_cpu)
        });
        out.push((info.owner.tgid, dwell));
        entry = Some(info);
    }
    out
}

use TcpState::{
    Close, CloseWait, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv, SynSent,
};

#[test]
fn dwell_needs_an_entry_a_time_and_a_live_state() {
    let est = TcpState::Established as u32;
    assert_eq!(dwell(true, est, est, 1_000, 3_500), 2_500);
    assert_eq!(dwell(false, est, est, 1_000, 3_500), crate::DWELL_UNKNOWN);
    assert_eq!(dwell(true, est, est, 0, 3_500), crate::DWELL_UNKNOWN);
    assert_eq!(dwell(true, est, est, 4_000, 3_500), crate::DWELL_UNKNOWN);
    let close = TcpState::Close as u32;
    assert_eq!(
        dwell(true, close, close, 1_000, 3_500),
        crate::DWELL_UNKNOWN,
        "leaving CLOSE starts a new life"
    );
    assert_eq!(
        dwell(true, TcpState::SynSent as u32, est, 1_000, 3_500),
        crate::DWELL_UNKNOWN,
        "an entry in another state than the one left is stale"
    );
}

#[test]
fn client_owner_comes_from_connect_not_from_softirq_tasks() {
    // Active closer. SYN_SENT->ESTABLISHED and FIN_WAIT1->FIN_WAIT2 run in
    // softirq, here in the server's context: the owner must stay CLIENT.
    let r = replay(
        &[
            (Close, SynSent, CLIENT),
            (SynSent, Established, SERVER),
            (Established, FinWait1, CLIENT),
            (FinWait1, FinWait2, SERVER),
            (FinWait2, Close, SERVER),
        ],
        &[],
    );
    for (i, (owner, _)) in r.iter().enumerate() {
        assert_eq!(*owner, CLIENT, "step {i}");
    }
    assert_eq!(r[0].1, crate::DWELL_UNKNOWN);
    assert_eq!(r[1].1, 1_000, "SYN_SENT lasted from t=1000 to t=2000");
}

#[test]
fn server_close_wait_names_the_server_after_its_first_recv() {
    // Passive closer. The child socket is born in softirq and its
    // CLOSE_WAIT transition runs in the *client's* context on loopback.
    let r = replay(
        &[
            (Listen, SynRecv, CLIENT),
            (SynRecv, Established, CLIENT),
            (Established, CloseWait, CLIENT),
            (CloseWait, LastAck, SERVER),
            (LastAck, Close, CLIENT),
        ],
        &[(2, SERVER)], // the server reads the request before the FIN
    );
    assert_eq!(r[0].0, 0, "owner unknown, never the task on CPU");
    assert_eq!(r[1].0, 0);
    assert_eq!(r[2].0, SERVER);
    assert_eq!(r[3].0, SERVER);
    assert_eq!(r[4].0, SERVER);
}

#[test]
fn close_wait_before_any_server_io_is_unknown_not_the_client() {
    let r = replay(
        &[
            (Listen, SynRecv, CLIENT),
            (SynRecv, Established, CLIENT),
            (Established, CloseWait, CLIENT),
            (CloseWait, LastAck, SERVER),
        ],
        &[],
    );
    assert_eq!(r[2].0, 0);
    assert_eq!(r[3].0, SERVER, "close() names the owner");
}

#[test]
fn owner_follows_a_socket_handed_to_another_process() {
    let mut e = SockInfo {
        owner: task(CLIENT),
        owner_source: OwnerSource::Syscall as u32,
        ..SockInfo::default()
    };
    assert!(
        !io_needs_owner_update(&e, CLIENT),
        "the owner's own I/O costs nothing"
    );
    assert!(io_needs_owner_update(&e, SERVER));
    e.owner_source = OwnerSource::Unknown as u32;
    assert!(io_needs_owner_update(&e, CLIENT));
}

#[test]
fn only_syscall_driven_transitions_take_the_cpu_task() {
    let s = |a: TcpState, b: TcpState| is_owner_transition(a as u32, b as u32);
    assert!(s(Close, SynSent));
    assert!(s(Close, Listen));
    assert!(s(Listen, Close));
    assert!(s(Established, FinWait1));
    assert!(s(CloseWait, LastAck));
    assert!(!s(Established, CloseWait), "softirq: peer's FIN");
    assert!(!s(SynSent, Established), "softirq: SYN-ACK");
    assert!(!s(FinWait1, FinWait2), "softirq: ACK of FIN");
    assert!(!s(Established, Close), "linger-0 close or a received RST");
    assert!(!s(SynSent, Close), "close or connect timeout");
}

#[test]
fn unknown_sockets_have_no_dwell_and_no_owner_until_an_owner_transition() {
    let mut info = SockInfo::default();
    let d = apply_transition(
        &mut info,
        false,
        Established as u32,
        CloseWait as u32,
        5,
        || task(CLIENT),
    );
    assert_eq!(d, crate::DWELL_UNKNOWN);
    assert_eq!(info.owner.tgid, 0);
    assert_eq!(info.state, CloseWait as u32);
    let d = apply_transition(&mut info, true, CloseWait as u32, LastAck as u32, 9, || {
        task(SERVER)
    });
    assert_eq!(d, 4);
    assert_eq!(info.owner.tgid, SERVER);
}

#[test]
fn state_names_and_numbers_round_trip() {
    for s in TcpState::ALL {
        assert_eq!(TcpState::from_u32(s as u32), Some(s));
    }
    assert_eq!(TcpState::from_u32(0), None);
    assert_eq!(TcpState::from_u32(13), None);
    assert_eq!(TcpState::CloseWait.name(), "CLOSE_WAIT");
}

#[test]
fn a_life_start_forgets_what_an_earlier_socket_left_at_its_address() {
    // The earlier socket's CLOSE and tcp_destroy_sock were both missed:
    // its entry still says FIN_WAIT2, with its owner, stacks and EOF.
    let stack = crate::StackRef {
        id_plus_one: 1,
        tgid: CLIENT,
        sp_word: 0,
    };
    let stale = SockInfo {
        state: FinWait2 as u32,
        entered_ns: 500,
        owner: task(CLIENT),
        owner_source: OwnerSource::Io as u32,
        eof_ns: 400,
        eof_stack: stack,
        first_stack: stack,
        ..SockInfo::default()
    };
    for (old, new, owner) in [
        (Listen, SynRecv, 0),
        (Close, SynSent, SERVER),
        (Close, Listen, SERVER),
    ] {
        assert!(starts_life(old as u32, new as u32));
        let mut e = stale;
        let d = apply_transition(&mut e, true, old as u32, new as u32, 1_000, || task(SERVER));
        assert_eq!(d, crate::DWELL_UNKNOWN, "{old:?} -> {new:?}");
        assert_eq!(e.owner.tgid, owner, "{old:?} -> {new:?}");
        assert_eq!(
            (e.first_stack, e.eof_stack, e.eof_ns),
            (crate::StackRef::default(), crate::StackRef::default(), 0),
            "{old:?} -> {new:?}"
        );
    }
    // A listener left at a child's address gives the child no LISTEN dwell.
    let mut e = SockInfo {
        state: Listen as u32,
        entered_ns: 500,
        ..SockInfo::default()
    };
    let d = apply_transition(&mut e, true, Listen as u32, SynRecv as u32, 1_000, || {
        task(SERVER)
    });
    assert_eq!(d, crate::DWELL_UNKNOWN);
    // The lean store's entries too.
    let mut l = LeanSock {
        state: FinWait2 as u32,
        tgid: CLIENT,
        tid: CLIENT + 1,
        entered_ns: 500,
        ..LeanSock::default()
    };
    let not_asked = || -> u64 { panic!("not an owner transition") };
    let d = apply_lean_transition(
        &mut l,
        true,
        Listen as u32,
        SynRecv as u32,
        1_000,
        not_asked,
    );
    assert_eq!(d, crate::DWELL_UNKNOWN);
    assert_eq!(l.owner(), (0, 0, OwnerSource::Unknown));
    // The rest of a life keeps what its entry knows.
    for (old, new) in [
        (SynRecv, Established),
        (Established, CloseWait),
        (CloseWait, LastAck),
        (SynSent, Established),
        (Established, FinWait1),
    ] {
        assert!(!starts_life(old as u32, new as u32), "{old:?} -> {new:?}");
    }
}
