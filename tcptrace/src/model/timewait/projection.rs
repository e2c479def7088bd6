//! Where port use is heading: the rate of new TIME_WAIT sockets, and a
//! projection of the ports in use to one destination over the next minute.

use std::collections::VecDeque;

const NS: u64 = 1_000_000_000;
/// The rate of new TIME_WAIT sockets is measured over this many seconds.
pub const RATE_WINDOW_S: u64 = 10;

/// New TIME_WAIT sockets per second over the last [`RATE_WINDOW_S`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Rate {
    /// (second, count), oldest first.
    buckets: VecDeque<(u64, u64)>,
    first_ns: u64,
}

impl Rate {
    pub(crate) fn add(&mut self, ts_ns: u64) {
        let sec = ts_ns / NS;
        if self.buckets.is_empty() {
            self.first_ns = ts_ns;
        }
        match self.buckets.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.buckets.push_back((sec, 1)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| *s + RATE_WINDOW_S <= sec)
        {
            self.buckets.pop_front();
        }
    }

    /// Per second, over the window or the time since the first entry if
    /// shorter (at least one second, so a burst is not inflated).
    pub(crate) fn per_sec(&self, now_ns: u64) -> f64 {
        let this_second = now_ns / NS;
        let n: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s + RATE_WINDOW_S > this_second)
            .map(|(_, n)| n)
            .sum();
        let span_ns = now_ns
            .saturating_sub(self.first_ns)
            .clamp(NS, RATE_WINDOW_S * NS);
        #[expect(clippy::cast_precision_loss, reason = "counts and ns fit easily")]
        let r = n as f64 * NS as f64 / span_ns as f64;
        r
    }
}

/// Where port use is heading for one destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// Usable ports (`ip_local_port_range` minus reserved); None if unknown.
    pub usable: Option<u32>,
    /// Ports to this destination in use now: TIME_WAIT plus live sockets.
    pub in_use: u64,
    /// Ports in use once the current rate has run for a TIME_WAIT lifetime
    /// (or for the reuse delay, when `tcp_tw_reuse` applies).
    pub projected: u64,
    /// Whether `tcp_tw_reuse` lets `connect()` take this destination's TIME_WAIT
    /// ports (after the reuse delay).
    pub reuse: bool,
    /// Seconds until no port is left, when that is where it is heading.
    pub eta_s: Option<f64>,
    /// The most new connections per second this destination sustains.
    pub ceiling_per_s: Option<f64>,
    pub exhaustion: bool,
}

/// How far ahead [`project`] looks: one TIME_WAIT lifetime.
const HORIZON_S: f64 = 60.0;
/// Its time step.
const STEP_S: f64 = 0.1;

/// Project port use over the next minute. `remaining_s` are the seconds
/// until each TIME_WAIT port to the destination is free again (its timer,
/// or sooner when `tcp_tw_reuse` applies), `live` the live sockets holding
/// ports, and `rate` new TIME_WAIT sockets per second, each holding its port
/// for `hold_s`. Ports in use at t = live + old ones not yet free + new ones
/// made in the last `hold_s`.
#[must_use]
pub fn project(
    remaining_s: &[f64],
    live: u64,
    rate: f64,
    usable: Option<u32>,
    hold_s: f64,
    reuse: bool,
) -> Projection {
    let mut remaining = remaining_s.to_vec();
    remaining.sort_by(f64::total_cmp);
    let in_use = live + remaining.len() as u64;
    let mut projected = in_use;
    let mut eta_s = None;
    let u = usable.map(u64::from);
    if u.is_some_and(|u| in_use >= u) {
        eta_s = Some(0.0);
    }
    // 600 steps of 100 ms.
    let steps = 600u32;
    debug_assert!((f64::from(steps) * STEP_S - HORIZON_S).abs() < 1e-9);
    for i in 1..=steps {
        let t = f64::from(i) * STEP_S;
        let freed = remaining.partition_point(|r| *r <= t) as u64;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive rate times seconds"
        )]
        let new = (rate * t.min(hold_s)).floor() as u64;
        let pop = live + (remaining.len() as u64 - freed) + new;
        projected = projected.max(pop);
        if eta_s.is_none() && u.is_some_and(|u| pop >= u) {
            eta_s = Some(t);
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "port counts")]
    let ceiling_per_s = u.map(|u| u.saturating_sub(live) as f64 / hold_s);
    Projection {
        usable,
        in_use,
        projected: u.map_or(projected, |u| projected.min(u)),
        reuse,
        eta_s,
        ceiling_per_s,
        exhaustion: eta_s.is_some(),
    }
}
