//! Prometheus `/metrics`, encoded by prometheus-client (the text exposition
//! format is theirs, not ours). The analyses that export metrics refresh a
//! [`Snapshot`]; a custom collector encodes it on each scrape, so the
//! kernel's pre-bucketed histograms are exported as they are.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tcptrace_common::hist;

use crate::model::{histogram::Hist, netns::Netns};

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
    pub by: Option<&'static str>,
    /// (state, group, histogram of dwell).
    pub dwell: Vec<(String, Option<String>, Hist)>,
    /// (old, new, count).
    pub transitions: Vec<(&'static str, &'static str, u64)>,
    /// (direction, reason, count).
    pub resets: Vec<(&'static str, String, u64)>,
    pub close_wait: u64,
    /// Each namespace's timewait sockets.
    pub timewait: Vec<TimewaitCounts>,
    pub ringbuf_full: u64,
    pub evictions: u64,
    pub insert_failures: u64,
    pub read_errors: u64,
    /// Dwells the full `--by` histogram map could not count.
    pub hist_full: u64,
    /// The last leak report's groups, by owner: `--closewait-leaks`.
    pub leaks: Vec<LeakGauge>,
}

/// Sockets one owner leaves in CLOSE_WAIT past `--min-age`, in one
/// namespace, at the last leak report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeakGauge {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub netns: Option<u32>,
    pub container: Option<String>,
    pub sockets: u64,
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

/// `key="value"`, and `netns="INODE"` when namespaces are followed.
fn netns_labels(
    key: &'static str,
    value: &str,
    netns: Option<Netns>,
) -> Vec<(&'static str, String)> {
    let mut labels = vec![(key, value.to_owned())];
    if let Some(ns) = netns {
        labels.push(("netns", ns.to_string()));
    }
    labels
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = self.0.lock() else {
            return Ok(());
        };
        {
            let mut m = enc.encode_descriptor(
                "tcptrace_state_dwell_seconds",
                "Time TCP sockets spent in each state (kernel log-linear buckets; sum from bucket midpoints)",
                None,
                MetricType::Histogram,
            )?;
            for (state, group, h) in &s.dwell {
                let (sum, buckets) = prom_buckets(h);
                let mut labels = vec![("state", state.clone())];
                if let (Some(by), Some(g)) = (s.by, group) {
                    labels.push((by, g.clone()));
                }
                m.encode_family(&labels)?
                    .encode_histogram::<Vec<(&str, String)>>(sum, h.count(), &buckets, None)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tcptrace_transitions",
                "TCP state transitions seen by inet_sock_set_state",
                None,
                MetricType::Counter,
            )?;
            for (old, new, n) in &s.transitions {
                let labels = [("from", *old), ("to", *new)];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tcptrace_resets",
                "TCP RSTs sent and received",
                None,
                MetricType::Counter,
            )?;
            for (dir, reason, n) in &s.resets {
                let labels = [("direction", (*dir).to_owned()), ("reason", reason.clone())];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tcptrace_sockets",
                "Sockets now in CLOSE_WAIT (tracked, all namespaces) and in TIME_WAIT / orphaned FIN_WAIT2 (timewait sockets, by network namespace)",
                None,
                MetricType::Gauge,
            )?;
            let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            gauge(s.close_wait).encode(m.encode_family(&[("state", "CLOSE_WAIT".to_owned())])?)?;
            for t in &s.timewait {
                for (state, n) in [
                    ("TIME_WAIT", t.time_wait),
                    ("FIN_WAIT2_ORPHAN", t.fin_wait2_orphans),
                ] {
                    gauge(n).encode(m.encode_family(&netns_labels("state", state, t.netns))?)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tcptrace_timewait_sockets",
                "Timewait sockets by network namespace and fate, as sock_diag polls see them: entered, expired, killed early (reuse or RST)",
                None,
                MetricType::Counter,
            )?;
            for t in &s.timewait {
                for (event, n) in [
                    ("entered", t.entered),
                    ("expired", t.expired),
                    ("killed_early", t.killed_early),
                ] {
                    ConstCounter::new(n)
                        .encode(m.encode_family(&netns_labels("event", event, t.netns))?)?;
                }
            }
        }
        encode_leaks(&s.leaks, &mut enc)?;
        let mut m = enc.encode_descriptor(
            "tcptrace_lost_events",
            "Records or sockets tcptrace lost",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in [
            ("ringbuf_full", s.ringbuf_full),
            ("socket_map_eviction", s.evictions),
            ("socket_map_insert_failure", s.insert_failures),
            ("field_read_error", s.read_errors),
            ("histogram_map_full", s.hist_full),
        ] {
            ConstCounter::new(n).encode(m.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}

/// `tcptrace_closewait_leaking_sockets`, when leak mode has reported.
fn encode_leaks(leaks: &[LeakGauge], enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if leaks.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(
        "tcptrace_closewait_leaking_sockets",
        "Sockets left in CLOSE_WAIT past --min-age at the last leak report, by owner, network namespace and container",
        None,
        MetricType::Gauge,
    )?;
    for g in leaks {
        let text = |v: Option<String>| v.unwrap_or_default();
        let labels = [
            ("pid", text(g.pid.map(|p| p.to_string()))),
            ("comm", text(g.comm.clone())),
            ("netns", text(g.netns.map(|n| n.to_string()))),
            ("container", text(g.container.clone())),
        ];
        ConstGauge::new(i64::try_from(g.sockets).unwrap_or(i64::MAX))
            .encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encode the snapshot as the Prometheus text format. prometheus-client
/// escapes label values (`\\`, `\"`, `\n`), so a comm under `--by comm`
/// cannot break the page or forge a sample.
pub fn render(snapshot: &Arc<Mutex<Snapshot>>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(Arc::clone(snapshot))));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_conventional_names_and_values() {
        let mut h = Hist::default();
        for _ in 0..50 {
            h.add(200_000_000);
        }
        let snap = Arc::new(Mutex::new(Snapshot {
            dwell: vec![("CLOSE_WAIT".into(), None, h)],
            transitions: vec![("ESTABLISHED", "CLOSE_WAIT", 50)],
            resets: vec![("sent", "TCP_STATE".into(), 2)],
            close_wait: 4,
            timewait: vec![
                TimewaitCounts {
                    netns: Some(Netns(4_026_531_840)),
                    time_wait: 7,
                    entered: 9,
                    ..TimewaitCounts::default()
                },
                TimewaitCounts {
                    netns: Some(Netns(4_026_532_001)),
                    time_wait: 2,
                    ..TimewaitCounts::default()
                },
            ],
            ringbuf_full: 1,
            hist_full: 3,
            ..Snapshot::default()
        }));
        let text = render(&snap).unwrap();
        assert!(
            text.contains("tcptrace_state_dwell_seconds_count{state=\"CLOSE_WAIT\"} 50"),
            "{text}"
        );
        assert!(
            text.contains(
                "tcptrace_state_dwell_seconds_bucket{le=\"+Inf\",state=\"CLOSE_WAIT\"} 50"
            ) || text.contains(
                "tcptrace_state_dwell_seconds_bucket{state=\"CLOSE_WAIT\",le=\"+Inf\"} 50"
            ),
            "{text}"
        );
        assert!(
            text.contains("tcptrace_transitions_total{from=\"ESTABLISHED\",to=\"CLOSE_WAIT\"} 50"),
            "{text}"
        );
        assert!(
            text.contains("tcptrace_resets_total{direction=\"sent\",reason=\"TCP_STATE\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tcptrace_sockets{state=\"CLOSE_WAIT\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("tcptrace_sockets{state=\"TIME_WAIT\",netns=\"4026531840\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("tcptrace_sockets{state=\"TIME_WAIT\",netns=\"4026532001\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "tcptrace_timewait_sockets_total{event=\"entered\",netns=\"4026531840\"} 9"
            ),
            "{text}"
        );
        assert!(
            text.contains("tcptrace_lost_events_total{reason=\"ringbuf_full\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tcptrace_lost_events_total{reason=\"histogram_map_full\"} 3"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn leaks_are_labelled_by_owner_namespace_and_container() {
        let empty = render(&Arc::new(Mutex::new(Snapshot::default()))).unwrap();
        assert!(
            !empty.contains("tcptrace_closewait_leaking_sockets"),
            "{empty}"
        );
        let snap = Arc::new(Mutex::new(Snapshot {
            leaks: vec![LeakGauge {
                pid: Some(42),
                comm: Some("le\"aky".into()),
                netns: Some(4_026_532_281),
                container: Some("0123abcd".into()),
                sockets: 5,
            }],
            ..Snapshot::default()
        }));
        let text = render(&snap).unwrap();
        assert!(
            text.contains(
                "tcptrace_closewait_leaking_sockets{pid=\"42\",comm=\"le\\\"aky\",\
                 netns=\"4026532281\",container=\"0123abcd\"} 5"
            ),
            "{text}"
        );
    }

    #[test]
    fn buckets_are_cumulative_ready_and_complete() {
        let mut h = Hist::default();
        h.add(1_500); // 1.5 µs
        h.add(3_000_000_000_000_000); // beyond the last bound
        let (_, b) = prom_buckets(&h);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 2);
        assert!(b.last().unwrap().0.is_infinite());
        assert_eq!(b.last().unwrap().1, 1);
    }

    /// Every histogram ends in a `+Inf` bucket that holds its count, and a
    /// `--by comm` label value is escaped as the exposition format says.
    #[test]
    fn every_histogram_has_an_inf_bucket_and_label_values_are_escaped() {
        let mut h = Hist::default();
        h.add(1_500);
        h.add(3_000_000_000_000_000);
        let hostile = "\x1b[2J\n\"} 1\nfake 2\\";
        let snap = Arc::new(Mutex::new(Snapshot {
            by: Some("comm"),
            dwell: vec![
                ("CLOSE_WAIT".into(), Some(hostile.into()), h.clone()),
                ("ESTABLISHED".into(), Some("nginx".into()), h),
                ("TIME_WAIT".into(), None, Hist::default()),
            ],
            ..Snapshot::default()
        }));
        let text = render(&snap).unwrap();
        let count = |suffix: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("tcptrace_state_dwell_seconds_{suffix}")))
                .count()
        };
        assert_eq!(count("count"), 3, "{text}");
        let inf: Vec<&str> = text.lines().filter(|l| l.contains("le=\"+Inf\"")).collect();
        assert_eq!(inf.len(), 3, "{text}");
        assert!(inf[0].ends_with("} 2") && inf[2].ends_with("} 0"), "{text}");
        assert!(!text.contains("e308"), "{text}");
        assert!(
            text.contains("comm=\"\x1b[2J\\n\\\"} 1\\nfake 2\\\\\""),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("fake")), "{text}");
    }
}
