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
mod tests;

#[cfg(test)]
mod lifetime_tests;
