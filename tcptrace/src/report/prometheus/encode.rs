//! The collector that writes a [`Snapshot`] as metric families. Names
//! follow Prometheus's conventions: base units (`_seconds`), `_total` on
//! counters (prometheus-client adds it), `_info` for the build.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{Snapshot, prom_buckets};
use crate::model::netns::Netns;

type Labels = Vec<(&'static str, String)>;

fn int(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `netns="INODE"` when namespaces are followed.
fn with_netns(mut labels: Labels, netns: Option<Netns>) -> Labels {
    if let Some(ns) = netns {
        labels.push(("netns", ns.to_string()));
    }
    labels
}

/// One gauge family of `series`, skipped when there are none.
fn gauges<V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Send + Sync>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, ConstGauge<V>)>,
) -> Result<(), std::fmt::Error> {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, g) in series {
        g.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One counter family of `series`, skipped when there are none.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, n) in series {
        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Debug)]
pub(super) struct SnapshotCollector(pub(super) Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = self.0.lock() else {
            return Ok(());
        };
        let enc = &mut enc;
        gauges(
            enc,
            "tcptrace_build_info",
            "tcptrace's version and the kernel it runs on",
            [(
                vec![
                    ("version", s.build.version.clone()),
                    ("kernel", s.build.kernel.clone()),
                ],
                int(1),
            )],
        )?;
        dwell(&s, enc)?;
        counters(
            enc,
            "tcptrace_transitions",
            "TCP state transitions seen by inet_sock_set_state",
            (s.transitions.iter())
                .map(|(o, n, c)| (vec![("from", (*o).to_owned()), ("to", (*n).to_owned())], *c)),
        )?;
        counters(
            enc,
            "tcptrace_resets",
            "TCP RSTs sent and received, by the kernel's reason",
            (s.resets.iter()).map(|(d, r, n)| {
                (
                    vec![("direction", (*d).to_owned()), ("reason", r.clone())],
                    *n,
                )
            }),
        )?;
        let close_wait =
            (s.close_wait.iter()).map(|n| (vec![("state", "CLOSE_WAIT".to_owned())], int(*n)));
        let timewait = s.timewait.iter().flat_map(|t| {
            [
                ("TIME_WAIT", t.time_wait),
                ("FIN_WAIT2_ORPHAN", t.fin_wait2_orphans),
            ]
            .map(|(state, n)| {
                (
                    with_netns(vec![("state", state.to_owned())], t.netns),
                    int(n),
                )
            })
        });
        gauges(
            enc,
            "tcptrace_sockets",
            "Sockets now in CLOSE_WAIT (tracked, all namespaces) and in TIME_WAIT / orphaned FIN_WAIT2 (timewait sockets, by network namespace)",
            close_wait.chain(timewait),
        )?;
        counters(
            enc,
            "tcptrace_timewait_sockets",
            "Timewait sockets by network namespace and fate, as sock_diag polls see them: entered, expired, killed early (reuse or RST)",
            s.timewait.iter().flat_map(|t| {
                [
                    ("entered", t.entered),
                    ("expired", t.expired),
                    ("killed_early", t.killed_early),
                ]
                .map(|(event, n)| (with_netns(vec![("event", event.to_owned())], t.netns), n))
            }),
        )?;
        leaks(&s, enc)?;
        destinations(&s, enc)?;
        counters(
            enc,
            "tcptrace_socket_call_failures",
            "bind() and connect() calls that failed for want of a port, by errno and the port or destination asked for (--top, then other)",
            s.failures.iter().map(|f| {
                let labels = vec![
                    ("call", f.call.to_owned()),
                    ("errno", f.errno.to_owned()),
                    ("target", f.target.clone()),
                ];
                (with_netns(labels, f.netns), f.count)
            }),
        )?;
        counters(
            enc,
            "tcptrace_lost_events",
            "Records, sockets, requests and program runs tcptrace lost: every counter of the exit summary's loss line",
            (s.losses.iter()).map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n)),
        )?;
        counters(
            enc,
            "tcptrace_untracked_transitions",
            "Transitions of sockets older than the tracer or evicted from the socket map (no dwell, maybe no owner)",
            s.untracked.map(|n| (Vec::new(), n)),
        )
    }
}

fn dwell(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if s.dwell.is_empty() {
        return Ok(());
    }
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
            .encode_histogram::<Labels>(sum, h.count(), &buckets, None)?;
    }
    Ok(())
}

fn leaks(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let labels = |g: &super::LeakGauge| {
        vec![
            ("comm", g.comm.clone()),
            ("container", g.container.clone().unwrap_or_default()),
            ("netns", g.netns.map(|n| n.to_string()).unwrap_or_default()),
        ]
    };
    gauges(
        enc,
        "tcptrace_closewait_leaked_sockets",
        "Sockets left in CLOSE_WAIT past --min-age at the last leak report, by process, container and network namespace (--top, then other)",
        s.leaks.iter().map(|g| (labels(g), int(g.sockets))),
    )?;
    gauges(
        enc,
        "tcptrace_closewait_oldest_leak_seconds",
        "Age of the oldest of those sockets in CLOSE_WAIT",
        s.leaks
            .iter()
            .map(|g| (labels(g), ConstGauge::new(g.oldest_s))),
    )
}

fn destinations(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let labels =
        |d: &super::DestGauge| with_netns(vec![("destination", d.destination.clone())], d.netns);
    let d = &s.destinations;
    gauges(
        enc,
        "tcptrace_timewait_destination_sockets",
        "TIME_WAIT sockets to each destination (the client side's ephemeral ports), at the last census (--top, then other)",
        d.iter().map(|d| (labels(d), int(d.time_wait))),
    )?;
    gauges(
        enc,
        "tcptrace_timewait_destination_entries_per_second",
        "New TIME_WAIT sockets per second to each destination, over the census's window",
        d.iter().map(|d| (labels(d), ConstGauge::new(d.rate_per_s))),
    )?;
    gauges(
        enc,
        "tcptrace_timewait_destination_usable_ports",
        "Ephemeral ports a destination may use (ip_local_port_range less reserved ports)",
        (d.iter()).filter_map(|d| Some((labels(d), int(u64::from(d.usable_ports?))))),
    )?;
    gauges(
        enc,
        "tcptrace_timewait_destination_exhaustion_seconds",
        "Projected seconds until a destination's ports run out at the present rate (only while projected)",
        (d.iter()).filter_map(|d| Some((labels(d), ConstGauge::new(d.exhaustion_s?)))),
    )
}
