//! The kernel/user ABI of tcptrace: `#[repr(C)]` records that cross the BPF ring
//! buffer and maps, the start-up configuration passed as a global, and the pure
//! per-socket tracking rules that both sides run.
//!
//! Layouts are explicit: no `bool`, no implicit padding, sizes pinned by
//! `const` assertions so that a change on one side fails the build of both.
#![no_std]

pub mod config;
pub mod record;
pub mod track;

#[cfg(feature = "user")]
pub mod user;

pub use config::{Config, TpOffsets};
pub use record::{
    Addrs, Counter, Header, Owner, RecordKind, ResetEvent, SockInfo, StateEvent, AF_INET,
    AF_INET6, COMM_LEN, DWELL_UNKNOWN, NUM_COUNTERS, RST_RECEIVED, RST_SENT,
};
pub use track::{OwnerSource, TcpState};
