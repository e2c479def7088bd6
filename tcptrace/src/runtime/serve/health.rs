//! `/healthz`: whether the programs are attached and the event loop still
//! drains the rings. The event loop stores the time of each drain in a
//! [`Health`]; the HTTP thread reads it.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::kernel::clock::monotonic_ns;

/// Past this long without a drain, `/healthz` answers 503: the event loop
/// drains at least every second while it serves metrics (the timewait poll's
/// period), so this is a loop that is stuck, not one that is idle.
pub const STALE: Duration = Duration::from_secs(10);

/// What `/healthz` reports, shared by the event loop (which writes) and
/// the HTTP server (which reads).
#[derive(Debug)]
pub struct Health {
    /// Programs attached at start-up (they stay attached until exit).
    programs: usize,
    /// `CLOCK_MONOTONIC` of the last drain, in ns (start-up before the
    /// first).
    last_drain_ns: AtomicU64,
}

impl Health {
    /// `programs` attached, drained as of now.
    #[must_use]
    pub fn new(programs: usize) -> Self {
        Self {
            programs,
            last_drain_ns: AtomicU64::new(monotonic_ns()),
        }
    }

    /// The event loop has just drained the rings.
    pub fn drained(&self) {
        self.last_drain_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    /// Healthy or not at `now_ns` (`CLOCK_MONOTONIC`), and the text that
    /// says why, e.g. `ok: 14 programs attached, events drained 0.2 s ago`.
    #[must_use]
    pub fn check(&self, now_ns: u64) -> (bool, String) {
        let ago =
            Duration::from_nanos(now_ns.saturating_sub(self.last_drain_ns.load(Ordering::Relaxed)));
        let programs = match self.programs {
            1 => "1 program attached".to_owned(),
            n => format!("{n} programs attached"),
        };
        let secs = ago.as_secs_f64();
        if ago > STALE {
            let limit = STALE.as_secs();
            let text = format!(
                "stale: {programs}, but events last drained {secs:.1} s ago (more than {limit} s)\n"
            );
            (false, text)
        } else {
            (
                true,
                format!("ok: {programs}, events drained {secs:.1} s ago\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_until_the_loop_has_not_drained_for_stale() {
        let h = Health::new(14);
        let at = h.last_drain_ns.load(Ordering::Relaxed);
        let (ok, text) = h.check(at + 200_000_000);
        assert!(ok);
        assert_eq!(text, "ok: 14 programs attached, events drained 0.2 s ago\n");
        let (ok, text) = h.check(at + 12_300_000_000);
        assert!(!ok);
        assert_eq!(
            text,
            "stale: 14 programs attached, but events last drained 12.3 s ago (more than 10 s)\n"
        );
        h.drained();
        let (ok, _) = h.check(monotonic_ns());
        assert!(ok, "a drain makes it healthy again");
    }

    #[test]
    fn one_program_and_a_clock_before_the_drain() {
        let h = Health::new(1);
        let (ok, text) = h.check(0);
        assert!(ok);
        assert_eq!(text, "ok: 1 program attached, events drained 0.0 s ago\n");
    }
}
