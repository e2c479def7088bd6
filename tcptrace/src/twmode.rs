//! `--timewait`: why a server cannot restart (`bind()` EADDRINUSE) and why
//! clients run out of ports (`connect()` EADDRNOTAVAIL).
//!
//! - Entries into TIME_WAIT come from the kernel (`FIN_WAIT2/CLOSING ->
//!   CLOSE`, with the process that closed first): the one record per
//!   connection this mode pays for, appended to a per-CPU log
//!   ([`crate::cpulog`]) that is read every [`LOG_DRAIN`], not sent
//!   through the ring buffer (which carries the failures).
//! - A 1 s sock_diag poll of timewait sockets gives the census, grouped by
//!   destination and by local port, and the projection of port use. A
//!   TIME_WAIT socket gone before its timer was killed early; it was port
//!   reuse (`tcp_tw_reuse`) when its 4-tuple entered TIME_WAIT again or a
//!   live socket holds it right after the poll (an exact sock_diag lookup).
//! - Failed `bind()`/`connect()` calls come from the syscall-exit
//!   tracepoints, in the caller's context, and are explained at once with a
//!   fresh sock_diag dump of what holds the port or the destination.
//! - Every `--interval`, and at exit, a report with advice computed from what
//!   was measured and the namespace's sysctls.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use bytes::BytesMut;
use serde::Serialize;
use tcptrace_common::{Config, TcpState};

use crate::{
    advice::{self, Advice, BindFacts, ConnectFacts},
    census::{Census, DestGroup, LiveCounts, PortGroup, Snapshot},
    cli::Cli,
    cpulog::CpuLogs,
    event::{DecodeError, Event, FailedCall, Failure, StateChange, decode, decode_state},
    histmode::{TW_POLL, timewait_overflow},
    loader::Tracer,
    output::{Clock, StdoutSink, human_duration, monotonic_ns},
    procs::{self, NetnsFilter},
    sockdiag::{self, DiagSocket},
    stop::Stop,
    stream::{End, READY, drain_when_woken, timer},
    sysctl::{self, Sysctls},
    timewait::{self, Tracker},
};

#[derive(Clone, Debug)]
pub struct TimewaitOptions {
    pub interval: Duration,
    /// Where the sysctls are read (`/proc/sys/net/ipv4`).
    pub sysctl_root: PathBuf,
}

/// How often the per-CPU log of TIME_WAIT entries is read: each CPU's log
/// holds `cpulog::SLOTS` records, so one CPU can log 40 000 entries a
/// second before any is lost.
pub const LOG_DRAIN: Duration = Duration::from_millis(50);

/// At most this many exact sock_diag lookups per poll to tell TIME_WAIT
/// sockets killed by port reuse from those killed by a RST
/// (`State::find_reuses`): a few milliseconds of netlink round trips.
const MAX_REUSE_LOOKUPS: usize = 1024;

/// The live (non-timewait) states whose sockets hold a local port.
const LIVE_STATES: [TcpState; 8] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Closing,
];

/// The timewait and the live sockets bound to `port` (on `addr`, or any
/// address when either side is a wildcard), as sock_diag shows them now.
fn sockets_on(addr: IpAddr, port: u16) -> (Vec<DiagSocket>, Vec<DiagSocket>) {
    let matches = |s: &DiagSocket| {
        s.lport == port && (addr.is_unspecified() || s.local.is_unspecified() || s.local == addr)
    };
    let tw = sockdiag::dump_timewait().map_or_else(
        |e| {
            log::warn!("sock_diag dump for a failed bind: {e}");
            Vec::new()
        },
        |v| v.into_iter().filter(|s| matches(s)).collect(),
    );
    let live = dump_live(matches).unwrap_or_default();
    (tw, live)
}

/// The states of live sockets, and listeners.
fn live_states() -> Vec<TcpState> {
    let mut states = LIVE_STATES.to_vec();
    states.push(TcpState::Listen);
    states
}

/// Live sockets of the namespace (timewait orphans excluded), and listeners,
/// that `keep` accepts.
fn dump_live(
    mut keep: impl FnMut(&DiagSocket) -> bool,
) -> Result<Vec<DiagSocket>, sockdiag::DiagError> {
    let mut v = Vec::new();
    sockdiag::dump_with(&live_states(), |s| {
        if s.timer != 3 && keep(&s) {
            v.push(s);
        }
    })?;
    Ok(v)
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}:{port}"),
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
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

#[derive(Serialize)]
struct JsonDest {
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

/// The top three closers: `pid comm (count), ...`, or `?`.
fn closers_text(closers: &[(u32, String, u64)]) -> String {
    let who: Vec<String> = closers
        .iter()
        .take(3)
        .map(|(p, c, n)| format!("{p} {c} ({n})"))
        .collect();
    if who.is_empty() {
        "?".to_owned()
    } else {
        who.join(", ")
    }
}

/// "at 40.0/s, 100 of 100 ports to 10.0.0.5:80 in use within 2.5 s:
/// exhaustion".
fn projection_text(g: &DestGroup) -> String {
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

struct State {
    json: bool,
    clock: Clock,
    filters: Config,
    sysctl_root: PathBuf,
    sysctls: Sysctls,
    tracker: Tracker,
    census: Census,
    netns: NetnsFilter,
    /// The last polls: timewait sockets every second, live ones per report.
    timewait: Vec<DiagSocket>,
    live: LiveCounts,
    overflow_at_start: Option<u64>,
    binds: BTreeMap<(u32, u16), BindFacts>,
    connects: BTreeMap<(u32, IpAddr, u16), ConnectFacts>,
    /// Destinations already announced as heading for exhaustion.
    announced: HashSet<(IpAddr, IpAddr, u16)>,
    failures_unavailable: Option<String>,
    undecodable: u64,
    buf: BytesMut,
}

impl State {
    fn time(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.clock.wall(mono_ns)).to_string()
    }

    fn clock_of(&self, mono_ns: u64) -> String {
        let t = self.time(mono_ns);
        t.get(11..26).unwrap_or(&t).to_owned()
    }

    /// The keys every failure line has.
    fn failure_json(&self, f: &Failure, addr: IpAddr, port: u16) -> serde_json::Value {
        serde_json::json!({
            "type": "failure",
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

    fn push_json<T: Serialize>(&mut self, v: &T) {
        if let Ok(bytes) = serde_json::to_vec(v) {
            self.buf.extend_from_slice(&bytes);
            self.buf.extend_from_slice(b"\n");
        }
    }

    /// A state record: an entry into TIME_WAIT.
    fn on_state(&mut self, s: &StateChange) {
        if let Some(o) = &s.owner
            && !self.netns.is_ours(o.pid)
        {
            return;
        }
        let e = s.endpoints;
        let tuple = (e.local, e.lport, e.remote, e.rport);
        if s.new == TcpState::Close && matches!(s.old, TcpState::FinWait2 | TcpState::Closing) {
            let closer = s.owner.as_ref().map(|o| (o.pid, o.comm.as_str()));
            self.tracker.on_entry(tuple, s.ts_ns, closer.map(|c| c.0));
            self.census.on_entry(tuple, s.ts_ns, closer, &self.sysctls);
        }
    }

    /// The TIME_WAIT entries logged since the last drain, in time order.
    fn drain_log(&mut self, logs: &mut CpuLogs) {
        for ev in logs.drain() {
            match decode_state(&ev) {
                Ok(s) => self.on_state(&s),
                Err(e) => self.drop_undecodable(&e),
            }
        }
    }

    fn drop_undecodable(&mut self, e: &DecodeError) {
        self.undecodable += 1;
        log::warn!("dropping a record: {e}");
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(Event::Failure(f)) => {
                    if self.netns.is_ours(f.owner.pid) {
                        self.on_failure(&f);
                    }
                }
                // The mode's state records come through the per-CPU log
                // (drain_log), and it asks for no resets.
                Ok(Event::State(_) | Event::Reset(_)) => {}
                Err(e) => self.drop_undecodable(&e),
            }
        }
    }

    fn on_failure(&mut self, f: &Failure) {
        let Some((addr, port)) = f.addr else {
            log::warn!(
                "{}() by pid {} failed with {} but its address was unreadable",
                f.call.syscall(),
                f.owner.pid,
                f.call.errno()
            );
            return;
        };
        match f.call {
            FailedCall::BindInUse => self.on_bind_failure(f, addr, port),
            FailedCall::ConnectNoPort => self.on_connect_failure(f, addr, port),
        }
    }

    /// Explain a failed bind with what holds the port right now.
    fn on_bind_failure(&mut self, f: &Failure, addr: IpAddr, port: u16) {
        let key = (f.owner.pid, port);
        if let Some(b) = self.binds.get_mut(&key) {
            b.count += 1;
            return;
        }
        let (tw, live) = sockets_on(addr, port);
        let time_wait = tw
            .iter()
            .filter(|s| s.state == Some(TcpState::TimeWait))
            .count() as u64;
        let fin_wait2 = tw.len() as u64 - time_wait;
        let inodes: HashSet<u64> = live.iter().map(|s| u64::from(s.inode)).collect();
        let holders = procs::socket_holders(&inodes);
        let mut listeners: Vec<(u32, String)> = live
            .iter()
            .filter_map(|s| holders.get(&u64::from(s.inode)))
            .map(|h| (h.pid, h.comm.to_string()))
            .collect();
        listeners.sort();
        listeners.dedup();
        let facts = BindFacts {
            pid: f.owner.pid,
            comm: f.owner.comm.clone(),
            port,
            count: 1,
            time_wait,
            listeners: listeners.clone(),
        };
        if self.json {
            let live_json: Vec<_> = live
                .iter()
                .map(|s| {
                    let h = holders.get(&u64::from(s.inode));
                    serde_json::json!({
                        "state": s.state.map(TcpState::name),
                        "local": endpoint(s.local, s.lport),
                        "remote": endpoint(s.remote, s.rport),
                        "pid": h.map(|h| h.pid),
                        "comm": h.map(|h| h.comm.to_string()),
                    })
                })
                .collect();
            let mut v = self.failure_json(f, addr, port);
            v["holders"] = serde_json::json!({
                "time_wait": time_wait,
                "fin_wait2_orphans": fin_wait2,
                "live": live_json,
            });
            self.push_json(&v);
        } else {
            let held = if live.is_empty() {
                "no live socket".to_owned()
            } else {
                let who: Vec<String> = listeners
                    .iter()
                    .map(|(p, c)| format!("pid {p} ({c})"))
                    .collect();
                format!(
                    "{} live socket(s){}",
                    live.len(),
                    if who.is_empty() {
                        String::new()
                    } else {
                        format!(" of {}", who.join(", "))
                    }
                )
            };
            let text = format!(
                "{} bind() EADDRINUSE: pid {} ({}) port {port} on {addr}: held by {time_wait} \
                 TIME_WAIT, {fin_wait2} orphaned FIN_WAIT2, {held}\n",
                self.clock_of(f.ts_ns),
                f.owner.pid,
                f.owner.comm,
            );
            self.buf.extend_from_slice(text.as_bytes());
        }
        self.binds.insert(key, facts);
    }

    /// Explain a failed connect with the census of its destination now.
    fn on_connect_failure(&mut self, f: &Failure, addr: IpAddr, port: u16) {
        let dest = timewait::canonical_tuple((addr, 0, addr, 0)).0;
        let key = (f.owner.pid, dest, port);
        if let Some(c) = self.connects.get_mut(&key) {
            c.count += 1;
            return;
        }
        self.connects.insert(
            key,
            ConnectFacts {
                pid: f.owner.pid,
                comm: f.owner.comm.clone(),
                dest: (dest, port),
                count: 1,
            },
        );
        // A fresh look, as of the failure.
        self.poll_timewait();
        self.count_live();
        let snap = self.snapshot();
        let groups = snap.destination(dest, port);
        if self.json {
            let census: Vec<JsonDest> = groups.iter().map(|g| self.json_dest(g)).collect();
            let mut v = self.failure_json(f, dest, port);
            v["destination"] = endpoint(dest, port).into();
            v["census"] = serde_json::to_value(census).unwrap_or_default();
            self.push_json(&v);
        } else {
            let mut line = format!(
                "{} connect() EADDRNOTAVAIL: pid {} ({}) to {}: ",
                self.clock_of(f.ts_ns),
                f.owner.pid,
                f.owner.comm,
                endpoint(dest, port)
            );
            if groups.is_empty() {
                line.push_str("no TIME_WAIT socket to it left");
            }
            for g in &groups {
                let _ = write!(
                    line,
                    "{} of {} usable ports in use ({} TIME_WAIT, {} live){}",
                    g.projection.in_use,
                    g.projection
                        .usable
                        .map_or_else(|| "?".to_owned(), |u| u.to_string()),
                    g.time_wait,
                    g.live,
                    g.exhaustion_projected_ns
                        .map(|t| format!(
                            "; exhaustion projected since {} ({} before)",
                            self.clock_of(t),
                            human_duration(Duration::from_nanos(f.ts_ns.saturating_sub(t)))
                        ))
                        .unwrap_or_default()
                );
            }
            line.push('\n');
            self.buf.extend_from_slice(line.as_bytes());
        }
    }

    fn poll_timewait(&mut self) {
        self.netns.forget();
        match timewait::poll_sockets(&self.filters) {
            Ok(socks) => {
                let ended = self.tracker.on_poll(monotonic_ns(), TW_POLL, &socks);
                self.timewait = socks;
                self.find_reuses(&ended);
            }
            Err(e) => log::warn!("sock_diag poll of timewait sockets: {e}"),
        }
    }

    /// Of the lives a poll saw killed early, those whose 4-tuple a live
    /// socket holds: `tcp_tw_reuse` gave the port to a connection that is
    /// still open. (A reuse whose connection closed before the poll shows
    /// as a new entry of the tuple, [`Tracker::on_entry`].) One exact
    /// sock_diag lookup per such life, at most [`MAX_REUSE_LOOKUPS`] per
    /// poll; beyond that, the rest stay "killed early" without a cause.
    fn find_reuses(&mut self, ended: &[(sockdiag::Tuple, timewait::End, Option<u32>)]) {
        let killed: Vec<_> = ended
            .iter()
            .filter(|(_, end, _)| *end == timewait::End::KilledEarly)
            .map(|(tuple, _, _)| *tuple)
            .take(MAX_REUSE_LOOKUPS)
            .collect();
        match sockdiag::held_tuples(&killed) {
            Ok(held) => {
                let n = held.iter().filter(|h| **h).count();
                self.tracker
                    .reused_by_open_connections(u64::try_from(n).unwrap_or(u64::MAX));
            }
            Err(e) => log::warn!("sock_diag lookup of reused TIME_WAIT ports: {e}"),
        }
    }

    /// Refresh the live client sockets by destination (one dump).
    fn count_live(&mut self) {
        let mut live = LiveCounts::new();
        match sockdiag::dump_with(&live_states(), |s| {
            self.census.count_live(&mut live, &s, &self.sysctls);
        }) {
            Ok(()) => self.live = live,
            Err(e) => log::warn!("sock_diag dump of live sockets: {e}"),
        }
    }

    fn poll_listeners(&mut self) {
        match sockdiag::dump(&[TcpState::Listen]) {
            Ok(l) => self.census.saw_listeners(l.iter().map(|s| s.lport)),
            Err(e) => log::warn!("sock_diag dump of listeners: {e}"),
        }
    }

    fn snapshot(&mut self) -> Snapshot {
        self.census
            .snapshot(monotonic_ns(), &self.timewait, &self.live, &self.sysctls)
    }

    /// Every poll: announce destinations newly heading for exhaustion.
    fn check_projections(&mut self) {
        let snap = self.snapshot();
        for g in &snap.destinations {
            if !g.projection.exhaustion || !self.announced.insert(g.key) {
                continue;
            }
            let now = monotonic_ns();
            if self.json {
                let v = serde_json::json!({
                    "type": "projection",
                    "time": self.time(now),
                    "ts_ns": now,
                    "destination": self.json_dest(g),
                });
                self.push_json(&v);
            } else {
                let closer = g
                    .closers
                    .first()
                    .map(|(p, c, _)| format!(" (pid {p} ({c}) closes first)"))
                    .unwrap_or_default();
                let line = format!(
                    "{} projection: {}{closer}\n",
                    self.clock_of(now),
                    projection_text(g)
                );
                self.buf.extend_from_slice(line.as_bytes());
            }
        }
    }

    fn json_dest(&self, g: &DestGroup) -> JsonDest {
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

    fn report(&mut self, final_report: bool) {
        self.count_live();
        let snap = self.snapshot();
        let overflow = timewait_overflow()
            .zip(self.overflow_at_start)
            .map(|(a, b)| a.saturating_sub(b));
        let binds: Vec<BindFacts> = self.binds.values().cloned().collect();
        let connects: Vec<ConnectFacts> = self.connects.values().cloned().collect();
        let advice = advice::advise(&advice::Facts {
            census: &snap,
            sysctls: &self.sysctls,
            binds: &binds,
            connects: &connects,
            overflow,
        });
        let now = monotonic_ns();
        if self.json {
            let v = serde_json::json!({
                "type": "timewait_report",
                "report": if final_report { "final" } else { "interval" },
                "time": self.time(now),
                "time_wait": snap.time_wait,
                "fin_wait2_orphans": snap.fin_wait2,
                "entered": self.tracker.entered,
                "expired": self.tracker.expired,
                "killed_early": self.tracker.killed_early,
                "killed_by_reuse": self.tracker.killed_by_reuse,
                "never_seen": self.tracker.never_seen,
                "overflow": overflow,
                "sysctls": self.sysctls.to_json(),
                "destinations": snap.destinations.iter().map(|g| self.json_dest(g)).collect::<Vec<_>>(),
                "local_ports": snap.local_ports.iter().map(Self::json_port).collect::<Vec<_>>(),
                "failures": {
                    "bind": binds.iter().map(|b| serde_json::json!({
                        "pid": b.pid, "comm": b.comm, "port": b.port, "count": b.count,
                        "time_wait": b.time_wait,
                    })).collect::<Vec<_>>(),
                    "connect": connects.iter().map(|c| serde_json::json!({
                        "pid": c.pid, "comm": c.comm,
                        "destination": endpoint(c.dest.0, c.dest.1), "count": c.count,
                    })).collect::<Vec<_>>(),
                    "unavailable": self.failures_unavailable,
                },
                "advice": advice,
            });
            self.push_json(&v);
        } else {
            let t = self.text_report(&snap, overflow, &binds, &connects, &advice, final_report);
            self.buf.extend_from_slice(t.as_bytes());
        }
    }

    #[expect(clippy::too_many_lines, reason = "one report, section by section")]
    fn text_report(
        &self,
        snap: &Snapshot,
        overflow: Option<u64>,
        binds: &[BindFacts],
        connects: &[ConnectFacts],
        advice: &[Advice],
        final_report: bool,
    ) -> String {
        let mut t = String::new();
        let s = &self.sysctls;
        let _ = writeln!(
            t,
            "{}TIME_WAIT census at {}: {} TIME_WAIT, {} orphaned FIN_WAIT2; since start: entered {}, \
             expired {}, killed early {} ({} by port reuse), never seen {}{}",
            if final_report { "Final: " } else { "" },
            humantime::format_rfc3339_seconds(self.clock.wall(monotonic_ns())),
            snap.time_wait,
            snap.fin_wait2,
            self.tracker.entered,
            self.tracker.expired,
            self.tracker.killed_early,
            self.tracker.killed_by_reuse,
            self.tracker.never_seen,
            overflow
                .map(|o| format!(", tcp_max_tw_buckets overflow {o}"))
                .unwrap_or_default()
        );
        let v = |r: Result<String, &String>| r.unwrap_or_else(|_| "unreadable".to_owned());
        let _ = writeln!(
            t,
            "  sysctls: ip_local_port_range {} ({} usable), tcp_tw_reuse {}, tcp_timestamps {}, \
             tcp_max_tw_buckets {}, tcp_fin_timeout {}",
            v(s.port_range.as_ref().map(|(a, b)| format!("{a} {b}"))),
            s.usable_ports()
                .map_or_else(|| "?".to_owned(), |u| u.to_string()),
            v(s.tw_reuse.as_ref().map(ToString::to_string)),
            v(s.timestamps.as_ref().map(ToString::to_string)),
            v(s.max_tw_buckets.as_ref().map(ToString::to_string)),
            v(s.fin_timeout_s.as_ref().map(ToString::to_string)),
        );
        for e in s.unreadable() {
            let _ = writeln!(t, "  unreadable: {e}");
        }
        if let Some(why) = &self.failures_unavailable {
            let _ = writeln!(t, "  bind()/connect() failures are not caught: {why}");
        }
        if !snap.destinations.is_empty() {
            let lw = snap
                .destinations
                .iter()
                .map(|g| g.key.0.to_string().len())
                .max()
                .unwrap_or(0)
                .max("LOCAL".len());
            let dw = snap
                .destinations
                .iter()
                .map(|g| endpoint(g.key.1, g.key.2).len())
                .max()
                .unwrap_or(0)
                .max("DESTINATION".len());
            let _ = writeln!(t, "Client side (this host closed first), by destination:");
            let _ = writeln!(
                t,
                "  {:<lw$} {:<dw$} {:>9} {:>5} {:>8}  CLOSED FIRST BY",
                "LOCAL", "DESTINATION", "TIME_WAIT", "LIVE", "NEW/s"
            );
            for g in &snap.destinations {
                let _ = writeln!(
                    t,
                    "  {:<lw$} {:<dw$} {:>9} {:>5} {:>8.1}  {}",
                    g.key.0.to_string(),
                    endpoint(g.key.1, g.key.2),
                    g.time_wait,
                    g.live,
                    g.rate_per_s,
                    closers_text(&g.closers)
                );
                let _ = writeln!(t, "    {}", projection_text(g));
            }
        }
        if !snap.local_ports.is_empty() {
            let _ = writeln!(t, "Server side (this host closed first), by local port:");
            let _ = writeln!(
                t,
                "  {:<6} {:>9} {:>8} {:<10} CLOSED FIRST BY",
                "PORT", "TIME_WAIT", "NEW/s", "LISTENING"
            );
            for g in &snap.local_ports {
                let _ = writeln!(
                    t,
                    "  {:<6} {:>9} {:>8.1} {:<10} {}",
                    g.lport,
                    g.time_wait,
                    g.rate_per_s,
                    if g.listening { "yes" } else { "no" },
                    closers_text(&g.closers)
                );
            }
        }
        if !binds.is_empty() || !connects.is_empty() {
            let _ = writeln!(t, "Failures since start:");
            for b in binds {
                let _ = writeln!(
                    t,
                    "  bind() EADDRINUSE: pid {} ({}) port {}, {} time(s); {} TIME_WAIT held it",
                    b.pid, b.comm, b.port, b.count, b.time_wait
                );
            }
            for c in connects {
                let _ = writeln!(
                    t,
                    "  connect() EADDRNOTAVAIL: pid {} ({}) to {}, {} time(s)",
                    c.pid,
                    c.comm,
                    endpoint(c.dest.0, c.dest.1),
                    c.count
                );
            }
        }
        if advice.is_empty() {
            let _ = writeln!(t, "Advice: none; nothing measured calls for any.");
        } else {
            let _ = writeln!(t, "Advice:");
            for a in advice {
                let _ = writeln!(t, "  - [{}] {}", a.id, a.text);
            }
        }
        t.push('\n');
        t
    }
}

/// Run `--timewait` on a loaded tracer.
pub async fn run(cli: &Cli, tracer: Tracer, opts: TimewaitOptions) -> anyhow::Result<End> {
    let Tracer {
        mut ebpf,
        mut logger,
        config: filters,
        failures_unavailable,
        log_cpus,
        ..
    } = tracer;
    let sysctls = Sysctls::read(&opts.sysctl_root);
    for e in sysctls.unreadable() {
        eprintln!("tcptrace: warning: cannot read {e}; the census goes on without it");
    }
    if let Some(why) = &failures_unavailable {
        eprintln!("tcptrace: warning: bind()/connect() failures are not caught: {why}");
    }
    let mut ring = crate::stream::take_ring(&mut ebpf)?;
    let mut logs = CpuLogs::open(&ebpf, log_cpus)?;
    let mut state = State {
        json: cli.json,
        clock: Clock::now(),
        filters,
        sysctl_root: opts.sysctl_root.clone(),
        sysctls,
        tracker: Tracker::default(),
        census: Census::default(),
        netns: NetnsFilter::default(),
        timewait: Vec::new(),
        live: LiveCounts::new(),
        overflow_at_start: timewait_overflow(),
        binds: BTreeMap::new(),
        connects: BTreeMap::new(),
        announced: HashSet::new(),
        failures_unavailable,
        undecodable: 0,
        buf: BytesMut::new(),
    };
    state.poll_listeners();
    let mut out = StdoutSink::default();
    let mut stop = Stop::new(cli.duration)?;
    let mut poll = timer(Duration::ZERO, TW_POLL);
    let mut log_drain = timer(LOG_DRAIN, LOG_DRAIN);
    let mut report = timer(opts.interval, opts.interval);
    eprintln!(
        "{READY} TIME_WAIT and port failures: a census every {} (Ctrl-C for the final one)",
        humantime::format_duration(opts.interval)
    );
    let end = loop {
        tokio::select! {
            r = drain_when_woken(&mut ring, |r| state.drain(r)) => r?,
            _ = log_drain.tick() => state.drain_log(&mut logs),
            _ = poll.tick() => {
                state.drain(ring.get_mut());
                state.drain_log(&mut logs);
                state.poll_listeners();
                state.poll_timewait();
                // The one place the sysctls are re-read: reports use these.
                state.sysctls = Sysctls::read(&state.sysctl_root);
                state.check_projections();
                if let Some(l) = logger.as_mut() {
                    l.flush();
                }
            }
            _ = report.tick() => state.report(false),
            () = stop.wait() => break End::Stopped,
        }
        out.write(&mut state.buf)?;
        if out.closed() {
            break End::BrokenPipe;
        }
    };
    if end == End::Stopped {
        state.drain(ring.get_mut());
        state.drain_log(&mut logs);
        state.poll_timewait();
        state.report(true);
        out.write(&mut state.buf)?;
    }
    exit_lines(&ebpf, &logs, state.undecodable, end);
    Ok(if out.closed() { End::BrokenPipe } else { end })
}

/// What the run lost and cost, on stderr at exit: undecodable records, and
/// after a stop the per-CPU log's entries, the socket store and the kernel
/// cost per program.
fn exit_lines(ebpf: &aya::Ebpf, logs: &CpuLogs, undecodable: u64, end: End) {
    if undecodable > 0 {
        eprintln!("tcptrace: {undecodable} undecodable records dropped");
    }
    if end == End::Stopped {
        eprintln!(
            "tcptrace: TIME_WAIT entries: {} read from the per-CPU log, {} lost (overwritten \
             before they were read)",
            logs.read(),
            logs.lost()
        );
        match crate::stats::KernelCounters::read(ebpf) {
            Ok(k) => eprintln!("{}", k.socket_map_line()),
            Err(e) => log::warn!("reading kernel counters: {e}"),
        }
        eprintln!(
            "{}",
            crate::stats::costs_line(&crate::stats::program_costs(ebpf))
        );
    }
}

/// The default sysctl root, for `main`.
#[must_use]
pub fn default_sysctl_root() -> PathBuf {
    PathBuf::from(sysctl::ROOT)
}
