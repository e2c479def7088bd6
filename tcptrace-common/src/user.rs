//! Userspace-only glue: `aya::Pod` for the records that cross maps and
//! globals, [`Plain`] for decoders, and checked conversions from raw values.

use crate::{
    Config, LeanSock, RecordKind, ResetEvent, SockInfo, StateEvent,
    record::{Header, Owner},
};

// SAFETY: each type is `#[repr(C)]`, `Copy`, built only from integers and
// integer arrays, and has no implicit padding (sizes are pinned by const
// asserts in `record.rs` and `config/`), so every bit pattern is valid.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for SockInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for LeanSock {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::table::LeanBucket {}
// SAFETY: as above.
unsafe impl aya::Pod for StateEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::StateLine {}
// SAFETY: repr(C), a StateEvent and a u64, no implicit padding (size asserted).
unsafe impl aya::Pod for crate::PaddedStateEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for ResetEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for Header {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::FailureEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::StackRef {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::HistKey {}

/// A record that may be read from raw bytes: `#[repr(C)]`, `Copy`, no
/// padding, and valid for any bit pattern. Every `aya::Pod` is one; the
/// name lets code that decodes records do without aya.
///
/// # Safety
/// Implement it only for such types (the blanket impl covers `aya::Pod`).
pub unsafe trait Plain: Copy {}

// SAFETY: `aya::Pod` makes the same promise.
unsafe impl<T: aya::Pod> Plain for T {}

/// A record kind this build does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownKind(pub u32);

impl TryFrom<u32> for RecordKind {
    type Error = UnknownKind;

    fn try_from(v: u32) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(RecordKind::State),
            2 => Ok(RecordKind::Reset),
            3 => Ok(RecordKind::Failure),
            5 => Ok(RecordKind::StateLine),
            other => Err(UnknownKind(other)),
        }
    }
}

impl Owner {
    /// The command name up to its first NUL, lossily decoded.
    #[must_use]
    pub fn comm_lossy(&self) -> alloc_free::Comm<'_> {
        alloc_free::Comm::of(&self.comm)
    }
}

/// Helpers that stay `no_std` and allocation-free.
pub mod alloc_free {
    use core::fmt;

    /// A command name's bytes, displayed with invalid UTF-8 replaced.
    pub struct Comm<'a>(pub &'a [u8]);

    impl<'a> Comm<'a> {
        /// The name in a kernel comm buffer: its bytes up to the first NUL.
        #[must_use]
        pub fn of(comm: &'a [u8]) -> Self {
            let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
            Comm(&comm[..end])
        }
    }

    impl fmt::Display for Comm<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for chunk in self.0.utf8_chunks() {
                f.write_str(chunk.valid())?;
                if !chunk.invalid().is_empty() {
                    f.write_str("\u{FFFD}")?;
                }
            }
            Ok(())
        }
    }
}
