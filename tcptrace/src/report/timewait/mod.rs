//! The `--timewait` output: failure lines, projection announcements and the
//! census report, as JSON lines here and as text in [`text`].

use std::net::IpAddr;

use serde::Serialize;
use tcptrace_common::TcpState;

use crate::model::{
    clock::Clock,
    event::Failure,
    netns::Netns,
    socket::{DiagSocket, endpoint},
    sysctl::Sysctls,
    timewait::{
        advice::{Advice, BindFacts, ConnectFacts},
        census::{DestGroup, PortGroup, Snapshot},
        lives::Tracker,
    },
};

#[cfg(test)]
mod tests;
pub mod text;

/// Times of the report's lines.
#[derive(Clone, Copy, Debug)]
pub struct Times(pub Clock);

impl Times {
    /// RFC 3339 with microseconds.
    #[must_use]
    pub fn time(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.0.wall(mono_ns)).to_string()
    }

    /// `16:05:27.123456`.
    #[must_use]
    pub fn clock_of(&self, mono_ns: u64) -> String {
        let t = self.time(mono_ns);
        t.get(11..26).unwrap_or(&t).to_owned()
    }
}

#[derive(Serialize)]
struct JsonProjection {
    usable_ports: Option<u32>,
    in_use: u64,
    projected: u64,
    tw_reuse: bool,
    exhaustion: bool,
    eta_s: Option<f64>,
    ceiling_per_s: Option<f64>,
    text: String,
}

#[derive(Serialize)]
struct JsonCloser {
    pid: u32,
    comm: String,
    count: u64,
}

fn json_closers(c: &[(u32, String, u64)]) -> Vec<JsonCloser> {
    c.iter()
        .map(|(pid, comm, count)| JsonCloser {
            pid: *pid,
            comm: comm.clone(),
            count: *count,
        })
        .collect()
}

/// One destination of the client side.
#[derive(Serialize)]
pub struct JsonDest {
    side: &'static str,
    laddr: String,
    raddr: String,
    rport: u16,
    time_wait: u64,
    fin_wait2_orphans: u64,
    live: u64,
    rate_per_s: f64,
    closers: Vec<JsonCloser>,
    projection: JsonProjection,
    exhaustion_projected_at: Option<String>,
    exhaustion_projected_ns: Option<u64>,
}

#[derive(Serialize)]
struct JsonPort {
    side: &'static str,
    lport: u16,
    time_wait: u64,
    fin_wait2_orphans: u64,
    rate_per_s: f64,
    listening: bool,
    closers: Vec<JsonCloser>,
}

/// "at 40.0/s, 100 of 100 ports to 10.0.0.5:80 in use within 2.5 s:
/// exhaustion".
#[must_use]
pub fn projection_text(g: &DestGroup) -> String {
    let p = &g.projection;
    let dest = endpoint(g.key.1, g.key.2);
    let Some(usable) = p.usable else {
        return format!(
            "{} ports to {dest} in use; ip_local_port_range unreadable: no projection",
            p.in_use
        );
    };
    let reuse = if p.reuse { " (tcp_tw_reuse)" } else { "" };
    match p.eta_s {
        Some(eta) => format!(
            "at {:.1}/s, {} of {usable} ports to {dest} in use within {:.1} s: exhaustion{reuse}",
            g.rate_per_s, p.projected, eta
        ),
        None => format!(
            "at {:.1}/s, at most {} of {usable} ports to {dest} in use over the next 60 s: ok{reuse}",
            g.rate_per_s, p.projected
        ),
    }
}

impl Times {
    /// A destination of the client side.
    #[must_use]
    pub fn json_dest(&self, g: &DestGroup) -> JsonDest {
        let p = &g.projection;
        JsonDest {
            side: "client",
            laddr: g.key.0.to_string(),
            raddr: g.key.1.to_string(),
            rport: g.key.2,
            time_wait: g.time_wait,
            fin_wait2_orphans: g.fin_wait2,
            live: g.live,
            rate_per_s: g.rate_per_s,
            closers: json_closers(&g.closers),
            projection: JsonProjection {
                usable_ports: p.usable,
                in_use: p.in_use,
                projected: p.projected,
                tw_reuse: p.reuse,
                exhaustion: p.exhaustion,
                eta_s: p.eta_s,
                ceiling_per_s: p.ceiling_per_s,
                text: projection_text(g),
            },
            exhaustion_projected_at: g.exhaustion_projected_ns.map(|t| self.time(t)),
            exhaustion_projected_ns: g.exhaustion_projected_ns,
        }
    }

    /// The keys every failure line has; `netns` is the caller's namespace
    /// (null when namespaces are not followed).
    #[must_use]
    pub fn failure_json(
        &self,
        f: &Failure,
        netns: Option<Netns>,
        addr: IpAddr,
        port: u16,
    ) -> serde_json::Value {
        serde_json::json!({
            "type": "failure",
            "netns": netns.map(|n| n.0),
            "time": self.time(f.ts_ns),
            "ts_ns": f.ts_ns,
            "syscall": f.call.syscall(),
            "errno": f.call.errno(),
            "pid": f.owner.pid,
            "tid": f.owner.tid,
            "comm": f.owner.comm,
            "fd": f.fd,
            "addr": addr.to_string(),
            "port": port,
        })
    }

    /// A failed `bind()` and what held its port: the timewait sockets and
    /// the live ones with their holders (`holder` of a live socket).
    #[must_use]
    pub fn bind_failure_json(
        &self,
        f: &Failure,
        netns: Option<Netns>,
        (addr, port): (IpAddr, u16),
        (time_wait, fin_wait2): (u64, u64),
        live: &[DiagSocket],
        holder: impl Fn(&DiagSocket) -> Option<(u32, String)>,
    ) -> serde_json::Value {
        let live_json: Vec<_> = live
            .iter()
            .map(|s| {
                let h = holder(s);
                serde_json::json!({
                    "state": s.state.map(TcpState::name),
                    "local": endpoint(s.local, s.lport),
                    "remote": endpoint(s.remote, s.rport),
                    "pid": h.as_ref().map(|h| h.0),
                    "comm": h.map(|h| h.1),
                })
            })
            .collect();
        let mut v = self.failure_json(f, netns, addr, port);
        v["holders"] = serde_json::json!({
            "time_wait": time_wait,
            "fin_wait2_orphans": fin_wait2,
            "live": live_json,
        });
        v
    }

    /// A failed `connect()` with the census of its destination.
    #[must_use]
    pub fn connect_failure_json(
        &self,
        f: &Failure,
        netns: Option<Netns>,
        (dest, port): (IpAddr, u16),
        groups: &[&DestGroup],
    ) -> serde_json::Value {
        let census: Vec<JsonDest> = groups.iter().map(|g| self.json_dest(g)).collect();
        let mut v = self.failure_json(f, netns, dest, port);
        v["destination"] = endpoint(dest, port).into();
        v["census"] = serde_json::to_value(census).unwrap_or_default();
        v
    }

    /// A destination of namespace `netns` newly heading for exhaustion, at
    /// `now_ns`.
    #[must_use]
    pub fn projection_json(
        &self,
        g: &DestGroup,
        now_ns: u64,
        netns: Option<Netns>,
    ) -> serde_json::Value {
        serde_json::json!({
            "type": "projection",
            "netns": netns.map(|n| n.0),
            "time": self.time(now_ns),
            "ts_ns": now_ns,
            "destination": self.json_dest(g),
        })
    }
}

/// Everything one namespace's census report shows.
pub struct CensusReport<'a> {
    pub times: Times,
    pub now_ns: u64,
    pub final_report: bool,
    /// The namespace (null in JSON when namespaces are not followed).
    pub netns: Option<Netns>,
    /// The namespace and its `/run/netns` name, when it is not tcptrace's
    /// own: the text names it in a header line.
    pub foreign: Option<(Netns, Option<&'a str>)>,
    pub snap: &'a Snapshot,
    pub tracker: &'a Tracker,
    pub sysctls: &'a Sysctls,
    /// `tcp_max_tw_buckets` overflows since start, when readable.
    pub overflow: Option<u64>,
    pub binds: &'a [BindFacts],
    pub connects: &'a [ConnectFacts],
    pub advice: &'a [Advice],
    /// Why failed `bind()`/`connect()` calls are not caught, if they are not.
    pub failures_unavailable: Option<&'a str>,
    pub forgotten: Forgotten,
}

/// What the report no longer shows or never explained, to keep memory and
/// work bounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forgotten {
    /// Failures not explained at once: over the rate of lookups.
    pub unexplained: u64,
    /// Failure groups (pid and port, or pid and destination) dropped.
    pub failures: u64,
    /// Census destinations and ports dropped.
    pub groups: u64,
}

/// The sysctls as JSON: numbers, or null when unreadable.
fn sysctls_json(s: &Sysctls) -> serde_json::Value {
    serde_json::json!({
        "ip_local_port_range": s.port_range.as_ref().ok().map(|(a, b)| [a, b]),
        "ip_local_reserved_ports": s.reserved_ports.as_ref().ok(),
        "usable_ports": s.usable_ports(),
        "tcp_tw_reuse": s.tw_reuse.as_ref().ok(),
        "tcp_tw_reuse_delay_ms": s.tw_reuse_delay_ms.as_ref().and_then(|r| r.as_ref().ok()),
        "tcp_timestamps": s.timestamps.as_ref().ok(),
        "tcp_max_tw_buckets": s.max_tw_buckets.as_ref().ok(),
        "tcp_fin_timeout": s.fin_timeout_s.as_ref().ok(),
        "tcp_tw_recycle": s.tw_recycle,
        "unreadable": s.unreadable(),
    })
}

impl CensusReport<'_> {
    /// The report as one JSON object.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        let snap = self.snap;
        let t = self.tracker;
        serde_json::json!({
            "type": "timewait_report",
            "report": if self.final_report { "final" } else { "interval" },
            "netns": self.netns.map(|n| n.0),
            "time": self.times.time(self.now_ns),
            "time_wait": snap.time_wait,
            "fin_wait2_orphans": snap.fin_wait2,
            "entered": t.entered,
            "expired": t.expired,
            "killed_early": t.killed_early,
            "killed_by_reuse": t.killed_by_reuse,
            "never_seen": t.never_seen,
            "overflow": self.overflow,
            "sysctls": sysctls_json(self.sysctls),
            "destinations": snap.destinations.iter().map(|g| self.times.json_dest(g)).collect::<Vec<_>>(),
            "local_ports": snap.local_ports.iter().map(json_port).collect::<Vec<_>>(),
            "failures": {
                "bind": self.binds.iter().map(|b| serde_json::json!({
                    "pid": b.pid, "comm": b.comm, "port": b.port, "count": b.count,
                    "time_wait": b.time_wait,
                })).collect::<Vec<_>>(),
                "connect": self.connects.iter().map(|c| serde_json::json!({
                    "pid": c.pid, "comm": c.comm,
                    "destination": endpoint(c.dest.0, c.dest.1), "count": c.count,
                })).collect::<Vec<_>>(),
                "unavailable": self.failures_unavailable,
                "unexplained": self.forgotten.unexplained,
                "forgotten": self.forgotten.failures,
            },
            "forgotten_groups": self.forgotten.groups,
            "advice": self.advice,
        })
    }
}

fn json_port(g: &PortGroup) -> JsonPort {
    JsonPort {
        side: "server",
        lport: g.lport,
        time_wait: g.time_wait,
        fin_wait2_orphans: g.fin_wait2,
        rate_per_s: g.rate_per_s,
        listening: g.listening,
        closers: json_closers(&g.closers),
    }
}
