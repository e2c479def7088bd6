//! `--timewait` advice, computed from what was measured and the namespace's
//! sysctls, never generic: each item names the port, destination, process
//! and values it is about. `tcp_tw_recycle` is never suggested: Linux 4.12
//! removed it (it broke clients behind NAT).

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use crate::{
    census::{Snapshot, reuse_applies},
    sysctl::Sysctls,
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

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}:{port}"),
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
    }
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
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::census::{DestGroup, PortGroup, project};

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

    fn sysctls(reuse: u32) -> Sysctls {
        Sysctls {
            port_range: Ok((40000, 40099)),
            reserved_ports: Ok(vec![]),
            tw_reuse: Ok(reuse),
            tw_reuse_delay_ms: None,
            timestamps: Ok(1),
            max_tw_buckets: Ok(262_144),
            fin_timeout_s: Ok(60),
            tw_recycle: None,
        }
    }

    fn dest(rate: f64, tw: u64) -> DestGroup {
        let held = vec![50.0; usize::try_from(tw).unwrap()];
        DestGroup {
            key: (ME, SERVER, 80),
            time_wait: tw,
            fin_wait2: 0,
            live: 0,
            rate_per_s: rate,
            closers: vec![(7, "client".into(), tw)],
            projection: project(&held, 0, rate, Some(100), 60.0, false),
            exhaustion_projected_ns: None,
        }
    }

    fn run(
        census: &Snapshot,
        sysctls: &Sysctls,
        binds: &[BindFacts],
        connects: &[ConnectFacts],
        overflow: Option<u64>,
    ) -> Vec<Advice> {
        advise(&Facts {
            census,
            sysctls,
            binds,
            connects,
            overflow,
        })
    }

    fn bind_failure(time_wait: u64, listeners: Vec<(u32, String)>) -> [BindFacts; 1] {
        [BindFacts {
            pid: 42,
            comm: "server".into(),
            port: 7000,
            count: 1,
            time_wait,
            listeners,
        }]
    }

    fn ids(a: &[Advice]) -> Vec<&'static str> {
        a.iter().map(|a| a.id).collect()
    }

    #[test]
    fn restart_failure_names_so_reuseaddr_with_the_facts() {
        let census = Snapshot::default();
        let s = sysctls(2);
        let binds = bind_failure(20, vec![]);
        let a = run(&census, &s, &binds, &[], Some(0));
        assert_eq!(ids(&a), vec!["so_reuseaddr"]);
        assert!(a[0].text.contains("port 7000"), "{}", a[0].text);
        assert!(a[0].text.contains("20 TIME_WAIT"), "{}", a[0].text);
        assert!(a[0].text.contains("pid 42"), "{}", a[0].text);
    }

    #[test]
    fn a_live_listener_is_not_a_reuseaddr_problem() {
        let census = Snapshot::default();
        let s = sysctls(2);
        let binds = bind_failure(0, vec![(41, "server".into())]);
        let a = run(&census, &s, &binds, &[], None);
        assert_eq!(ids(&a), vec!["port_in_use"]);
        assert!(a[0].text.contains("pid 41"));
    }

    #[test]
    fn exhaustion_advice_depends_on_the_sysctls() {
        let census = Snapshot {
            destinations: vec![dest(40.0, 90)],
            time_wait: 90,
            ..Snapshot::default()
        };
        let connects = [ConnectFacts {
            pid: 7,
            comm: "client".into(),
            dest: (SERVER, 80),
            count: 3,
        }];
        let s = sysctls(0);
        let a = run(&census, &s, &[], &connects, Some(0));
        assert_eq!(ids(&a), vec!["keepalive", "tcp_tw_reuse", "port_range"]);
        assert!(a[0].text.contains("10.0.0.5:80"), "{}", a[0].text);
        assert!(a[0].text.contains("failed 3 time"), "{}", a[0].text);
        assert!(a[1].text.contains("tcp_tw_reuse is 0"), "{}", a[1].text);
        assert!(a[2].text.contains("40000 40099"), "{}", a[2].text);
        // 2 is loopback only: 10.0.0.5 is not.
        let s = sysctls(2);
        let a = run(&census, &s, &[], &connects, None);
        assert!(a[1].text.contains("loopback only"), "{}", a[1].text);
        // Reuse already applies: not suggested again.
        let s = sysctls(1);
        let a = run(&census, &s, &[], &connects, None);
        assert!(!ids(&a).contains(&"tcp_tw_reuse"));
        for adv in &a {
            assert!(!adv.text.contains("tcp_tw_recycle"), "never suggested");
        }
    }

    #[test]
    fn server_side_time_wait_says_who_closes_first() {
        let census = Snapshot {
            local_ports: vec![PortGroup {
                lport: 8080,
                time_wait: 12,
                fin_wait2: 0,
                rate_per_s: 3.0,
                closers: vec![(9, "httpd".into(), 12)],
                listening: true,
            }],
            time_wait: 12,
            ..Snapshot::default()
        };
        let s = sysctls(2);
        let a = run(&census, &s, &[], &[], None);
        assert_eq!(ids(&a), vec!["client_close_first"]);
        assert!(a[0].text.contains("pid 9 (httpd)"), "{}", a[0].text);
        assert!(a[0].text.contains("keep-alive"), "{}", a[0].text);
        assert!(a[0].text.contains("SO_REUSEADDR"), "{}", a[0].text);
    }

    #[test]
    fn overflow_and_a_recycle_sysctl_are_flagged() {
        let census = Snapshot::default();
        let mut s = sysctls(0);
        s.tw_recycle = Some(1);
        let a = run(&census, &s, &[], &[], Some(5));
        assert_eq!(ids(&a), vec!["tcp_tw_recycle", "max_tw_buckets"]);
        assert!(a[0].text.contains("removed"), "{}", a[0].text);
        assert!(a[1].text.contains("5 connection"), "{}", a[1].text);
        // No overflow, nothing measured: no advice at all.
        let s = sysctls(0);
        let a = run(&census, &s, &[], &[], Some(0));
        assert!(a.is_empty(), "{a:?}");
    }
}
