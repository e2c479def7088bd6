//! Prometheus `/metrics`, encoded by prometheus-client (the text exposition
//! format is theirs, not ours). The runtime and the analyses that export
//! metrics refresh a [`Snapshot`]; a custom collector ([`encode`]) encodes
//! it on each scrape, so the kernel's pre-bucketed histograms are exported
//! as they are. Label sets that traced processes choose (destinations,
//! ports, comms) arrive here already cut to `--top`
//! ([`crate::model::cardinality`]).

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use tcptrace_common::hist;

use crate::model::{histogram::Hist, netns::Netns};

mod encode;
#[cfg(test)]
mod tests;

/// One namespace's timewait sockets.
#[derive(Clone, Debug, Default)]
pub struct TimewaitCounts {
    /// The `netns` label; None (no label) when namespaces are not followed.
    pub netns: Option<Netns>,
    pub time_wait: u64,
    pub fin_wait2_orphans: u64,
    pub entered: u64,
    pub expired: u64,
    pub killed_early: u64,
}

/// What the last refresh saw.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// `tcptrace_build_info`: tcptrace's version and the kernel release.
    pub build: BuildInfo,
    pub by: Option<&'static str>,
    /// (state, group, histogram of dwell).
    pub dwell: Vec<(String, Option<String>, Hist)>,
    /// (old, new, count).
    pub transitions: Vec<(&'static str, &'static str, u64)>,
    /// (direction, reason, count).
    pub resets: Vec<(&'static str, String, u64)>,
    /// Tracked sockets now in CLOSE_WAIT, every namespace.
    pub close_wait: Option<u64>,
    /// Each namespace's timewait sockets.
    pub timewait: Vec<TimewaitCounts>,
    /// The last leak report's sockets, by owner: `--closewait-leaks`.
    pub leaks: Vec<LeakGauge>,
    /// Each destination's TIME_WAIT census: `--timewait`.
    pub destinations: Vec<DestGauge>,
    /// Failed `bind()` and `connect()` calls: `--timewait`.
    pub failures: Vec<FailureCount>,
    /// Every counter of the exit summary's loss line, by reason.
    pub losses: Vec<(&'static str, u64)>,
    /// Transitions of sockets older than the tracer or evicted.
    pub untracked: Option<u64>,
}

/// `tcptrace_build_info`'s labels.
#[derive(Clone, Debug, Default)]
pub struct BuildInfo {
    pub version: String,
    pub kernel: String,
}

/// Sockets one process (by comm) leaves in CLOSE_WAIT past `--min-age`, in
/// one namespace and container, at the last leak report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeakGauge {
    pub comm: String,
    pub netns: Option<u32>,
    pub container: Option<String>,
    pub sockets: u64,
    /// The oldest of them, in seconds.
    pub oldest_s: f64,
}

/// One destination's timewait sockets, as the last census saw them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestGauge {
    pub netns: Option<Netns>,
    /// `ADDR:PORT`, or [`crate::model::cardinality::OTHER`].
    pub destination: String,
    pub time_wait: u64,
    pub rate_per_s: f64,
    /// Ports the destination may use; None for `other`, or unreadable.
    pub usable_ports: Option<u32>,
    /// Seconds until its ports run out at the present rate, while a
    /// projection exists.
    pub exhaustion_s: Option<f64>,
}

/// Failed calls of one kind to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureCount {
    pub call: &'static str,
    pub errno: &'static str,
    pub netns: Option<Netns>,
    /// The port asked to bind, or the destination; or `other`.
    pub target: String,
    pub count: u64,
}

/// Prometheus histogram buckets: powers of two of nanoseconds, in seconds,
/// from 1 µs to ~73 min, with per-bucket counts (the encoder accumulates).
fn prom_buckets(h: &Hist) -> (f64, Vec<(f64, u64)>) {
    let bounds: Vec<u64> = (10..=42).map(|k| 1u64 << k).collect();
    let mut counts = vec![0u64; bounds.len() + 1];
    let mut sum = 0f64;
    for (&s, &c) in &h.buckets {
        let (lo, hi) = (hist::lower(s), hist::upper(s));
        #[expect(clippy::cast_precision_loss, reason = "seconds")]
        {
            sum += (lo + (hi - lo) / 2) as f64 * 1e-9 * c as f64;
        }
        // A kernel bucket lies entirely below a power-of-two bound or above.
        let i = bounds.iter().position(|b| hi <= *b).unwrap_or(bounds.len());
        counts[i] = counts[i].saturating_add(c);
    }
    #[expect(clippy::cast_precision_loss, reason = "seconds")]
    let mut out: Vec<(f64, u64)> = bounds
        .iter()
        .map(|b| *b as f64 * 1e-9)
        .zip(counts.iter().copied())
        .collect();
    // prometheus-client writes le="+Inf" for f64::INFINITY only.
    out.push((f64::INFINITY, counts[bounds.len()]));
    (sum, out)
}

/// Encode the snapshot as the Prometheus text format. prometheus-client
/// escapes label values (`\\`, `\"`, `\n`), so a comm cannot break the page
/// or forge a sample.
pub fn render(snapshot: &Arc<Mutex<Snapshot>>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(encode::SnapshotCollector(Arc::clone(snapshot))));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
