//! Start-up configuration that userspace writes into the eBPF object's
//! read-only `CONFIG` global before load: tracepoint field offsets read from
//! tracefs `format` files (they change between kernels, e.g. `tcp_send_reset`
//! in 6.10) and the cheap in-kernel filters.

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

/// Field offsets of `tcp:tcp_send_reset` (6.10+ layout: 28-byte sockaddrs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendResetOffsets {
    pub skaddr: u32,
    pub state: u32,
    pub reason: u32,
    pub saddr: u32,
    pub daddr: u32,
}

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

/// `Config::families` bit for IPv4.
pub const FAMILY_V4: u32 = 1;
/// `Config::families` bit for IPv6.
pub const FAMILY_V6: u32 = 2;

/// The `CONFIG` global. Zero ports mean "any".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: TpOffsets,
    /// `FAMILY_V4 | FAMILY_V6` bits; 0 is treated as both.
    pub families: u32,
    /// Either endpoint's port must match.
    pub port: u16,
    /// The local port must match.
    pub lport: u16,
    /// The remote port must match.
    pub rport: u16,
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
    /// With `lean_socks`: records out of a state whose bit `1 << old` is set
    /// name their owner. They are full [`crate::StateEvent`]s whose comm
    /// comes from the comm cache ([`crate::comms`]); records out of other
    /// states are [`crate::LeanStateEvent`]s (`--timewait` names the
    /// closers of TIME_WAIT entries).
    pub named_old_states: u32,
    /// With `lean_socks`: an owner transition into a state whose bit
    /// `1 << new` is set notes the thread's comm in the comm cache
    /// (`--timewait`: `close()`, into FIN_WAIT1).
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
    /// report of the mode needs (on these VMs as dear as the kernel's
    /// accounting of an empty program: the calibration rows of
    /// docs/benchmarks.md). [`ALL_STATES`] for dwell everywhere.
    pub timed_states: u32,
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
}

/// Every TCP state's bit: `emit_old_states` that emits every transition,
/// `timed_states` that times every dwell.
pub const ALL_STATES: u32 = 0x1ffe;

const _: () = assert!(core::mem::size_of::<SetStateOffsets>() == 44);
const _: () = assert!(core::mem::size_of::<TpOffsets>() == 144);
const _: () = assert!(core::mem::size_of::<Config>() == 200);

/// The family and port filters: whether a socket with this family and these
/// ports passes. `family` is `AF_INET` or `AF_INET6`; anything else fails.
/// Zero ports and zero `families` mean "any".
#[inline(always)]
#[must_use]
pub fn accepts(
    families: u32,
    port: u16,
    lport_filter: u16,
    rport_filter: u16,
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
    if port != 0 && port != lport && port != rport {
        return false;
    }
    if lport_filter != 0 && lport_filter != lport {
        return false;
    }
    rport_filter == 0 || rport_filter == rport
}

impl Config {
    /// [`accepts`] with this configuration's filters.
    #[inline(always)]
    #[must_use]
    pub fn accepts(&self, family: u16, lport: u16, rport: u16) -> bool {
        accepts(
            self.families,
            self.port,
            self.lport,
            self.rport,
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
    use super::*;

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
