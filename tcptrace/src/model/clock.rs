//! Kernel timestamps (`bpf_ktime_get_ns()`, `CLOCK_MONOTONIC`) to wall-clock
//! time, from one sample of both clocks taken at start-up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Converts monotonic nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero, in ns since the epoch.
    epoch_at_boot_ns: i128,
}

impl Clock {
    /// A clock whose monotonic zero is `epoch_at_boot_ns` after the epoch.
    #[must_use]
    pub fn fixed(epoch_at_boot_ns: i128) -> Self {
        Self { epoch_at_boot_ns }
    }

    /// The wall-clock time of monotonic `mono_ns`; the epoch for a time
    /// before it.
    #[must_use]
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = self.epoch_at_boot_ns + i128::from(mono_ns);
        let ns = u64::try_from(ns).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}
