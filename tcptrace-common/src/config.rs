//! Start-up configuration that userspace writes into the eBPF object's
//! read-only `CONFIG` global before load: tracepoint field offsets read from
//! tracefs `format` files (they change between kernels, e.g. `tcp_send_reset`
//! in 6.10) and the cheap in-kernel filters.

use crate::ports::{self, PortLists, Ports};

/// Field offsets of `sock:inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetStateOffsets {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

/// Field offsets of `tcp:tcp_send_reset`, in one of two layouts
/// ([`SendResetOffsets::layout`]): since 6.10, `reason` and 28-byte
/// sockaddrs in `saddr`/`daddr`; before, the `tcp_event_sk_skb` class's
/// split fields (4-byte `saddr`/`daddr`, `saddr_v6`/`daddr_v6`, ports and
/// family) and no reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendResetOffsets {
    pub skaddr: u32,
    pub state: u32,
    pub reason: u32,
    pub saddr: u32,
    pub daddr: u32,
    /// [`SEND_RESET_SOCKADDR`] or [`SEND_RESET_SPLIT`].
    pub layout: u32,
    /// The split layout's fields (0 in the sockaddr layout).
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    pub _pad: u32,
}

/// `SendResetOffsets::layout`: the 6.10+ layout.
pub const SEND_RESET_SOCKADDR: u32 = 0;
/// `SendResetOffsets::layout`: the layout before 6.10.
pub const SEND_RESET_SPLIT: u32 = 1;

/// Field offsets of `tcp:tcp_receive_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveResetOffsets {
    pub skaddr: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    pub sock_cookie: u32,
    pub _pad: u32,
}

/// Field offsets of `sock:sock_recv_length` and `sock:sock_send_length`
/// (the two share one layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLengthOffsets {
    pub sk: u32,
    pub family: u32,
    pub protocol: u32,
    pub ret: u32,
}

impl SetStateOffsets {
    /// The layout of every kernel since 4.16 (when the tracepoint gained
    /// `protocol`), this one included.
    pub const STANDARD: Self = Self {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        family: 28,
        protocol: 30,
        saddr: 32,
        daddr: 36,
        saddr_v6: 40,
        daddr_v6: 56,
    };
}

impl SockLengthOffsets {
    /// The layout since the tracepoints appeared (6.3).
    pub const STANDARD: Self = Self {
        sk: 8,
        family: 16,
        protocol: 18,
        ret: 20,
    };
}

/// `skaddr` of `tcp:tcp_destroy_sock` in every layout so far.
pub const DESTROY_SKADDR_STANDARD: u32 = 8;

/// `Config::direct_ctx` bit: `inet_sock_set_state` has
/// [`SetStateOffsets::STANDARD`].
pub const DIRECT_SET_STATE: u8 = 1;
/// `Config::direct_ctx` bit: `sock_recv_length` and `sock_send_length` have
/// [`SockLengthOffsets::STANDARD`].
pub const DIRECT_SOCK_LENGTH: u8 = 2;
/// `Config::direct_ctx` bit: `tcp_destroy_sock` has `skaddr` at
/// [`DESTROY_SKADDR_STANDARD`].
pub const DIRECT_DESTROY: u8 = 4;

/// Every tracepoint layout the eBPF programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TpOffsets {
    pub set_state: SetStateOffsets,
    pub send_reset: SendResetOffsets,
    pub receive_reset: ReceiveResetOffsets,
    pub recv_length: SockLengthOffsets,
    pub send_length: SockLengthOffsets,
    /// `skaddr` of `tcp:tcp_destroy_sock`.
    pub destroy_skaddr: u32,
    /// `ret` of `syscalls:sys_exit_bind` and `sys_exit_connect` (one layout);
    /// 0 when those tracepoints are not used.
    pub sys_exit_ret: u32,
}

impl TpOffsets {
    /// The `DIRECT_*` bits of the layouts that match the standard ones: the
    /// eBPF programs compiled for those layouts skip the record copy. Other
    /// layouts still work, through the copy at the offsets read here.
    #[must_use]
    pub fn direct_ctx(&self) -> u8 {
        let mut bits = 0;
        if self.set_state == SetStateOffsets::STANDARD {
            bits |= DIRECT_SET_STATE;
        }
        if self.recv_length == SockLengthOffsets::STANDARD
            && self.send_length == SockLengthOffsets::STANDARD
        {
            bits |= DIRECT_SOCK_LENGTH;
        }
        if self.destroy_skaddr == DESTROY_SKADDR_STANDARD {
            bits |= DIRECT_DESTROY;
        }
        bits
    }
}

/// Where the kernel keeps a network namespace's inode, from its BTF:
/// `*(u64 *)(sk + sk_net)` is a socket's `struct net *`, `*(u32 *)(net +
/// net_inum)` that namespace's `ns.inum`; `*(u64 *)(task + task_nsproxy)`
/// and `*(u64 *)(nsproxy + nsproxy_net)` lead from a task to its
/// `struct net *`. All zero when unknown: records then carry netns 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsOffsets {
    pub sk_net: u32,
    pub net_inum: u32,
    pub task_nsproxy: u32,
    pub nsproxy_net: u32,
}

impl NetnsOffsets {
    /// Whether the offsets were found (a socket's `struct net *` is never
    /// at offset 0 of `struct sock`).
    #[must_use]
    pub const fn known(&self) -> bool {
        self.sk_net != 0
    }
}

/// `Config::families` bit for IPv4.
pub const FAMILY_V4: u32 = 1;
/// `Config::families` bit for IPv6.
pub const FAMILY_V6: u32 = 2;

/// The `CONFIG` global. An empty port list means "any".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: TpOffsets,
    /// Where namespace inodes are; see [`NetnsOffsets`].
    pub netns: NetnsOffsets,
    /// `--netns`: only this namespace's sockets and callers, checked
    /// before any map work; 0: every namespace.
    pub netns_filter: u32,
    pub _pad: u32,
    /// `FAMILY_V4 | FAMILY_V6` bits; 0 is treated as both.
    pub families: u32,
    /// `--port`, `--lport`, `--rport`: see [`accepts`].
    pub ports: PortLists,
    /// 1: emit reset records.
    pub emit_resets: u8,
    /// 1: capture user stacks at first touch and at EOF (leak mode).
    pub capture_stacks: u8,
    /// 1: emit `bind()` EADDRINUSE and `connect()` EADDRNOTAVAIL failures
    /// (`--timewait`).
    pub emit_failures: u8,
    /// `DIRECT_*` bits: which tracepoints have the standard layout, so that
    /// their programs load fields straight from the context at constant
    /// offsets instead of copying the record through a helper first.
    pub direct_ctx: u8,
    /// 1: keep sockets in the lean store (`LEAN_TABLE` and `LEAN`,
    /// [`crate::LeanSock`]): state, entry time and the owner's pid and tid
    /// only. For modes that read nothing else from the socket store.
    pub lean_socks: u8,
    /// 1: `sock_recv_length`/`sock_send_length` are attached, so their
    /// per-CPU cache of (socket, process) pairs must be invalidated when a
    /// socket goes or changes owner. Without them that work is skipped.
    pub io_hooks: u8,
    /// Emit a state record for `old -> new` when bit `1 << old` is set.
    /// Modes that aggregate elsewhere ask for few or none.
    pub emit_old_states: u32,
    /// A [`HistBy`] value; 0: no in-kernel histograms.
    pub hist_by: u32,
    /// Wake the ring buffer's reader only once this many bytes wait; 0: on
    /// every record the reader has not caught up with (the kernel's default).
    /// A wakeup costs the kernel an `irq_work` (about a microsecond, far more
    /// than the record); userspace drains on a timer as well.
    pub wakeup_bytes: u32,
    /// Buckets of the lean socket table minus one (a power of two minus
    /// one; [`crate::table`]); used with `lean_socks`.
    pub lean_table_mask: u32,
    /// With `lean_socks`: an owner transition into a state whose bit
    /// `1 << new` is set notes the thread's comm in the comm cache
    /// ([`crate::comms`]), where userspace looks up the owner of the mode's
    /// logged records (`--timewait`: `close()`, into FIN_WAIT1, names the
    /// closer of the TIME_WAIT entry's record).
    pub noted_new_states: u32,
    /// 1 (with `lean_socks`, leak mode): sockets that see their owner's
    /// recv/send or enter CLOSE_WAIT also get a [`crate::SockInfo`] in
    /// `SOCKS`: owner with comm, first-touch and EOF stacks, EOF time, and
    /// state, entry time and endpoints from CLOSE_WAIT entry on. Only
    /// transitions into and out of CLOSE_WAIT touch it.
    pub sock_details: u32,
    /// Read the clock at a transition into or out of a state whose bit is
    /// set (and for every record): the dwell of the other states is not
    /// timed (unknown), which saves a clock read on transitions that no
    /// report needs (a clock read costs about what the kernel's accounting
    /// of an empty program does: the calibration rows of
    /// docs/benchmarks.md). [`ALL_STATES`] for dwell everywhere.
    pub timed_states: u32,
    /// Append a state record for `old -> new` to this CPU's log
    /// (`CPU_LOG`, [`crate::cpulog`]) when bit `1 << old` is set: records
    /// that userspace reads in batches (`--timewait`'s TIME_WAIT entries),
    /// without the ring buffer's cost per record.
    pub log_old_states: u32,
    /// With `hist_by` [`HistBy::State`]: a dwell at least this long also
    /// counts in [`crate::Counter::LongDwells`] (leak mode: CLOSE_WAIT
    /// exits past `--min-age`, the leaks that ended); 0: not counted.
    pub long_dwell_ns: u64,
}

/// What in-kernel dwell histograms are split by (`Config::hist_by`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistBy {
    Off = 0,
    /// One histogram per state.
    State = 1,
    LocalPort = 2,
    RemotePort = 3,
    RemoteAddr = 4,
    Comm = 5,
    /// The socket's network namespace inode (4 bytes); userspace also
    /// names each namespace's container from it.
    Netns = 6,
}

/// Every TCP state's bit: `emit_old_states` that emits every transition,
/// `timed_states` that times every dwell.
pub const ALL_STATES: u32 = 0x1ffe;

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

const _: () = assert!(core::mem::size_of::<SetStateOffsets>() == 44);
const _: () = assert!(core::mem::size_of::<TpOffsets>() == 172);
const _: () = assert!(core::mem::size_of::<Config>() == 304);

/// The family and port filters: whether a socket with this family and these
/// ports passes. `family` is `AF_INET` or `AF_INET6`; anything else fails.
/// Zero `families` and empty lists mean "any"; else one of `port` must be
/// the local or the remote port, one of `lport_filter` the local port and
/// one of `rport_filter` the remote port ([`ports::matches`]).
#[inline(always)]
#[must_use]
pub fn accepts(
    families: u32,
    port: &impl Ports,
    lport_filter: &impl Ports,
    rport_filter: &impl Ports,
    family: u16,
    lport: u16,
    rport: u16,
) -> bool {
    let bit = match family {
        crate::AF_INET => FAMILY_V4,
        crate::AF_INET6 => FAMILY_V6,
        _ => return false,
    };
    if families != 0 && families & bit == 0 {
        return false;
    }
    ports::matches(port, lport, rport)
        && ports::matches(lport_filter, lport, lport)
        && ports::matches(rport_filter, rport, rport)
}

impl Config {
    /// [`accepts`] with this configuration's filters.
    #[inline(always)]
    #[must_use]
    pub fn accepts(&self, family: u16, lport: u16, rport: u16) -> bool {
        let p = &self.ports;
        accepts(
            self.families,
            &p.port,
            &p.lport,
            &p.rport,
            family,
            lport,
            rport,
        )
    }
}

/// Key of the in-kernel `HIST` map: one counter per (state, bucket, group).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HistKey {
    /// The state whose dwell was measured (the old state of a transition).
    pub state: u32,
    /// A [`crate::hist::slot`] bucket, or [`crate::hist::MAX_SLOT`] for the
    /// maximum.
    pub slot: u32,
    /// The split value: port (2 bytes), address (16) or comm (16); zeros when
    /// not split.
    pub group: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<HistKey>() == 24);

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::ports::PortList;

    #[test]
    fn each_shape_picks_its_variant_and_anything_else_the_generic_program() {
        for (name, shape) in SET_STATE_VARIANTS {
            let c = shape.apply(Config {
                emit_resets: 1,
                ports: PortLists {
                    port: PortList::new(&[80]).unwrap(),
                    ..PortLists::ANY
                },
                ..Config::default()
            });
            assert_eq!(SetStateShape::of(&c), shape);
            assert_eq!(set_state_program(&c), name);
            // One setting off the shape: the generic program.
            let off = Config {
                noted_new_states: c.noted_new_states ^ 1 << 3,
                ..c
            };
            assert_eq!(set_state_program(&off), SET_STATE_GENERIC, "{name}");
        }
        let names: std::vec::Vec<_> = SET_STATE_VARIANTS.iter().map(|v| v.0).collect();
        let shapes: std::vec::Vec<_> = SET_STATE_VARIANTS.iter().map(|v| v.1).collect();
        for (i, s) in shapes.iter().enumerate() {
            assert!(!shapes[..i].contains(s), "two variants of one shape");
            // The kernel keeps 15 bytes of a name: the variants all read as
            // the tracepoint's (the benchmarks count them as one).
            assert!(names[i].starts_with(SET_STATE_GENERIC));
        }
    }

    #[test]
    fn const_str_eq_compares_bytes() {
        assert!(const_str_eq("inet_sock_set_state", "inet_sock_set_state"));
        assert!(!const_str_eq("inet_sock_set_state", "inet_sock_set_stat"));
        assert!(!const_str_eq("abc", "abd"));
        assert!(const_str_eq("", ""));
    }

    fn standard() -> TpOffsets {
        TpOffsets {
            set_state: SetStateOffsets::STANDARD,
            recv_length: SockLengthOffsets::STANDARD,
            send_length: SockLengthOffsets::STANDARD,
            destroy_skaddr: DESTROY_SKADDR_STANDARD,
            ..TpOffsets::default()
        }
    }

    #[test]
    fn standard_layouts_are_read_directly() {
        assert_eq!(
            standard().direct_ctx(),
            DIRECT_SET_STATE | DIRECT_SOCK_LENGTH | DIRECT_DESTROY
        );
    }

    #[test]
    fn any_moved_field_falls_back_to_the_copy_for_that_tracepoint_only() {
        let mut o = standard();
        o.set_state.protocol = 32;
        assert_eq!(o.direct_ctx(), DIRECT_SOCK_LENGTH | DIRECT_DESTROY);
        let mut o = standard();
        o.send_length.ret = 24;
        assert_eq!(o.direct_ctx(), DIRECT_SET_STATE | DIRECT_DESTROY);
        let mut o = standard();
        o.destroy_skaddr = 16;
        assert_eq!(o.direct_ctx(), DIRECT_SET_STATE | DIRECT_SOCK_LENGTH);
        assert_eq!(TpOffsets::default().direct_ctx(), 0);
    }

    #[test]
    fn standard_offsets_suit_aligned_context_loads() {
        // The verifier refuses a context load whose offset is not a multiple
        // of its size: the direct path loads each field at its own size, and
        // the IPv6 addresses as two 8-byte halves.
        let s = SetStateOffsets::STANDARD;
        assert_eq!(s.skaddr % 8, 0);
        for f in [s.oldstate, s.newstate, s.saddr, s.daddr] {
            assert_eq!(f % 4, 0);
        }
        for f in [s.sport, s.dport, s.family, s.protocol] {
            assert_eq!(f % 2, 0);
        }
        assert_eq!((s.saddr_v6 % 8, s.daddr_v6 % 8), (0, 0));
        let l = SockLengthOffsets::STANDARD;
        assert_eq!((l.sk % 8, l.protocol % 2, l.ret % 4), (0, 0, 0));
        assert_eq!(DESTROY_SKADDR_STANDARD % 8, 0);
    }
}
