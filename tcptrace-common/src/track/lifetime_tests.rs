//! Lives, owners and gaps: what carries over from one transition, and one
//! socket, to the next.

use super::*;

#[test]
fn a_transition_from_a_state_the_entry_is_not_in_is_a_gap() {
    const FIN_WAIT1: u32 = TcpState::FinWait1 as u32;
    const FIN_WAIT2: u32 = TcpState::FinWait2 as u32;
    // FIN_WAIT1 -> FIN_WAIT2 skipped: the next one leaves FIN_WAIT2.
    assert!(is_gap(true, FIN_WAIT1, FIN_WAIT2, CLOSE));
    assert!(!is_gap(true, FIN_WAIT2, FIN_WAIT2, CLOSE));
    // No entry: unknown, not a gap.
    assert!(!is_gap(false, FIN_WAIT1, FIN_WAIT2, CLOSE));
    // A new life over an earlier one's entry is no gap.
    assert!(!is_gap(true, CLOSE, CLOSE, SYN_SENT));
    assert!(!is_gap(true, ESTABLISHED, LISTEN, SYN_RECV));
    assert!(!is_gap(true, FIN_WAIT2, CLOSE, LISTEN));
    // An entry left at CLOSE (its destroy and a birth missed).
    assert!(is_gap(true, CLOSE, ESTABLISHED, FIN_WAIT1));
    assert!(is_gap_at_destroy(LAST_ACK));
    assert!(!is_gap_at_destroy(CLOSE));
}

#[test]
fn the_owner_survives_close_and_a_new_life_starts_clean() {
    let owner = Owner {
        tgid: 7,
        tid: 7,
        comm: [b'c'; crate::COMM_LEN],
    };
    let mut info = SockInfo::default();
    let est = TcpState::Established as u32;
    let close = TcpState::Close as u32;
    let syn_sent = TcpState::SynSent as u32;
    apply_transition(&mut info, false, close, syn_sent, 10, || owner);
    apply_transition(&mut info, true, syn_sent, est, 20, Owner::default);
    info.eof_ns = 25;
    let d = apply_transition(&mut info, true, est, close, 30, Owner::default);
    assert_eq!(d, 10);
    assert_eq!(
        info.owner.tgid, 7,
        "a RST after CLOSE still finds the owner"
    );
    // connect() again on the same socket: a fresh entry.
    let second = Owner { tgid: 8, ..owner };
    let d = apply_transition(&mut info, true, close, syn_sent, 40, || second);
    assert_eq!(d, crate::DWELL_UNKNOWN);
    assert_eq!(info.owner.tgid, 8);
    assert_eq!(info.eof_ns, 0, "nothing carries over from the old life");
}

#[test]
fn a_lean_entry_times_each_state_and_keeps_the_pid_of_owner_transitions() {
    let (close, syn_sent, est, fin_wait1, fin_wait2) = (
        TcpState::Close as u32,
        TcpState::SynSent as u32,
        TcpState::Established as u32,
        TcpState::FinWait1 as u32,
        TcpState::FinWait2 as u32,
    );
    let not_asked = || -> u64 { panic!("not an owner transition") };
    let mut e = LeanSock::default();
    let d = apply_lean_transition(&mut e, false, close, syn_sent, 10, || (7 << 32) | 8);
    assert_eq!(d, DWELL_UNKNOWN);
    assert_eq!((e.state, e.tgid, e.tid, e.entered_ns), (syn_sent, 7, 8, 10));
    // Softirq: the task on CPU is not the owner and is not asked.
    assert_eq!(
        apply_lean_transition(&mut e, true, syn_sent, est, 25, not_asked),
        15
    );
    assert_eq!(
        apply_lean_transition(&mut e, true, est, fin_wait1, 45, || 9 << 32),
        20
    );
    assert_eq!(e.tgid, 9, "close() by another process");
    // The kernel says the socket leaves FIN_WAIT2, the entry says
    // FIN_WAIT1: a transition was missed, the entry is stale.
    let d = apply_lean_transition(&mut e, true, fin_wait2, close, 60, not_asked);
    assert_eq!(d, DWELL_UNKNOWN);
    assert_eq!(e.tgid, 9, "the owner outlives CLOSE");
    // connect() again: a new life.
    let d = apply_lean_transition(&mut e, true, close, syn_sent, 70, || 3 << 32);
    assert_eq!(d, DWELL_UNKNOWN);
    assert_eq!((e.tgid, e.tid), (3, 0));
}

/// The stream's server side: a child born in softirq gets its owner
/// from the accepting process's recv, keeps it through softirq
/// transitions, and a `close()` by that process makes it a syscall owner.
#[test]
fn a_lean_owner_from_io_is_told_from_a_syscall_owner() {
    let (listen, syn_recv, est, close_wait, last_ack) = (
        TcpState::Listen as u32,
        TcpState::SynRecv as u32,
        TcpState::Established as u32,
        TcpState::CloseWait as u32,
        TcpState::LastAck as u32,
    );
    let server: u64 = (200 << 32) + 201;
    let not_asked = || -> u64 { panic!("not an owner transition") };
    let mut e = LeanSock::default();
    apply_lean_transition(&mut e, false, listen, syn_recv, 10, not_asked);
    apply_lean_transition(&mut e, true, syn_recv, est, 20, not_asked);
    assert_eq!(e.owner(), (0, 0, OwnerSource::Unknown));
    // The server's first recv takes the socket.
    (e.tgid, e.tid) = e.io_owner(server).expect("an unknown owner is replaced");
    assert_eq!(e.owner(), (200, 201, OwnerSource::Io));
    assert_eq!(e.io_owner(server), None, "the owner again: nothing to do");
    assert_eq!(
        e.io_owner(server + 1),
        None,
        "another thread of the owner: nothing to do"
    );
    // The peer's FIN arrives in the client's context (loopback).
    let d = apply_lean_transition(&mut e, true, est, close_wait, 50, not_asked);
    assert_eq!(d, 30);
    assert_eq!(e.owner(), (200, 201, OwnerSource::Io));
    // Another process writes to it: it takes the socket.
    let client = (100 << 32) + 101;
    assert_eq!(e.io_owner(client), Some((100, LEAN_TID_FROM_IO + 101)));
    // The server's close(): a syscall owner, the flag gone.
    apply_lean_transition(&mut e, true, close_wait, last_ack, 60, || server);
    assert_eq!(e.owner(), (200, 201, OwnerSource::Syscall));
}
