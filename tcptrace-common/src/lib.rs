//! The kernel/user ABI of tcptrace: `#[repr(C)]` records that cross the BPF ring
//! buffer and maps, the start-up configuration passed as a global, and the pure
//! per-socket tracking rules that both sides run.
//!
//! Layouts are explicit: no `bool`, no implicit padding, sizes pinned by
//! `const` assertions so that a change on one side fails the build of both.
#![no_std]
#![expect(
    clippy::inline_always,
    reason = "shared with the eBPF side, where these must be inlined into each program"
)]

pub mod comms;
pub mod config;
pub mod cpulog;
pub mod hist;
pub mod ports;
pub mod record;
pub mod stack_path;
pub mod table;
pub mod track;

#[cfg(feature = "user")]
pub mod user;

pub use config::{Config, HistBy, HistKey, TpOffsets};
pub use record::{
    AF_INET, AF_INET6, Addrs, COMM_LEN, Counter, DWELL_UNKNOWN, EADDRINUSE, EADDRNOTAVAIL,
    FailureEvent, Header, LEAN_TID_FROM_IO, LeanSock, NUM_COUNTERS, Owner, PaddedStateEvent,
    RESET_REASON_NONE, RST_RECEIVED, RST_SENT, RecordKind, ResetEvent, SPILLED_STACK, STACK_DEPTH,
    SYSCALL_BIND, SYSCALL_CONNECT, SockInfo, StackLocation, StackRef, StateEvent, StateLine,
    spill_key, stack_hash,
};
pub use track::{OwnerSource, TcpState};
