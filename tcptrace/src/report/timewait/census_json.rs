//! The `timewait_report` JSON line (`docs/schema/timewait_report.json`):
//! one namespace's census, sysctls, failures and advice.

use std::time::Duration;

use serde::Serialize;

use super::{
    CensusReport,
    json::{JsonDest, JsonPort, json_port, ns},
};
use crate::{
    model::{sysctl::Sysctls, timewait::advice::Advice},
    report::json::{Endpoint, VERSION, report_kind},
};

/// The sysctls: numbers, or null when unreadable; durations in ns.
#[derive(Serialize)]
struct JsonSysctls<'a> {
    ip_local_port_range: Option<[u16; 2]>,
    ip_local_reserved_ports: Option<&'a [(u16, u16)]>,
    usable_ports: Option<u32>,
    tcp_tw_reuse: Option<u32>,
    tcp_tw_reuse_delay_ns: Option<u64>,
    tcp_timestamps: Option<u32>,
    tcp_max_tw_buckets: Option<u64>,
    tcp_fin_timeout_ns: Option<u64>,
    /// Null: not on this kernel (Linux 4.12 removed it).
    tcp_tw_recycle: Option<u32>,
    unreadable: Vec<String>,
}

fn sysctls_json(s: &Sysctls) -> JsonSysctls<'_> {
    JsonSysctls {
        ip_local_port_range: s.port_range.as_ref().ok().map(|&(a, b)| [a, b]),
        ip_local_reserved_ports: s.reserved_ports.as_ref().ok().map(Vec::as_slice),
        usable_ports: s.usable_ports(),
        tcp_tw_reuse: s.tw_reuse.as_ref().ok().copied(),
        tcp_tw_reuse_delay_ns: (s.tw_reuse_delay_ms.as_ref())
            .and_then(|r| r.as_ref().ok())
            .map(|&ms| ns(Duration::from_millis(u64::from(ms)))),
        tcp_timestamps: s.timestamps.as_ref().ok().copied(),
        tcp_max_tw_buckets: s.max_tw_buckets.as_ref().ok().copied(),
        tcp_fin_timeout_ns: (s.fin_timeout_s.as_ref().ok())
            .map(|&secs| ns(Duration::from_secs(u64::from(secs)))),
        tcp_tw_recycle: s.tw_recycle,
        unreadable: s.unreadable(),
    }
}

/// The census report of one namespace.
#[derive(Serialize)]
pub struct JsonCensus<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    report: &'static str,
    time: String,
    netns: Option<u32>,
    time_wait: u64,
    fin_wait2_orphans: u64,
    entered: u64,
    expired: u64,
    killed_early: u64,
    killed_by_reuse: u64,
    never_seen: u64,
    overflow: Option<u64>,
    sysctls: JsonSysctls<'a>,
    destinations: Vec<JsonDest<'a>>,
    local_ports: Vec<JsonPort<'a>>,
    failures: JsonFailures<'a>,
    forgotten_groups: u64,
    advice: &'a [Advice],
}

#[derive(Serialize)]
struct JsonFailures<'a> {
    bind: Vec<JsonBindGroup<'a>>,
    connect: Vec<JsonConnectGroup<'a>>,
    /// Why failed calls are not caught, when they are not.
    unavailable: Option<&'a str>,
    unexplained: u64,
    forgotten: u64,
}

/// Failed `bind()`s of one process on one port.
#[derive(Serialize)]
struct JsonBindGroup<'a> {
    pid: u32,
    comm: &'a str,
    local: Endpoint,
    count: u64,
    time_wait: u64,
}

/// Failed `connect()`s of one process to one destination.
#[derive(Serialize)]
struct JsonConnectGroup<'a> {
    pid: u32,
    comm: &'a str,
    remote: Endpoint,
    count: u64,
}

impl<'a> CensusReport<'a> {
    /// The report as one JSON object.
    #[must_use]
    pub fn json(&self) -> JsonCensus<'a> {
        let (snap, t) = (self.snap, self.tracker);
        JsonCensus {
            v: VERSION,
            kind: "timewait_report",
            report: report_kind(self.final_report),
            time: self.times.time(self.now_ns),
            netns: self.netns.map(|n| n.0),
            time_wait: snap.time_wait,
            fin_wait2_orphans: snap.fin_wait2,
            entered: t.entered,
            expired: t.expired,
            killed_early: t.killed_early,
            killed_by_reuse: t.killed_by_reuse,
            never_seen: t.never_seen,
            overflow: self.overflow,
            sysctls: sysctls_json(self.sysctls),
            destinations: (snap.destinations.iter())
                .map(|g| self.times.json_dest(g))
                .collect(),
            local_ports: snap.local_ports.iter().map(json_port).collect(),
            failures: JsonFailures {
                bind: (self.binds.iter())
                    .map(|b| JsonBindGroup {
                        pid: b.pid,
                        comm: &b.comm,
                        local: Endpoint::port(b.port),
                        count: b.count,
                        time_wait: b.time_wait,
                    })
                    .collect(),
                connect: (self.connects.iter())
                    .map(|c| JsonConnectGroup {
                        pid: c.pid,
                        comm: &c.comm,
                        remote: Endpoint::new(c.dest.0, c.dest.1),
                        count: c.count,
                    })
                    .collect(),
                unavailable: self.failures_unavailable,
                unexplained: self.forgotten.unexplained,
                forgotten: self.forgotten.failures,
            },
            forgotten_groups: self.forgotten.groups,
            advice: self.advice,
        }
    }
}
