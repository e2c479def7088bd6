//! Tracepoint field offsets, read from tracefs `format` files at start-up
//! (they change between kernels, e.g. `tcp_send_reset` in 6.10), and the
//! standard layouts that programs may read directly.

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
