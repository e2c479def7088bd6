//! The TIME_WAIT census of `--timewait`: timewait sockets grouped by
//! destination (the side that spends ephemeral ports) and by local port (the
//! server side), with the rate of new ones, who closed them, and a projection
//! of port use against `ip_local_port_range`.
//!
//! Pure: sockets, entries and sysctls go in, groups come out. The event loop
//! in `twmode` feeds it.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::IpAddr,
};

use tcptrace_common::TcpState;

use crate::{
    sockdiag::{DiagSocket, Tuple, canonical_tuple},
    sysctl::Sysctls,
    timewait::TIMEWAIT_LEN,
};

const NS: u64 = 1_000_000_000;
/// The rate of new TIME_WAIT sockets is measured over this many seconds.
pub const RATE_WINDOW_S: u64 = 10;

/// Which end of its connections a group is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// This host connected out: each TIME_WAIT holds an ephemeral port to
    /// one destination.
    Client,
    /// This host accepted: TIME_WAIT sits on the service's port.
    Server,
}

/// A destination of outgoing connections: (local address, remote address,
/// remote port). Ephemeral ports are spent per destination.
pub type DestKey = (IpAddr, IpAddr, u16);

/// Live client sockets by destination.
pub type LiveCounts = BTreeMap<DestKey, u64>;

/// New TIME_WAIT sockets per second over the last [`RATE_WINDOW_S`].
#[derive(Clone, Debug, Default)]
struct Rate {
    /// (second, count), oldest first.
    buckets: VecDeque<(u64, u64)>,
    first_ns: u64,
}

impl Rate {
    fn add(&mut self, ts_ns: u64) {
        let sec = ts_ns / NS;
        if self.buckets.is_empty() {
            self.first_ns = ts_ns;
        }
        match self.buckets.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.buckets.push_back((sec, 1)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| *s + RATE_WINDOW_S <= sec)
        {
            self.buckets.pop_front();
        }
    }

    /// Per second, over the window or the time since the first entry if
    /// shorter (at least one second, so a burst is not inflated).
    fn per_sec(&self, now_ns: u64) -> f64 {
        let this_second = now_ns / NS;
        let n: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s + RATE_WINDOW_S > this_second)
            .map(|(_, n)| n)
            .sum();
        let span_ns = now_ns
            .saturating_sub(self.first_ns)
            .clamp(NS, RATE_WINDOW_S * NS);
        #[expect(clippy::cast_precision_loss, reason = "counts and ns fit easily")]
        let r = n as f64 * NS as f64 / span_ns as f64;
        r
    }
}

/// Where port use is heading for one destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// Usable ports (`ip_local_port_range` minus reserved); None if unknown.
    pub usable: Option<u32>,
    /// Ports to this destination in use now: TIME_WAIT plus live sockets.
    pub in_use: u64,
    /// Ports in use once the current rate has run for a TIME_WAIT lifetime
    /// (or for the reuse delay, when `tcp_tw_reuse` applies).
    pub projected: u64,
    /// Whether `tcp_tw_reuse` lets `connect()` take this destination's TIME_WAIT
    /// ports (after the reuse delay).
    pub reuse: bool,
    /// Seconds until no port is left, when that is where it is heading.
    pub eta_s: Option<f64>,
    /// The most new connections per second this destination sustains.
    pub ceiling_per_s: Option<f64>,
    pub exhaustion: bool,
}

/// How far ahead [`project`] looks: one TIME_WAIT lifetime.
const HORIZON_S: f64 = 60.0;
/// Its time step.
const STEP_S: f64 = 0.1;

/// Project port use over the next minute. `remaining_s` are the seconds
/// until each TIME_WAIT port to the destination is free again (its timer,
/// or sooner when `tcp_tw_reuse` applies), `live` the live sockets holding
/// ports, and `rate` new TIME_WAIT sockets per second, each holding its port
/// for `hold_s`. Ports in use at t = live + old ones not yet free + new ones
/// made in the last `hold_s`.
#[must_use]
pub fn project(
    remaining_s: &[f64],
    live: u64,
    rate: f64,
    usable: Option<u32>,
    hold_s: f64,
    reuse: bool,
) -> Projection {
    let mut remaining = remaining_s.to_vec();
    remaining.sort_by(f64::total_cmp);
    let in_use = live + remaining.len() as u64;
    let mut projected = in_use;
    let mut eta_s = None;
    let u = usable.map(u64::from);
    if u.is_some_and(|u| in_use >= u) {
        eta_s = Some(0.0);
    }
    // 600 steps of 100 ms.
    let steps = 600u32;
    debug_assert!((f64::from(steps) * STEP_S - HORIZON_S).abs() < 1e-9);
    for i in 1..=steps {
        let t = f64::from(i) * STEP_S;
        let freed = remaining.partition_point(|r| *r <= t) as u64;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive rate times seconds"
        )]
        let new = (rate * t.min(hold_s)).floor() as u64;
        let pop = live + (remaining.len() as u64 - freed) + new;
        projected = projected.max(pop);
        if eta_s.is_none() && u.is_some_and(|u| pop >= u) {
            eta_s = Some(t);
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "port counts")]
    let ceiling_per_s = u.map(|u| u.saturating_sub(live) as f64 / hold_s);
    Projection {
        usable,
        in_use,
        projected: u.map_or(projected, |u| projected.min(u)),
        reuse,
        eta_s,
        ceiling_per_s,
        exhaustion: eta_s.is_some(),
    }
}

/// Who closed first, by pid: (pid, comm, TIME_WAIT sockets entered).
pub type Closers = Vec<(u32, String, u64)>;

/// One destination's share of the census.
#[derive(Clone, Debug, PartialEq)]
pub struct DestGroup {
    pub key: DestKey,
    pub time_wait: u64,
    /// Orphans in FIN_WAIT2 (a timewait socket waiting for the peer's FIN).
    pub fin_wait2: u64,
    /// Live (non-timewait) sockets to the destination: ports in use too.
    pub live: u64,
    pub rate_per_s: f64,
    pub closers: Closers,
    pub projection: Projection,
    /// When tcptrace first projected exhaustion for it (monotonic ns).
    pub exhaustion_projected_ns: Option<u64>,
}

/// One local port's share of the census: the server side.
#[derive(Clone, Debug, PartialEq)]
pub struct PortGroup {
    pub lport: u16,
    pub time_wait: u64,
    pub fin_wait2: u64,
    pub rate_per_s: f64,
    pub closers: Closers,
    /// A listener was seen on the port while tcptrace ran.
    pub listening: bool,
}

/// The whole census at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub destinations: Vec<DestGroup>,
    pub local_ports: Vec<PortGroup>,
    pub time_wait: u64,
    pub fin_wait2: u64,
}

impl Snapshot {
    #[must_use]
    pub fn destination(&self, raddr: IpAddr, rport: u16) -> Vec<&DestGroup> {
        let r = canonical_tuple((raddr, 0, raddr, 0)).0;
        self.destinations
            .iter()
            .filter(|g| g.key.1 == r && g.key.2 == rport)
            .collect()
    }
}

/// Counts entries, rates and closers over time; [`Census::snapshot`] groups
/// the sockets of one poll.
#[derive(Debug, Default)]
pub struct Census {
    dest_rate: HashMap<DestKey, Rate>,
    port_rate: HashMap<u16, Rate>,
    dest_closers: HashMap<DestKey, HashMap<u32, u64>>,
    port_closers: HashMap<u16, HashMap<u32, u64>>,
    comms: HashMap<u32, String>,
    /// Every port a listener was seen on.
    listening: HashSet<u16>,
    exhaustion_projected: HashMap<DestKey, u64>,
}

/// Which side of its connection a local socket is.
#[must_use]
pub fn side<S: std::hash::BuildHasher>(
    lport: u16,
    rport: u16,
    listening: &HashSet<u16, S>,
    sysctls: &Sysctls,
) -> Side {
    if listening.contains(&lport) {
        return Side::Server;
    }
    match (sysctls.is_ephemeral(lport), sysctls.is_ephemeral(rport)) {
        (Some(true), _) => Side::Client,
        (Some(false), Some(true)) => Side::Server,
        // Neither port ephemeral, or the range unknown: the lower port is
        // the service's.
        _ => {
            if lport < rport {
                Side::Server
            } else {
                Side::Client
            }
        }
    }
}

fn closers(counts: Option<&HashMap<u32, u64>>, comms: &HashMap<u32, String>) -> Closers {
    let mut v: Closers = counts
        .into_iter()
        .flatten()
        .map(|(pid, n)| (*pid, comms.get(pid).cloned().unwrap_or_default(), *n))
        .collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    v
}

impl Census {
    /// Ports with a listener now (from a sock_diag dump of LISTEN sockets).
    pub fn saw_listeners(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.listening.extend(ports);
    }

    /// A full socket became a timewait socket at `ts_ns`; this side closed
    /// first. `closer` is the process that closed it, when known.
    pub fn on_entry(
        &mut self,
        tuple: Tuple,
        ts_ns: u64,
        closer: Option<(u32, &str)>,
        sysctls: &Sysctls,
    ) {
        let (l, lport, r, rport) = canonical_tuple(tuple);
        let pid = closer.map(|(pid, comm)| {
            let known = self.comms.entry(pid).or_default();
            if known.is_empty() {
                // A record without a comm: the kernel's comm cache had
                // lost the closer's thread to another one. /proc has it
                // while the process lives.
                *known = if comm.is_empty() {
                    crate::procs::comm(pid).unwrap_or_default()
                } else {
                    comm.to_owned()
                };
            }
            pid
        });
        match side(lport, rport, &self.listening, sysctls) {
            Side::Client => {
                let key = (l, r, rport);
                self.dest_rate.entry(key).or_default().add(ts_ns);
                if let Some(pid) = pid {
                    *self
                        .dest_closers
                        .entry(key)
                        .or_default()
                        .entry(pid)
                        .or_default() += 1;
                }
            }
            Side::Server => {
                self.port_rate.entry(lport).or_default().add(ts_ns);
                if let Some(pid) = pid {
                    *self
                        .port_closers
                        .entry(lport)
                        .or_default()
                        .entry(pid)
                        .or_default() += 1;
                }
            }
        }
    }

    /// Count one live socket (from a dump of the other states) in `live`:
    /// client sockets by destination, the only ones a projection needs.
    /// Counting as the dump is read keeps no socket: a namespace with 200k
    /// live sockets costs a handful of destinations.
    pub fn count_live(&self, live: &mut LiveCounts, s: &DiagSocket, sysctls: &Sysctls) {
        if s.state == Some(TcpState::Listen) || s.timer == 3 {
            return;
        }
        let (l, lport, r, rport) = canonical_tuple((s.local, s.lport, s.remote, s.rport));
        if side(lport, rport, &self.listening, sysctls) == Side::Client {
            *live.entry((l, r, rport)).or_default() += 1;
        }
    }

    /// Group `timewait` sockets (one sock_diag poll) and `live` ones (the
    /// last dump of the other states, see [`Census::count_live`]) at `now_ns`.
    pub fn snapshot(
        &mut self,
        now_ns: u64,
        timewait: &[DiagSocket],
        live: &LiveCounts,
        sysctls: &Sysctls,
    ) -> Snapshot {
        #[derive(Default)]
        struct Count {
            tw: u64,
            fw2: u64,
            live: u64,
            /// Seconds until each timewait port is free again.
            remaining_s: Vec<f64>,
        }
        let tw_len_s = TIMEWAIT_LEN.as_secs_f64();
        let reuse_delay_s = f64::from(sysctls.reuse_delay_ms()) / 1000.0;
        let mut dests: BTreeMap<DestKey, Count> = BTreeMap::new();
        let mut ports: BTreeMap<u16, Count> = BTreeMap::new();
        let mut snap = Snapshot::default();
        for s in timewait {
            let (l, lport, r, rport) = canonical_tuple((s.local, s.lport, s.remote, s.rport));
            let tw = s.state == Some(TcpState::TimeWait);
            if tw {
                snap.time_wait += 1;
            } else {
                snap.fin_wait2 += 1;
            }
            let c = match side(lport, rport, &self.listening, sysctls) {
                Side::Client => dests.entry((l, r, rport)).or_default(),
                Side::Server => ports.entry(lport).or_default(),
            };
            let timer_s = f64::from(s.timer_expires_ms.unwrap_or(0)) / 1000.0;
            // An orphan still has TIME_WAIT ahead of it after its timer.
            let mut free_in = if tw { timer_s } else { timer_s + tw_len_s };
            if reuse_applies(sysctls, l, r) {
                // Reusable once it is reuse_delay old: it entered TIME_WAIT
                // TIMEWAIT_LEN before its expiry.
                free_in = (free_in - (tw_len_s - reuse_delay_s)).max(0.0);
            }
            c.remaining_s.push(free_in);
            if tw {
                c.tw += 1;
            } else {
                c.fw2 += 1;
            }
        }
        for (key, n) in live {
            if let Some(c) = dests.get_mut(key) {
                c.live += n;
            }
        }
        // Destinations and ports whose rate is still counting are shown even
        // when none of their sockets is left.
        for (k, rate) in &self.dest_rate {
            if rate.per_sec(now_ns) > 0.0 {
                dests.entry(*k).or_default();
            }
        }
        for (p, rate) in &self.port_rate {
            if rate.per_sec(now_ns) > 0.0 {
                ports.entry(*p).or_default();
            }
        }
        let usable = sysctls.usable_ports();
        for (key, c) in dests {
            let rate = self.dest_rate.get(&key).map_or(0.0, |r| r.per_sec(now_ns));
            let reuse = reuse_applies(sysctls, key.0, key.1);
            let hold = if reuse { reuse_delay_s } else { tw_len_s };
            let projection = project(&c.remaining_s, c.live, rate, usable, hold, reuse);
            if projection.exhaustion {
                self.exhaustion_projected.entry(key).or_insert(now_ns);
            }
            snap.destinations.push(DestGroup {
                key,
                time_wait: c.tw,
                fin_wait2: c.fw2,
                live: c.live,
                rate_per_s: rate,
                closers: closers(self.dest_closers.get(&key), &self.comms),
                projection,
                exhaustion_projected_ns: self.exhaustion_projected.get(&key).copied(),
            });
        }
        for (lport, c) in ports {
            snap.local_ports.push(PortGroup {
                lport,
                time_wait: c.tw,
                fin_wait2: c.fw2,
                rate_per_s: self
                    .port_rate
                    .get(&lport)
                    .map_or(0.0, |r| r.per_sec(now_ns)),
                closers: closers(self.port_closers.get(&lport), &self.comms),
                listening: self.listening.contains(&lport),
            });
        }
        snap.destinations
            .sort_by(|a, b| b.time_wait.cmp(&a.time_wait).then(a.key.cmp(&b.key)));
        snap.local_ports
            .sort_by(|a, b| b.time_wait.cmp(&a.time_wait).then(a.lport.cmp(&b.lport)));
        snap
    }
}

/// Whether `tcp_tw_reuse` lets `connect()` from `local` to `remote` take a
/// TIME_WAIT port: 1 everywhere, 2 on loopback only; both need timestamps.
#[must_use]
pub fn reuse_applies(sysctls: &Sysctls, local: IpAddr, remote: IpAddr) -> bool {
    let timestamps = sysctls.timestamps.as_ref().is_ok_and(|t| *t != 0);
    match sysctls.tw_reuse {
        Ok(1) => timestamps,
        Ok(2) => timestamps && (local.is_loopback() || remote.is_loopback()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn sysctls(range: (u16, u16), reuse: u32) -> Sysctls {
        Sysctls {
            port_range: Ok(range),
            reserved_ports: Ok(vec![]),
            tw_reuse: Ok(reuse),
            tw_reuse_delay_ms: Some(Ok(1000)),
            timestamps: Ok(1),
            max_tw_buckets: Ok(262_144),
            fin_timeout_s: Ok(60),
            tw_recycle: None,
        }
    }

    const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    fn sock(state: TcpState, lport: u16, remote: IpAddr, rport: u16) -> DiagSocket {
        DiagSocket {
            state: Some(state),
            local: ME,
            lport,
            remote,
            rport,
            inode: 0,
            recv_queue: 0,
            send_queue: 0,
            timer_expires_ms: Some(50_000),
            timer: 3,
            cookie: 0,
        }
    }

    #[test]
    fn sides_follow_listeners_then_the_ephemeral_range() {
        let s = sysctls((32768, 60999), 0);
        let mut l = HashSet::new();
        assert_eq!(side(40000, 80, &l, &s), Side::Client);
        assert_eq!(side(8080, 40000, &l, &s), Side::Server);
        assert_eq!(side(8080, 9090, &l, &s), Side::Server, "lower port serves");
        l.insert(40000);
        assert_eq!(side(40000, 80, &l, &s), Side::Server, "a listener wins");
    }

    #[test]
    fn projections_follow_timers_rate_and_range() {
        // 28 232 ports, 2 000 in TIME_WAIT freeing over the next 20 s, and
        // 480 new ones a second: full after (28 232 - 2 000) / 480 s at most.
        let old: Vec<f64> = (0..2_000).map(|i| f64::from(i) / 100.0).collect();
        let p = project(&old, 0, 480.0, Some(28_232), 60.0, false);
        assert!(p.exhaustion);
        assert_eq!(p.projected, 28_232);
        let eta = p.eta_s.unwrap();
        assert!(
            eta > 28_232.0 / 480.0 - 20.0 && eta <= 28_232.0 / 480.0 + 0.1,
            "{eta}"
        );
        assert!((p.ceiling_per_s.unwrap() - 28_232.0 / 60.0).abs() < 1e-9);
        // 420/s: 25 200 at steady state, below the range: no exhaustion.
        let p = project(&old, 0, 420.0, Some(28_232), 60.0, false);
        assert!(!p.exhaustion, "{p:?}");
        assert_eq!(p.eta_s, None);
        assert!(p.projected >= 25_200 && p.projected < 28_232, "{p:?}");
        // The ports already held count: 100 usable, 90 held for the next
        // minute, 1/s more: full within about ten seconds.
        let held = vec![59.0; 90];
        let p = project(&held, 0, 1.0, Some(100), 60.0, false);
        let eta = p.eta_s.unwrap();
        assert!((9.9..=10.1).contains(&eta), "{eta}");
        // Reuse after a second: the same rate holds far fewer ports.
        let p = project(&[], 0, 420.0, Some(28_232), 1.0, true);
        assert!(!p.exhaustion);
        assert_eq!(p.projected, 420);
        // Unknown range: no verdict.
        let p = project(&[], 0, 420.0, None, 60.0, false);
        assert!(!p.exhaustion && p.ceiling_per_s.is_none());
        // Already full: exhaustion now, whatever the rate.
        let p = project(&held, 10, 0.0, Some(100), 60.0, false);
        assert_eq!(p.eta_s, Some(0.0));
        assert_eq!(p.in_use, 100);
    }

    #[test]
    fn groups_by_destination_and_port_with_rates_and_closers() {
        let s = sysctls((40000, 40099), 0);
        let mut c = Census::default();
        c.saw_listeners([8080]);
        // 40 client closes to SERVER:80 in one second, by pid 7.
        for i in 0..40u16 {
            c.on_entry(
                (ME, 40000 + i, SERVER, 80),
                10 * NS + u64::from(i) * (NS / 40),
                Some((7, "client")),
                &s,
            );
        }
        // 3 server-side closes on 8080 by pid 9.
        for i in 0..3u16 {
            c.on_entry(
                (ME, 8080, SERVER, 50000 + i),
                10 * NS,
                Some((9, "server")),
                &s,
            );
        }
        let tw: Vec<_> = (0..40u16)
            .map(|i| sock(TcpState::TimeWait, 40000 + i, SERVER, 80))
            .chain((0..3u16).map(|i| sock(TcpState::TimeWait, 8080, SERVER, 50000 + i)))
            .collect();
        let mut live = LiveCounts::new();
        for l in [
            sock(TcpState::Established, 40050, SERVER, 80),
            sock(TcpState::Listen, 8080, SERVER, 0),
            // A server-side socket: not a port this host's clients use.
            sock(TcpState::CloseWait, 8080, SERVER, 40051),
        ] {
            let l = DiagSocket { timer: 0, ..l };
            c.count_live(&mut live, &l, &s);
        }
        assert_eq!(live.len(), 1, "{live:?}");
        let snap = c.snapshot(11 * NS, &tw, &live, &s);
        assert_eq!(snap.time_wait, 43);
        let d = &snap.destinations[0];
        assert_eq!(d.key, (ME, SERVER, 80));
        assert_eq!((d.time_wait, d.live), (40, 1));
        assert!((d.rate_per_s - 40.0).abs() < 1e-9, "{}", d.rate_per_s);
        assert_eq!(d.closers, vec![(7, "client".to_owned(), 40)]);
        assert!(d.projection.exhaustion, "40/s x 60 s > 100 ports");
        assert_eq!(d.exhaustion_projected_ns, Some(11 * NS));
        assert_eq!(snap.destination(SERVER, 80).len(), 1);
        let p = &snap.local_ports[0];
        assert_eq!((p.lport, p.time_wait, p.listening), (8080, 3, true));
        assert_eq!(p.closers, vec![(9, "server".to_owned(), 3)]);
        // The first projection time sticks.
        let snap = c.snapshot(12 * NS, &tw, &live, &s);
        assert_eq!(snap.destinations[0].exhaustion_projected_ns, Some(11 * NS));
    }

    #[test]
    fn a_closer_without_a_comm_is_named_from_proc_or_a_later_record() {
        let s = sysctls((40000, 40099), 0);
        let me = std::process::id();
        let my_comm = crate::procs::comm(me).expect("our own /proc entry");
        let mut c = Census::default();
        c.on_entry((ME, 40000, SERVER, 80), 10 * NS, Some((me, "")), &s);
        // A pid that cannot exist: its first record has no comm and /proc
        // has none, its second record names it.
        let gone = u32::MAX;
        c.on_entry((ME, 40001, SERVER, 80), 10 * NS, Some((gone, "")), &s);
        c.on_entry((ME, 40002, SERVER, 80), 10 * NS, Some((gone, "late")), &s);
        let tw: Vec<_> = (0..3u16)
            .map(|i| sock(TcpState::TimeWait, 40000 + i, SERVER, 80))
            .collect();
        let snap = c.snapshot(11 * NS, &tw, &LiveCounts::new(), &s);
        let mut closers = snap.destinations[0].closers.clone();
        closers.sort();
        assert_eq!(
            closers,
            vec![(me, my_comm, 1), (gone, "late".to_owned(), 2)]
        );
    }

    #[test]
    fn rates_forget_old_seconds() {
        let mut r = Rate::default();
        for i in 0..100 {
            r.add(NS + i);
        }
        assert!(
            (r.per_sec(NS + 100) - 100.0).abs() < 1e-9,
            "one-second floor"
        );
        assert!((r.per_sec(5 * NS) - 25.0).abs() < 1e-9);
        assert!(r.per_sec((2 + RATE_WINDOW_S) * NS).abs() < 1e-9);
    }

    #[test]
    fn reuse_needs_the_sysctl_timestamps_and_for_2_loopback() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(!reuse_applies(&sysctls((1, 2), 0), lo, lo));
        assert!(reuse_applies(&sysctls((1, 2), 2), lo, lo));
        assert!(!reuse_applies(&sysctls((1, 2), 2), ME, SERVER));
        assert!(reuse_applies(&sysctls((1, 2), 1), ME, SERVER));
        let mut s = sysctls((1, 2), 1);
        s.timestamps = Ok(0);
        assert!(!reuse_applies(&s, ME, SERVER));
    }
}
