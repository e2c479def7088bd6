//! The `--timewait` output for people: failure lines, projection
//! announcements and the census report.

use std::{fmt::Write as _, net::IpAddr, time::Duration};

use super::{CensusReport, Times, projection_text};
use crate::{
    model::{event::Failure, netns::Netns, socket::endpoint, timewait::census::DestGroup},
    report::text::{escape, human_duration},
};

/// A line's end: ` netns=INODE` for a namespace other than tcptrace's own,
/// as the stream's lines name one.
fn line_end(foreign: Option<Netns>) -> String {
    match foreign {
        Some(ns) => format!(" netns={ns}\n"),
        None => "\n".to_owned(),
    }
}

/// The top three closers: `pid comm (count), ...`, or `?`.
fn closers_text(closers: &[(u32, String, u64)]) -> String {
    let who: Vec<String> = closers
        .iter()
        .take(3)
        .map(|(p, c, n)| format!("{p} {} ({n})", escape(c)))
        .collect();
    if who.is_empty() {
        "?".to_owned()
    } else {
        who.join(", ")
    }
}

impl Times {
    /// A failed `bind()` and what held its port: timewait sockets, and
    /// `live` sockets with the (pid, comm) of their holders. `foreign`: the
    /// caller's namespace, when not tcptrace's own.
    #[must_use]
    pub fn bind_failure_text(
        &self,
        f: &Failure,
        foreign: Option<Netns>,
        (addr, port): (IpAddr, u16),
        (time_wait, fin_wait2): (u64, u64),
        live: usize,
        holders: &[(u32, String)],
    ) -> String {
        let held = if live == 0 {
            "no live socket".to_owned()
        } else {
            let who: Vec<String> = holders
                .iter()
                .map(|(p, c)| format!("pid {p} ({})", escape(c)))
                .collect();
            format!(
                "{live} live socket(s){}",
                if who.is_empty() {
                    String::new()
                } else {
                    format!(" of {}", who.join(", "))
                }
            )
        };
        format!(
            "{} bind() EADDRINUSE: pid {} ({}) port {port} on {addr}: held by {time_wait} \
             TIME_WAIT, {fin_wait2} orphaned FIN_WAIT2, {held}{}",
            self.clock_of(f.ts_ns),
            f.owner.pid,
            escape(&f.owner.comm),
            line_end(foreign),
        )
    }

    /// A failed `connect()` with the census of its destination.
    #[must_use]
    pub fn connect_failure_text(
        &self,
        f: &Failure,
        foreign: Option<Netns>,
        (dest, port): (IpAddr, u16),
        groups: &[&DestGroup],
    ) -> String {
        let mut line = format!(
            "{} connect() EADDRNOTAVAIL: pid {} ({}) to {}: ",
            self.clock_of(f.ts_ns),
            f.owner.pid,
            escape(&f.owner.comm),
            endpoint(dest, port)
        );
        if groups.is_empty() {
            line.push_str("no TIME_WAIT socket to it left");
        }
        for g in groups {
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
        line.push_str(&line_end(foreign));
        line
    }

    /// A destination newly heading for exhaustion, at `now_ns`.
    #[must_use]
    pub fn projection_line(&self, g: &DestGroup, now_ns: u64, foreign: Option<Netns>) -> String {
        let closer = g
            .closers
            .first()
            .map(|(p, c, _)| format!(" (pid {p} ({}) closes first)", escape(c)))
            .unwrap_or_default();
        format!(
            "{} projection: {}{closer}{}",
            self.clock_of(now_ns),
            projection_text(g),
            line_end(foreign)
        )
    }
}

#[expect(clippy::too_many_lines, reason = "one report, section by section")]
impl CensusReport<'_> {
    /// The report for people, section by section.
    #[must_use]
    pub fn text(&self) -> String {
        let (snap, overflow, final_report) = (self.snap, self.overflow, self.final_report);
        let (binds, connects, advice) = (self.binds, self.connects, self.advice);
        let mut t = String::new();
        let s = self.sysctls;
        if let Some((ns, name)) = self.foreign {
            let _ = writeln!(
                t,
                "Network namespace {ns}{}:",
                name.map(|n| format!(" (/run/netns/{})", escape(n)))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            t,
            "{}TIME_WAIT census at {}: {} TIME_WAIT, {} orphaned FIN_WAIT2; since start: entered {}, \
         expired {}, killed early {} ({} by port reuse), never seen {}{}",
            if final_report { "Final: " } else { "" },
            humantime::format_rfc3339_seconds(self.times.0.wall(self.now_ns)),
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
        if let Some(why) = self.failures_unavailable {
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
                    b.pid,
                    escape(&b.comm),
                    b.port,
                    b.count,
                    b.time_wait
                );
            }
            for c in connects {
                let _ = writeln!(
                    t,
                    "  connect() EADDRNOTAVAIL: pid {} ({}) to {}, {} time(s)",
                    c.pid,
                    escape(&c.comm),
                    endpoint(c.dest.0, c.dest.1),
                    c.count
                );
            }
        }
        let f = self.forgotten;
        if f.unexplained > 0 {
            let _ = writeln!(
                t,
                "  {} failure(s) not explained: more than the lookups allowed per second",
                f.unexplained
            );
        }
        if f.failures > 0 || f.groups > 0 {
            let _ = writeln!(
                t,
                "  forgotten (quiet for minutes, or over the cap): {} failure group(s), \
                 {} destination(s) or port(s)",
                f.failures, f.groups
            );
        }
        if advice.is_empty() {
            let _ = writeln!(t, "Advice: none; nothing measured calls for any.");
        } else {
            let _ = writeln!(t, "Advice:");
            for a in advice {
                // The advice names processes by comm.
                let _ = writeln!(t, "  - [{}] {}", a.id, escape(&a.text));
            }
        }
        t.push('\n');
        t
    }
}
