//! Records that cross the ring buffer, the per-socket map value and the loss
//! counters. Every ring-buffer record starts with a [`Header`].

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// `TASK_COMM_LEN` in the kernel.
pub const COMM_LEN: usize = 16;
/// `dwell_ns` when the time the socket entered its old state is unknown (the
/// socket predates the tracer, or its map entry was evicted).
pub const DWELL_UNKNOWN: u64 = u64::MAX;

/// `ResetEvent::direction` values.
pub const RST_SENT: u32 = 1;
pub const RST_RECEIVED: u32 = 2;

/// Stable record kinds. Userspace decodes them with `TryFrom<u32>`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    State = 1,
    Reset = 2,
    Failure = 3,
    // 4 was a lean state record (endpoints and pid), for `--timewait`'s
    // connects; retired with them.
    /// A [`StateLine`]: an IPv4 transition in one cache line.
    StateLine = 5,
}

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// A [`RecordKind`] value.
    pub kind: u32,
    /// The network namespace's inode (`ls -l /proc/PID/ns/net`): the
    /// socket's, or the caller's for a failed syscall. 0 when unknown: the
    /// kernel has no BTF to find it with, or a RST answered a segment for
    /// which no socket exists.
    pub netns: u32,
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC`.
    pub ts_ns: u64,
}

/// The process that owns a socket, recorded only from process context.
/// `tgid == 0` means unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
}

/// Endpoints in host byte order for ports; IPv4 addresses use the first four
/// bytes of `saddr`/`daddr`. `s*` is the local side, `d*` the remote side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addrs {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// One `inet_sock_set_state` transition of a TCP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateEvent {
    pub header: Header,
    /// Kernel address of the `struct sock`: the socket's identity while it lives.
    pub skaddr: u64,
    /// Time spent in `old_state`, or [`DWELL_UNKNOWN`].
    pub dwell_ns: u64,
    pub owner: Owner,
    pub addrs: Addrs,
    pub old_state: u32,
    pub new_state: u32,
    /// An [`crate::OwnerSource`] value.
    pub owner_source: u32,
    pub _pad: u32,
}

/// One `inet_sock_set_state` transition of an IPv4 socket, the stream's
/// common record: 56 bytes, so that with the ring buffer's 8-byte record
/// header it fills exactly one cache line. A record costs the kernel mostly
/// the cache lines it moves from the CPU that writes it to the CPU that
/// reads it, and the 112-byte [`StateEvent`] took two or three
/// (docs/benchmarks.md). It carries no comm: userspace names the owner
/// from the comm cache ([`crate::comms`]) by `tgid` and `tid`. IPv6
/// transitions, whose addresses do not fit, stay [`StateEvent`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateLine {
    pub header: Header,
    /// As in [`StateEvent`].
    pub skaddr: u64,
    /// As in [`StateEvent`].
    pub dwell_ns: u64,
    /// The owner; `tgid` 0 when unknown.
    pub tgid: u32,
    pub tid: u32,
    /// Host order; `s*` is the local side, `d*` the remote side.
    pub sport: u16,
    pub dport: u16,
    /// Network order, as in [`Addrs`].
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub old_state: u8,
    pub new_state: u8,
    /// An [`crate::OwnerSource`] value.
    pub owner_source: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<StateLine>() + 8 == 64);

/// A [`StateEvent`] (an IPv6 transition) in one of the stream's per-CPU
/// state rings: padded to 120 bytes so that with the ring buffer's 8-byte
/// record header it fills exactly two cache lines, and the one-line
/// [`StateLine`] records after it in the ring stay on line boundaries
/// (unpadded, each would straddle two lines until the next IPv6 record).
/// Userspace decodes it as a [`StateEvent`], whose bytes come first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaddedStateEvent {
    pub event: StateEvent,
    pub _pad: u64,
}

const _: () = assert!(core::mem::size_of::<PaddedStateEvent>() + 8 == 2 * 64);

/// One RST sent (`tcp_send_reset`) or received (`tcp_receive_reset`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetEvent {
    pub header: Header,
    /// 0 when the kernel answered a segment for which no socket exists.
    pub skaddr: u64,
    /// `sock_cookie` of `tcp_receive_reset`; 0 where the tracepoint has none.
    pub cookie: u64,
    pub owner: Owner,
    pub addrs: Addrs,
    /// [`RST_SENT`] or [`RST_RECEIVED`].
    pub direction: u32,
    /// TCP state of the socket, 0 when there is none.
    pub state: u32,
    /// `enum sk_rst_reason` for sent resets; its names come from tracefs.
    /// [`RESET_REASON_NONE`] where the kernel gives none (before 6.10).
    pub reason: u32,
    /// An [`crate::OwnerSource`] value.
    pub owner_source: u32,
}

/// `FailureEvent::syscall` values.
pub const SYSCALL_BIND: u32 = 1;
pub const SYSCALL_CONNECT: u32 = 2;
/// The errnos tcptrace reports (asm-generic/errno.h), positive.
pub const EADDRINUSE: i32 = 98;
pub const EADDRNOTAVAIL: i32 = 99;

/// A `bind()` that failed with EADDRINUSE or a `connect()` that failed with
/// EADDRNOTAVAIL, from the syscall exit tracepoints, in the caller's context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureEvent {
    pub header: Header,
    /// The caller (always known: syscalls run in process context).
    pub owner: Owner,
    /// [`SYSCALL_BIND`] or [`SYSCALL_CONNECT`].
    pub syscall: u32,
    /// The syscall's return value, a negative errno.
    pub ret: i32,
    /// The socket's file descriptor in the caller.
    pub fd: u32,
    /// From the caller's sockaddr: `AF_INET`, `AF_INET6`, or 0 if unreadable.
    pub family: u16,
    /// Host order: the port asked to bind, or the destination port.
    pub port: u16,
    /// The address asked to bind, or the destination; v4 in the first four
    /// bytes.
    pub addr: [u8; 16],
}

/// Frames a captured stack holds: the kernel's `PERF_MAX_STACK_DEPTH`, the
/// depth of a `STACKS` entry.
pub const STACK_DEPTH: usize = 127;

/// [`StackRef::id_plus_one`] bit: the stack is in the `STACK_SPILL` hash map
/// under this key (bit included), not in `STACKS`.
///
/// `STACKS` (`bpf_get_stackid`) has one bucket per entry, indexed by a hash
/// of the stack, and refuses a stack whose bucket holds another (`EEXIST`):
/// with k distinct code paths in `n` buckets about k²/2n of them would lose
/// their stack. Those go to `STACK_SPILL` instead, a hash map keyed by the
/// stack's own [`stack_hash`], which chains and has no such collisions.
pub const SPILLED_STACK: u32 = 1 << 31;

/// FNV-1a's 64-bit offset basis and prime, for [`stack_hash`].
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash of a stack's frames (FNV-1a over whole addresses), up to the
/// first zero: the kernel zero-fills what follows the last frame. The eBPF
/// side keys `STACK_SPILL` with it.
#[inline(always)]
#[must_use]
pub fn stack_hash(ips: &[u64]) -> u64 {
    ips.iter()
        .take_while(|&&ip| ip != 0)
        .fold(FNV_OFFSET, |h, &ip| (h ^ ip).wrapping_mul(FNV_PRIME))
}

/// The `STACK_SPILL` key of a stack with hash `hash`: 31 bits of it folded,
/// with [`SPILLED_STACK`] set. Two stacks share a key with probability about
/// k²/2³² for k spilled stacks; the second then reads as the first.
#[inline(always)]
#[must_use]
pub const fn spill_key(hash: u64) -> u32 {
    #[expect(clippy::cast_possible_truncation, reason = "folded to 32 bits")]
    let folded = (hash ^ (hash >> 32)) as u32;
    SPILLED_STACK | (folded & !SPILLED_STACK)
}

/// `ResetEvent::reason` of a sent reset on a kernel whose
/// `tcp_send_reset` has no reason (before 6.10).
pub const RESET_REASON_NONE: u32 = u32::MAX;

/// A user stack captured in process context: where a socket's owner was
/// when something happened to the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackRef {
    /// `bpf_get_stackid` id + 1 in the `STACKS` map, or a `STACK_SPILL` key
    /// (with [`SPILLED_STACK`] set); 0 means none captured.
    pub id_plus_one: u32,
    /// The process whose address space the stack belongs to.
    pub tgid: u32,
    /// The word at the user stack pointer saved at syscall entry. When the
    /// syscall wrapper is a frameless leaf (glibc's `recv`, `read`), this is
    /// the return address into its caller, the frame a frame-pointer walk
    /// skips. 0 if unreadable. Userspace decides whether to splice it in.
    pub sp_word: u64,
}

/// Where a [`StackRef`]'s frames are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackLocation {
    /// This id of the `STACKS` stack-trace map.
    Stacks(u32),
    /// This key of the `STACK_SPILL` hash map.
    Spill(u32),
}

impl StackRef {
    #[must_use]
    pub const fn is_some(&self) -> bool {
        self.id_plus_one != 0
    }

    /// Where the frames are; None if no stack was captured.
    #[must_use]
    pub const fn location(&self) -> Option<StackLocation> {
        if self.id_plus_one == 0 {
            None
        } else if self.id_plus_one & SPILLED_STACK != 0 {
            Some(StackLocation::Spill(self.id_plus_one))
        } else {
            Some(StackLocation::Stacks(self.id_plus_one - 1))
        }
    }
}

/// A socket's entry in the lean socket table and map ([`crate::table`],
/// `LEAN`), used instead of [`SockInfo`] by modes that need no stacks or
/// addresses from it and take comms from the comm cache
/// ([`crate::comms`]): the stream, `--hist` without `--by comm`, and
/// `--timewait`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeanSock {
    /// Current TCP state.
    pub state: u32,
    /// The owner's process and thread, from owner transitions (and, in the
    /// stream, from the owner's recv/send); 0 if unknown.
    pub tgid: u32,
    /// The owner's thread id, with [`LEAN_TID_FROM_IO`] set when the owner
    /// was taken from its recv/send rather than from a system call that
    /// changed the socket's state: [`LeanSock::owner`] splits the two.
    pub tid: u32,
    /// In a table slot, [`crate::table::seal`] over the slot; 0 in the map.
    pub seal: u32,
    /// When `state` was entered (`CLOCK_MONOTONIC` ns).
    pub entered_ns: u64,
}

const _: () = assert!(core::mem::size_of::<LeanSock>() == 24);

/// [`LeanSock::tid`] bit: the owner comes from its recv/send
/// ([`crate::OwnerSource::Io`]). Thread ids stay below the kernel's
/// `PID_MAX_LIMIT` (2^22), so the bit is free; it saves the entry a field
/// (two entries fill a cache line of the lean table).
pub const LEAN_TID_FROM_IO: u32 = 1 << 31;

/// Value of the per-socket LRU map, keyed by socket address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    /// Current TCP state.
    pub state: u32,
    /// An [`crate::OwnerSource`] value.
    pub owner_source: u32,
    /// When `state` was entered (`CLOCK_MONOTONIC` ns); 0 if unknown.
    pub entered_ns: u64,
    pub owner: Owner,
    /// When the owner's recv first returned 0 (EOF); 0 if it never did.
    pub eof_ns: u64,
    /// Where the owner read EOF (leak mode only).
    pub eof_stack: StackRef,
    /// Where the owner first touched the socket: its first recv or send
    /// (leak mode only).
    pub first_stack: StackRef,
    /// Endpoints, recorded when the socket enters CLOSE_WAIT (family 0
    /// before): the one state whose sockets userspace reports from the map.
    pub addrs: Addrs,
    /// The socket's network namespace inode, recorded with `addrs`.
    pub netns: u32,
    pub _pad: u32,
    /// The owner's cgroup v2 id (`bpf_get_current_cgroup_id`), taken with
    /// the owner, in its process context; 0 if unknown.
    pub cgroup: u64,
}

/// Indices of the per-CPU `COUNTERS` array. Every loss is counted here.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `inet_sock_set_state` records emitted.
    StateEvents = 0,
    /// Reset records emitted.
    ResetEvents = 1,
    /// Ring-buffer reserve failures: records lost.
    RingbufFull = 2,
    /// New entries inserted in the socket map.
    SockInserts = 3,
    /// Entries removed when the kernel destroyed the socket.
    SockDeletes = 4,
    /// Socket-map insert failures.
    SockInsertErrors = 5,
    /// Transitions of sockets the map did not know: older than the tracer or
    /// evicted from the LRU map.
    SockUnknown = 6,
    /// Tracepoint field reads that failed.
    ReadErrors = 7,
    /// Stacks lost: `STACKS` and `STACK_SPILL` both refused them (full maps).
    /// A kernel thread's I/O, which has no user stack, is not counted.
    StackErrors = 8,
    /// `bind()`/`connect()` failure records emitted (`--timewait`).
    FailureEvents = 9,
    /// Dwells of at least `Config::long_dwell_ns` (leak mode: CLOSE_WAIT
    /// sockets closed after leaking longer than `--min-age`).
    LongDwells = 10,
    /// Dwells `HIST` could not count: the map was full (`--hist --by`).
    HistFull = 11,
    /// Transitions found out of order: the kernel says a socket leaves a
    /// state its entry is not in, or destroys a socket whose entry is not at
    /// CLOSE (see `track::is_gap`). A run in between was skipped.
    TransitionGaps = 12,
}

pub const NUM_COUNTERS: u32 = 13;

const _: () = assert!(core::mem::size_of::<Header>() == 16);
const _: () = assert!(core::mem::size_of::<Owner>() == 24);
const _: () = assert!(core::mem::size_of::<Addrs>() == 40);
const _: () = assert!(core::mem::size_of::<StateEvent>() == 112);
const _: () = assert!(core::mem::size_of::<ResetEvent>() == 112);
const _: () = assert!(core::mem::size_of::<StackRef>() == 16);
const _: () = assert!(core::mem::size_of::<FailureEvent>() == 72);
const _: () = assert!(core::mem::size_of::<SockInfo>() == 136);

#[cfg(test)]
mod tests;
