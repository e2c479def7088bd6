//! `--timewait` advice, computed from what was measured and the namespace's
//! sysctls, never generic: each item names the port, destination, process
//! and values it is about. `tcp_tw_recycle` is never suggested: Linux 4.12
//! removed it (it broke clients behind NAT).

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use crate::model::{
    socket::endpoint,
    sysctl::Sysctls,
    timewait::census::{Snapshot, reuse_applies},
};

/// One piece of advice. `id` is stable (JSON); `text` explains it with the
/// measured figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Advice {
    pub id: &'static str,
    pub text: String,
}

/// A failed `bind()` (EADDRINUSE) and what held its port then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindFacts {
    pub pid: u32,
    pub comm: String,
    pub port: u16,
    pub count: u64,
    pub time_wait: u64,
    /// Live sockets on the port: (state name, pid and comm of the holder).
    pub listeners: Vec<(u32, String)>,
}

/// A failed `connect()` (EADDRNOTAVAIL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectFacts {
    pub pid: u32,
    pub comm: String,
    pub dest: (IpAddr, u16),
    pub count: u64,
}

fn value<T: std::fmt::Display>(r: &Result<T, String>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(_) => "unreadable".to_owned(),
    }
}

/// Everything the advice is computed from.
pub struct Facts<'a> {
    pub census: &'a Snapshot,
    pub sysctls: &'a Sysctls,
    pub binds: &'a [BindFacts],
    pub connects: &'a [ConnectFacts],
    /// `TcpExtTCPTimeWaitOverflow` since tcptrace started.
    pub overflow: Option<u64>,
}

/// The advice for these facts, most urgent first.
#[must_use]
#[expect(clippy::too_many_lines, reason = "one rule after the other, in order")]
pub fn advise(f: &Facts<'_>) -> Vec<Advice> {
    let mut out = Vec::new();
    let s = f.sysctls;
    if let Some(v) = s.tw_recycle
        && v != 0
    {
        out.push(Advice {
            id: "tcp_tw_recycle",
            text: format!(
                "net.ipv4.tcp_tw_recycle is {v}: it drops connections from clients behind NAT, \
                 and Linux 4.12 removed it. Set it to 0."
            ),
        });
    }

    // Restart failures.
    let mut reuseaddr_ports = Vec::new();
    for b in f.binds {
        if b.time_wait > 0 {
            reuseaddr_ports.push(b.port);
            out.push(Advice {
                id: "so_reuseaddr",
                text: format!(
                    "bind() to port {} by pid {} ({}) failed with EADDRINUSE {} time(s) while {} \
                     TIME_WAIT socket(s) held the port: set SO_REUSEADDR on the listening socket \
                     before bind(). Linux lets bind() through a TIME_WAIT socket only when both \
                     the new socket and the one that left TIME_WAIT behind set it, so the fix \
                     takes effect from the next restart; until then, wait at most 60 s.",
                    b.port, b.pid, b.comm, b.count, b.time_wait
                ),
            });
        } else if !b.listeners.is_empty() {
            let who: Vec<String> = b
                .listeners
                .iter()
                .map(|(pid, comm)| format!("pid {pid} ({comm})"))
                .collect();
            out.push(Advice {
                id: "port_in_use",
                text: format!(
                    "bind() to port {} by pid {} ({}) failed because a live socket holds the \
                     port ({}): another instance is still running. SO_REUSEADDR does not help.",
                    b.port,
                    b.pid,
                    b.comm,
                    who.join(", ")
                ),
            });
        }
    }

    // Port exhaustion, per destination.
    let mut exhausted = Vec::new();
    for g in &f.census.destinations {
        let failed: u64 = f
            .connects
            .iter()
            .filter(|c| c.dest == (g.key.1, g.key.2))
            .map(|c| c.count)
            .sum();
        if g.projection.exhaustion || failed > 0 {
            exhausted.push((g, failed));
        }
    }
    // Failures to destinations with no census left (it expired) still count.
    let orphan_failures: Vec<&ConnectFacts> = f
        .connects
        .iter()
        .filter(|c| {
            !f.census
                .destinations
                .iter()
                .any(|g| (g.key.1, g.key.2) == c.dest)
        })
        .collect();
    for (g, failed) in &exhausted {
        let dest = endpoint(g.key.1, g.key.2);
        let usable = g
            .projection
            .usable
            .map_or_else(|| "?".to_owned(), |u| u.to_string());
        let who = g.closers.first().map_or_else(
            || "this host".to_owned(),
            |(pid, comm, _)| format!("pid {pid} ({comm})"),
        );
        let ceiling = g
            .projection
            .ceiling_per_s
            .map(|c| format!("; without reuse the most it sustains is {c:.1}/s"))
            .unwrap_or_default();
        let mut text = format!(
            "{who} opens {:.0} connections/s to {dest} and closes them first: each holds one of \
             {usable} local ports for 60 s in TIME_WAIT{ceiling}.",
            g.rate_per_s
        );
        if *failed > 0 {
            let _ = write!(text, " connect() already failed {failed} time(s).");
        }
        text.push_str(" Reuse connections (a pool, HTTP keep-alive) instead of one per request.");
        out.push(Advice {
            id: "keepalive",
            text,
        });
        if !reuse_applies(s, g.key.0, g.key.1) {
            let why = match (&s.tw_reuse, &s.timestamps) {
                (_, Ok(0)) => format!(
                    "net.ipv4.tcp_timestamps is 0, and tcp_tw_reuse needs timestamps (tcp_tw_reuse is {})",
                    value(&s.tw_reuse)
                ),
                (Ok(2), _) => format!(
                    "net.ipv4.tcp_tw_reuse is 2, which applies to loopback only, and {dest} is not loopback"
                ),
                (r, _) => format!("net.ipv4.tcp_tw_reuse is {}", value(r)),
            };
            out.push(Advice {
                id: "tcp_tw_reuse",
                text: format!(
                    "{why}. With tcp_tw_reuse=1 (outgoing connections only; needs \
                     tcp_timestamps on both ends, now {}) connect() may take a TIME_WAIT port to \
                     the same destination once it is {} ms old.",
                    value(&s.timestamps),
                    s.reuse_delay_ms()
                ),
            });
        }
        if let Ok((lo, hi)) = &s.port_range
            && u32::from(hi - lo) + 1 < 60_000
        {
            out.push(Advice {
                id: "port_range",
                text: format!(
                    "net.ipv4.ip_local_port_range is {lo} {hi} ({usable} usable ports to \
                     {dest}): a wider range (e.g. 10000 65535) raises the ceiling in proportion. \
                     Keep listening ports out of it with ip_local_reserved_ports."
                ),
            });
        }
    }
    for c in orphan_failures {
        out.push(Advice {
            id: "keepalive",
            text: format!(
                "connect() by pid {} ({}) to {} failed {} time(s) with EADDRNOTAVAIL: no local \
                 port was free for that destination. Reuse connections (a pool, HTTP \
                 keep-alive); see also tcp_tw_reuse (now {}) and ip_local_port_range.",
                c.pid,
                c.comm,
                endpoint(c.dest.0, c.dest.1),
                c.count,
                value(&s.tw_reuse)
            ),
        });
    }

    // Server-side TIME_WAIT: who closes first.
    for p in &f.census.local_ports {
        if p.time_wait == 0 {
            continue;
        }
        let who = p.closers.first().map_or_else(
            || "the server".to_owned(),
            |(pid, comm, _)| format!("the server, pid {pid} ({comm}),"),
        );
        let mut text = format!(
            "{} TIME_WAIT socket(s) on local port {} ({:.1}/s): {who} closes its connections \
             first. If they are HTTP, keep-alive is off or its idle timeout is short. Letting \
             the client close first puts TIME_WAIT on the clients, each with its own ports.",
            p.time_wait, p.lport, p.rate_per_s
        );
        if !reuseaddr_ports.contains(&p.lport) {
            let _ = write!(
                text,
                " A restart of the listener on port {} fails with EADDRINUSE until they expire, \
                 unless it sets SO_REUSEADDR.",
                p.lport
            );
        }
        out.push(Advice {
            id: "client_close_first",
            text,
        });
    }

    // The kernel refusing to create TIME_WAIT sockets.
    if let Some(n) = f.overflow
        && n > 0
    {
        out.push(Advice {
            id: "max_tw_buckets",
            text: format!(
                "{n} connection(s) skipped TIME_WAIT since tcptrace started because \
                 net.ipv4.tcp_max_tw_buckets ({}) was reached (TcpExtTCPTimeWaitOverflow, \
                 \"time wait bucket table overflow\"): they lost TIME_WAIT's protection against \
                 delayed segments. Fix the churn above, or raise the limit if memory allows.",
                value(&s.max_tw_buckets)
            ),
        });
    } else if let Ok(max) = s.max_tw_buckets
        && max > 0
        && (f.census.time_wait + f.census.fin_wait2) * 10 >= max * 9
    {
        out.push(Advice {
            id: "max_tw_buckets",
            text: format!(
                "{} timewait sockets, within 10% of net.ipv4.tcp_max_tw_buckets ({max}): past \
                 it the kernel skips TIME_WAIT for new closes.",
                f.census.time_wait + f.census.fin_wait2
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests;
