//! Start-up configuration that userspace writes into the eBPF object's
//! read-only `CONFIG` global before load: tracepoint field offsets read from
//! tracefs `format` files (they change between kernels, e.g. `tcp_send_reset`
//! in 6.10) and the cheap in-kernel filters.

use crate::ports::{self, PortLists, Ports};

mod offsets;
mod variants;

pub use offsets::*;
pub use variants::*;

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
