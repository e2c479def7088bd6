//! The shapes of `inet_sock_set_state`'s work, and the program variants
//! compiled for each shape.

use super::{ALL_STATES, Config, HistBy};

/// The settings that decide what work `inet_sock_set_state` does for a
/// transition. Each analysis's settings, and those of the three reporting
/// analyses together, are also compiled into a variant of the program
/// ([`SET_STATE_VARIANTS`]) that reads them as constants: its code holds
/// only that path, with registers allocated for it alone and no `CONFIG`
/// load per setting, which makes it cheaper per transition than the generic
/// program (docs/benchmarks.md). Userspace builds each analysis's
/// [`Config`] from its shape ([`SetStateShape::apply`], [`SetStateShape::union`]
/// for several) and attaches the variant whose shape that `Config` has
/// ([`set_state_program`]), else the generic program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetStateShape {
    pub lean_socks: u8,
    pub sock_details: u32,
    pub timed_states: u32,
    pub emit_old_states: u32,
    pub log_old_states: u32,
    pub noted_new_states: u32,
    pub hist_by: u32,
}

impl SetStateShape {
    /// The shape of `c`.
    #[must_use]
    pub const fn of(c: &Config) -> Self {
        SetStateShape {
            lean_socks: c.lean_socks,
            sock_details: c.sock_details,
            timed_states: c.timed_states,
            emit_old_states: c.emit_old_states,
            log_old_states: c.log_old_states,
            noted_new_states: c.noted_new_states,
            hist_by: c.hist_by,
        }
    }

    /// `c` with this shape's settings.
    #[must_use]
    pub const fn apply(self, c: Config) -> Config {
        Config {
            lean_socks: self.lean_socks,
            sock_details: self.sock_details,
            timed_states: self.timed_states,
            emit_old_states: self.emit_old_states,
            log_old_states: self.log_old_states,
            noted_new_states: self.noted_new_states,
            hist_by: self.hist_by,
            ..c
        }
    }
    /// What `self` and `other` do together: the lean store unless one needs
    /// the full socket map (which then holds leak mode's details itself),
    /// every state timed, emitted, logged or noted by either, and a
    /// histogram split over one by state (`Off` < `State` < a split).
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        let lean_socks = self.lean_socks & other.lean_socks;
        SetStateShape {
            lean_socks,
            sock_details: if lean_socks == 0 {
                0
            } else {
                self.sock_details | other.sock_details
            },
            timed_states: self.timed_states | other.timed_states,
            emit_old_states: self.emit_old_states | other.emit_old_states,
            log_old_states: self.log_old_states | other.log_old_states,
            noted_new_states: self.noted_new_states | other.noted_new_states,
            hist_by: if self.hist_by > other.hist_by {
                self.hist_by
            } else {
                other.hist_by
            },
        }
    }
}

/// The modes' shapes.
pub mod shapes {
    use super::{ALL_STATES, HistBy, SetStateShape};
    use crate::TcpState;

    /// No setting on: the base the modes below start from.
    const NONE: SetStateShape = SetStateShape {
        lean_socks: 0,
        sock_details: 0,
        timed_states: 0,
        emit_old_states: 0,
        log_old_states: 0,
        noted_new_states: 0,
        hist_by: HistBy::Off as u32,
    };

    /// The stream: a record for every transition, with its dwell and its
    /// owner. The lean store keeps the owner's pid and tid, from owner
    /// transitions and from the owner's recv/send; the owner's thread notes
    /// its comm in the comm cache at each, and userspace joins it to the
    /// records, so no socket carries a comm.
    pub const STREAM: SetStateShape = SetStateShape {
        lean_socks: 1,
        emit_old_states: ALL_STATES,
        timed_states: ALL_STATES,
        noted_new_states: ALL_STATES,
        ..NONE
    };

    /// `--hist` (by state): the dwell of every state counted in the
    /// kernel; only dwell and the closer's pid are kept per socket, so the
    /// lean store. `--hist --by` other than state differs in `hist_by` (and
    /// `--by comm` in `lean_socks`: the comm needs the full map), and gets
    /// the generic program.
    pub const HIST: SetStateShape = SetStateShape {
        lean_socks: 1,
        timed_states: ALL_STATES,
        hist_by: HistBy::State as u32,
        ..NONE
    };

    /// `--timewait`: a record of each entry into TIME_WAIT (out of
    /// FIN_WAIT2 or CLOSING), naming the closer, and no other, in the
    /// per-CPU log ([`crate::cpulog`]), not the ring buffer. The lean
    /// store keeps the closer's pid and tid; its comm is noted per thread at
    /// `close()` (into FIN_WAIT1) and joined to the record by userspace. No
    /// dwell: the census times TIME_WAIT from its entry record and the
    /// kernel's timers, and tells port reuse from its sock_diag polls.
    pub const TIMEWAIT: SetStateShape = SetStateShape {
        lean_socks: 1,
        noted_new_states: 1 << (TcpState::FinWait1 as u32),
        log_old_states: ENTERS_TIME_WAIT,
        ..NONE
    };

    /// The states a socket leaves for TIME_WAIT (at `-> CLOSE`).
    const ENTERS_TIME_WAIT: u32 =
        (1 << (TcpState::FinWait2 as u32)) | (1 << (TcpState::Closing as u32));

    /// `--closewait-leaks`: state and entry time of every socket in the
    /// lean store; owner, stacks, EOF and endpoints only for sockets that
    /// their owner reads or writes or that enter CLOSE_WAIT. Only the
    /// CLOSE_WAIT dwell is timed, and counted in the kernel's histogram
    /// (the summary of CLOSE_WAIT sockets closed during the run): no record.
    pub const LEAKS: SetStateShape = SetStateShape {
        lean_socks: 1,
        sock_details: 1,
        timed_states: 1 << (TcpState::CloseWait as u32),
        hist_by: HistBy::State as u32,
        ..NONE
    };
    /// `--closewait-leaks --hist --timewait`: the three reporting analyses
    /// in one process, the shape an always-on run takes.
    pub const COMBINED: SetStateShape = LEAKS.union(HIST).union(TIMEWAIT);
}

/// The `inet_sock_set_state` variants compiled with a fixed shape, by
/// program name (the eBPF object checks at compile time that each
/// variant's name is the one listed here for its shape).
pub const SET_STATE_VARIANTS: [(&str, SetStateShape); 5] = [
    ("inet_sock_set_state_stream", shapes::STREAM),
    ("inet_sock_set_state_hist", shapes::HIST),
    ("inet_sock_set_state_timewait", shapes::TIMEWAIT),
    ("inet_sock_set_state_leaks", shapes::LEAKS),
    ("inet_sock_set_state_combined", shapes::COMBINED),
];

/// The generic `inet_sock_set_state` program: every setting from `CONFIG`.
pub const SET_STATE_GENERIC: &str = "inet_sock_set_state";

/// The program to attach to `inet_sock_set_state` for `c`: the variant
/// compiled with `c`'s shape, else the generic one.
#[must_use]
pub fn set_state_program(c: &Config) -> &'static str {
    let shape = SetStateShape::of(c);
    SET_STATE_VARIANTS
        .iter()
        .find(|(_, s)| *s == shape)
        .map_or(SET_STATE_GENERIC, |(name, _)| name)
}

/// Byte equality of two strings, usable in constants.
#[must_use]
pub const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
