//! Per-socket tracking rules shared by the kernel program and userspace tests:
//! which transitions run in the owner's process context, and how a socket's
//! map entry changes at each transition.
//!
//! The task on CPU at a transition is often not the socket's owner:
//! ESTABLISHED->CLOSE_WAIT, SYN_SENT->ESTABLISHED and FIN_WAIT1->FIN_WAIT2 run
//! in softirq, and on loopback the receive path runs in the *sender's* context.
//! So the owner is recorded only at transitions that the owner's own system
//! calls cause, and at its recv/send calls.

use crate::record::{DWELL_UNKNOWN, LEAN_TID_FROM_IO, LeanSock, Owner, SockInfo};

/// TCP states as numbered in `include/net/tcp_states.h` (stable UAPI values).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        if v >= 1 && v <= 12 {
            Some(Self::ALL[(v - 1) as usize])
        } else {
            None
        }
    }

    /// Kernel name without the `TCP_` prefix, e.g. `CLOSE_WAIT`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

/// How the owner printed with an event was learnt.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerSource {
    /// No process-context hook has seen the socket yet.
    Unknown = 0,
    /// A transition caused by the owner's own system call (connect, listen,
    /// close, shutdown).
    Syscall = 1,
    /// The owner's recv or send on the socket.
    Io = 2,
    /// Userspace found the socket's inode in `/proc/<pid>/fd`.
    Procfs = 3,
}

impl OwnerSource {
    #[must_use]
    pub const fn from_u32(v: u32) -> Self {
        match v {
            1 => OwnerSource::Syscall,
            2 => OwnerSource::Io,
            3 => OwnerSource::Procfs,
            _ => OwnerSource::Unknown,
        }
    }
}

const ESTABLISHED: u32 = TcpState::Established as u32;
const SYN_SENT: u32 = TcpState::SynSent as u32;
const FIN_WAIT1: u32 = TcpState::FinWait1 as u32;
const CLOSE: u32 = TcpState::Close as u32;
const CLOSE_WAIT: u32 = TcpState::CloseWait as u32;
const LAST_ACK: u32 = TcpState::LastAck as u32;
const LISTEN: u32 = TcpState::Listen as u32;
const SYN_RECV: u32 = TcpState::SynRecv as u32;

/// Whether the transition `old -> new` is always caused by a system call of
/// the socket's owner, so that the task on CPU is the owner.
///
/// - `CLOSE -> SYN_SENT`: `connect()` (`tcp_v4_connect`/`tcp_v6_connect`).
/// - `CLOSE -> LISTEN` and `LISTEN -> CLOSE`: `listen()` and closing a listener
///   (`inet_csk_listen_start`/`inet_csk_listen_stop`).
/// - `ESTABLISHED -> FIN_WAIT1` and `CLOSE_WAIT -> LAST_ACK`: `close()` or
///   `shutdown()` (`tcp_close_state`).
///
/// Everything else may run in softirq or a timer: `ESTABLISHED -> CLOSE` is a
/// linger-0 close *or* a received RST, `SYN_SENT -> CLOSE` a close *or* a
/// connect timeout.
#[inline(always)]
#[must_use]
pub const fn is_owner_transition(old: u32, new: u32) -> bool {
    matches!(
        (old, new),
        (CLOSE, SYN_SENT | LISTEN)
            | (LISTEN, CLOSE)
            | (ESTABLISHED, FIN_WAIT1)
            | (CLOSE_WAIT, LAST_ACK)
    )
}

/// Whether `old -> new` starts a socket's life: `connect()`
/// (`CLOSE -> SYN_SENT`), `listen()` (`CLOSE -> LISTEN`), or a child cloned
/// from its listener (`LISTEN -> SYN_RECV`). An entry the maps hold for the
/// socket's address then is of an earlier life, or of an earlier socket at
/// that address whose `tcp_destroy_sock` the tracer missed: the kernel
/// skips a tracepoint program that fires while another one runs on the same
/// CPU (a softirq that interrupts one).
#[inline(always)]
#[must_use]
pub const fn starts_life(old: u32, new: u32) -> bool {
    matches!((old, new), (CLOSE, SYN_SENT | LISTEN) | (LISTEN, SYN_RECV))
}

/// Whether the kernel's `old -> new` for a socket whose entry (`known`) is
/// in `state` shows that a transition in between was never seen: the entry
/// is in another state than the one the socket leaves, and this is not the
/// start of a new life (where any entry is an earlier life's). The kernel
/// skips a tracepoint program that fires while another BPF program runs on
/// the CPU; before Linux 6.7 it does not count those runs, so this is the
/// only trace such a loss leaves there.
#[inline(always)]
#[must_use]
pub const fn is_gap(known: bool, state: u32, old: u32, new: u32) -> bool {
    known && !starts_life(old, new) && state != old
}

/// Whether the kernel destroying a socket whose entry is in `state` shows a
/// missed transition: a socket is destroyed at CLOSE, so an entry in any
/// other state missed its way there.
#[inline(always)]
#[must_use]
pub const fn is_gap_at_destroy(state: u32) -> bool {
    state != CLOSE
}

/// Apply `old -> new` at `now` to a socket's map entry, in place, and return
/// the time spent in `old` ([`DWELL_UNKNOWN`] when `known` is false: the map
/// had no entry, so `info` is a fresh default).
///
/// `current` returns the task on CPU; it is called only for an owner
/// transition, so the kernel pays for `bpf_get_current_comm` only then.
/// The entry is removed when the kernel destroys the socket, not at CLOSE.
#[inline(always)]
pub fn apply_transition(
    info: &mut SockInfo,
    known: bool,
    old: u32,
    new: u32,
    now: u64,
    current: impl FnOnce() -> Owner,
) -> u64 {
    // An entry stays after CLOSE until the kernel destroys the socket, so that
    // a RST sent right after CLOSE (linger-0 close, close with unread data)
    // still finds its owner. Leaving CLOSE again (a new connect or listen on
    // the same socket), or any start of a life (`starts_life`), starts a new
    // life: nothing of the old one carries over.
    let known = known && !starts_life(old, new);
    let dwell_ns = dwell(known, info.state, old, info.entered_ns, now);
    let known = known && info.state != CLOSE;
    if !known {
        forget_life(info);
    }
    if is_owner_transition(old, new) {
        info.owner = current();
        info.owner_source = OwnerSource::Syscall as u32;
    }
    info.state = new;
    info.entered_ns = now;
    dwell_ns
}

/// Clear what an entry knows of a socket's life (owner, EOF, stacks,
/// endpoints), keeping its state and entry time. Field by field: a
/// whole-struct assignment would build a 120-byte temporary on the
/// 512-byte BPF stack.
#[inline(always)]
pub fn forget_life(info: &mut SockInfo) {
    info.owner = Owner::default();
    info.owner_source = OwnerSource::Unknown as u32;
    info.eof_ns = 0;
    info.eof_stack = crate::StackRef::default();
    info.first_stack = crate::StackRef::default();
    info.addrs = crate::Addrs::default();
    info.netns = 0;
    info.cgroup = 0;
}

/// The time a socket spent in `old`, according to its entry (`state`,
/// entered at `entered_ns`), when it leaves it at `now`: [`DWELL_UNKNOWN`]
/// without an entry (`known` false), without an entry time, when the entry
/// is in another state than the one the kernel says the socket leaves (a
/// stale entry), or when it is a finished life (CLOSE: the entry outlives
/// CLOSE until the socket is destroyed, and leaving CLOSE again starts a new
/// life).
#[inline(always)]
#[must_use]
pub const fn dwell(known: bool, state: u32, old: u32, entered_ns: u64, now: u64) -> u64 {
    if known && state == old && state != CLOSE && entered_ns != 0 && entered_ns <= now {
        now - entered_ns
    } else {
        DWELL_UNKNOWN
    }
}

/// [`apply_transition`] for a lean entry ([`LeanSock`]): the owner's pid and
/// tid from owner transitions, from `pid_tgid` (the kernel's
/// `bpf_get_current_pid_tgid`), called only then.
#[inline(always)]
pub fn apply_lean_transition(
    e: &mut LeanSock,
    known: bool,
    old: u32,
    new: u32,
    now: u64,
    pid_tgid: impl FnOnce() -> u64,
) -> u64 {
    let known = known && !starts_life(old, new);
    let dwell_ns = dwell(known, e.state, old, e.entered_ns, now);
    if !known || e.state == CLOSE {
        // A new life: nothing of the old one carries over.
        e.tgid = 0;
        e.tid = 0;
    }
    if is_owner_transition(old, new) {
        let p = pid_tgid();
        #[expect(
            clippy::cast_possible_truncation,
            reason = "tgid in the upper half, tid in the lower"
        )]
        {
            e.tgid = (p >> 32) as u32;
            e.tid = p as u32;
        }
    }
    e.state = new;
    e.entered_ns = now;
    dwell_ns
}

/// Whether a recv/send by `tgid` on a tracked socket must (re)write its owner.
/// The common path, the owner calling again, returns false and costs nothing.
#[inline(always)]
#[must_use]
pub fn io_needs_owner_update(info: &SockInfo, tgid: u32) -> bool {
    info.owner_source == OwnerSource::Unknown as u32 || info.owner.tgid != tgid
}

impl LeanSock {
    /// The owner this entry records: pid, thread id and where it came from.
    #[inline(always)]
    #[must_use]
    pub const fn owner(&self) -> (u32, u32, OwnerSource) {
        let source = if self.tgid == 0 {
            OwnerSource::Unknown
        } else if self.tid & LEAN_TID_FROM_IO != 0 {
            OwnerSource::Io
        } else {
            OwnerSource::Syscall
        };
        (self.tgid, self.tid & !LEAN_TID_FROM_IO, source)
    }

    /// A recv/send by thread `pid_tgid` (`bpf_get_current_pid_tgid`): the
    /// owner to record in place of the entry's, `(tgid, tid)` with
    /// [`LEAN_TID_FROM_IO`], when the owner is unknown or another process;
    /// None on the common path, the owner calling again. The rule of
    /// [`io_needs_owner_update`] for the lean store.
    #[inline(always)]
    #[must_use]
    pub const fn io_owner(&self, pid_tgid: u64) -> Option<(u32, u32)> {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "tgid in the upper half, tid in the lower"
        )]
        let (process, thread) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
        if self.tgid != 0 && self.tgid == process {
            None
        } else {
            Some((process, thread | LEAN_TID_FROM_IO))
        }
    }
}

#[cfg(test)]
mod tests {
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
}

#[cfg(test)]
mod lifetime_tests {
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
}
