//! The `--timewait` JSON lines `bind_failure`, `connect_failure` and
//! `projection` (`docs/schema/`), and the destination and local-port
//! objects they and `timewait_report` ([`super::census_json`]) hold.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;
use tcptrace_common::TcpState;

use super::{Times, projection_text};
use crate::{
    model::{
        event::Failure,
        netns::Netns,
        socket::DiagSocket,
        timewait::census::{DestGroup, PortGroup},
    },
    report::json::{Endpoint, VERSION},
};

pub(super) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Seconds as whole nanoseconds; None for a negative or non-finite value.
fn secs_ns(s: f64) -> Option<u64> {
    Duration::try_from_secs_f64(s).ok().map(ns)
}

#[derive(Serialize)]
struct JsonProjection {
    usable_ports: Option<u32>,
    in_use: u64,
    projected: u64,
    tw_reuse: bool,
    exhaustion: bool,
    eta_ns: Option<u64>,
    ceiling_per_s: Option<f64>,
    text: String,
}

#[derive(Serialize)]
struct JsonCloser<'a> {
    pid: u32,
    comm: &'a str,
    count: u64,
}

fn json_closers(c: &[(u32, String, u64)]) -> Vec<JsonCloser<'_>> {
    c.iter()
        .map(|(pid, comm, count)| JsonCloser {
            pid: *pid,
            comm,
            count: *count,
        })
        .collect()
}

/// One destination of the client side: local address (ports aggregated)
/// to remote address and port.
#[derive(Serialize)]
pub struct JsonDest<'a> {
    side: &'static str,
    local: Endpoint,
    remote: Endpoint,
    time_wait: u64,
    fin_wait2_orphans: u64,
    live: u64,
    rate_per_s: f64,
    closers: Vec<JsonCloser<'a>>,
    projection: JsonProjection,
    exhaustion_projected_time: Option<String>,
    exhaustion_projected_ts_ns: Option<u64>,
}

/// One local port of the server side.
#[derive(Serialize)]
pub(super) struct JsonPort<'a> {
    side: &'static str,
    local: Endpoint,
    time_wait: u64,
    fin_wait2_orphans: u64,
    rate_per_s: f64,
    listening: bool,
    closers: Vec<JsonCloser<'a>>,
}

pub(super) fn json_port(g: &PortGroup) -> JsonPort<'_> {
    JsonPort {
        side: "server",
        local: Endpoint::port(g.lport),
        time_wait: g.time_wait,
        fin_wait2_orphans: g.fin_wait2,
        rate_per_s: g.rate_per_s,
        listening: g.listening,
        closers: json_closers(&g.closers),
    }
}

/// The keys every failure line starts with.
#[derive(Serialize)]
struct JsonFailure<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_ns: u64,
    /// The caller's namespace; null when namespaces are not followed.
    netns: Option<u32>,
    errno: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    fd: u32,
}

/// A failed `bind()`: the endpoint asked for and what held it.
#[derive(Serialize)]
pub struct JsonBindFailure<'a> {
    #[serde(flatten)]
    failure: JsonFailure<'a>,
    local: Endpoint,
    holders: JsonHolders,
}

#[derive(Serialize)]
struct JsonHolders {
    time_wait: u64,
    fin_wait2_orphans: u64,
    live: Vec<JsonLive>,
}

/// A live socket on the port, and the process that holds it.
#[derive(Serialize)]
struct JsonLive {
    state: Option<&'static str>,
    local: Endpoint,
    remote: Endpoint,
    pid: Option<u32>,
    comm: Option<String>,
}

/// A failed `connect()`: the destination and its census.
#[derive(Serialize)]
pub struct JsonConnectFailure<'a> {
    #[serde(flatten)]
    failure: JsonFailure<'a>,
    remote: Endpoint,
    census: Vec<JsonDest<'a>>,
}

/// A destination newly heading for exhaustion.
#[derive(Serialize)]
pub struct JsonProjectionLine<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_ns: u64,
    netns: Option<u32>,
    destination: JsonDest<'a>,
}

impl Times {
    /// A destination of the client side.
    #[must_use]
    pub fn json_dest<'a>(&self, g: &'a DestGroup) -> JsonDest<'a> {
        let p = &g.projection;
        JsonDest {
            side: "client",
            local: Endpoint::addr(g.key.0),
            remote: Endpoint::new(g.key.1, g.key.2),
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
                eta_ns: p.eta_s.and_then(secs_ns),
                ceiling_per_s: p.ceiling_per_s,
                text: projection_text(g),
            },
            exhaustion_projected_time: g.exhaustion_projected_ns.map(|t| self.time(t)),
            exhaustion_projected_ts_ns: g.exhaustion_projected_ns,
        }
    }

    fn failure<'a>(
        &self,
        kind: &'static str,
        f: &'a Failure,
        netns: Option<Netns>,
    ) -> JsonFailure<'a> {
        JsonFailure {
            v: VERSION,
            kind,
            time: self.time(f.ts_ns),
            ts_ns: f.ts_ns,
            netns: netns.map(|n| n.0),
            errno: f.call.errno(),
            pid: f.owner.pid,
            tid: f.owner.tid,
            comm: &f.owner.comm,
            fd: f.fd,
        }
    }

    /// A failed `bind()` of `addr:port` in the caller's namespace `netns`
    /// (None when namespaces are not followed), and what held its port:
    /// the timewait sockets and the live ones with their holders (`holder`
    /// of a live socket).
    #[must_use]
    pub fn bind_failure_json<'a>(
        &self,
        f: &'a Failure,
        netns: Option<Netns>,
        (addr, port): (IpAddr, u16),
        (time_wait, fin_wait2): (u64, u64),
        live: &[DiagSocket],
        holder: impl Fn(&DiagSocket) -> Option<(u32, String)>,
    ) -> JsonBindFailure<'a> {
        let live = live
            .iter()
            .map(|s| {
                let h = holder(s);
                JsonLive {
                    state: s.state.map(TcpState::name),
                    local: Endpoint::new(s.local, s.lport),
                    remote: Endpoint::new(s.remote, s.rport),
                    pid: h.as_ref().map(|h| h.0),
                    comm: h.map(|h| h.1),
                }
            })
            .collect();
        JsonBindFailure {
            failure: self.failure("bind_failure", f, netns),
            local: Endpoint::new(addr, port),
            holders: JsonHolders {
                time_wait,
                fin_wait2_orphans: fin_wait2,
                live,
            },
        }
    }

    /// A failed `connect()` to `dest:port` with the census of that
    /// destination.
    #[must_use]
    pub fn connect_failure_json<'a>(
        &self,
        f: &'a Failure,
        netns: Option<Netns>,
        (dest, port): (IpAddr, u16),
        groups: &[&'a DestGroup],
    ) -> JsonConnectFailure<'a> {
        JsonConnectFailure {
            failure: self.failure("connect_failure", f, netns),
            remote: Endpoint::new(dest, port),
            census: groups.iter().map(|g| self.json_dest(g)).collect(),
        }
    }

    /// A destination of namespace `netns` newly heading for exhaustion, at
    /// `now_ns`.
    #[must_use]
    pub fn projection_json<'a>(
        &self,
        g: &'a DestGroup,
        now_ns: u64,
        netns: Option<Netns>,
    ) -> JsonProjectionLine<'a> {
        JsonProjectionLine {
            v: VERSION,
            kind: "projection",
            time: self.time(now_ns),
            ts_ns: now_ns,
            netns: netns.map(|n| n.0),
            destination: self.json_dest(g),
        }
    }
}
