//! The kernel's clock: `bpf_ktime_get_ns()` is `CLOCK_MONOTONIC`, so
//! userspace reads the same clock to compare with record timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::clock::Clock;

/// `CLOCK_MONOTONIC` now, in ns: the clock of `bpf_ktime_get_ns()`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// A [`Clock`] from both clocks sampled now.
#[must_use]
pub fn wall_clock() -> Clock {
    let mono = i128::from(monotonic_ns());
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
    Clock::fixed(wall - mono)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_is_the_kernels() {
        // bpf_ktime_get_ns() and CLOCK_MONOTONIC agree: boot-relative, so
        // far below the epoch's nanoseconds, and moving forward.
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && a <= b && b < 1_000_000_000 * 86_400 * 365 * 50);
    }
}
