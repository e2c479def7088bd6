//! The TIME_WAIT census of `--timewait`: timewait sockets grouped by
//! destination (the side that spends ephemeral ports) and by local port (the
//! server side), with the rate of new ones, who closed them, and a projection
//! of port use against `ip_local_port_range`.
//!
//! Pure: sockets, entries and sysctls go in, groups come out. The TIME_WAIT
//! analysis feeds it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use tcptrace_common::TcpState;

pub use crate::model::timewait::projection::{Projection, RATE_WINDOW_S, project};
use crate::model::{
    aging::Aged,
    socket::{DiagSocket, Tuple, canonical_tuple},
    sysctl::Sysctls,
    timewait::{lives::TIMEWAIT_LEN, projection::Rate},
};

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

/// A destination or port is forgotten when it saw no new entry for this
/// long: its TIME_WAIT sockets (60 s, after an orphan's FIN_WAIT2 phase of
/// `tcp_fin_timeout`, 60 s by default) are gone well before.
pub const STALE_AFTER: Duration = Duration::from_mins(5);
/// At most this many destinations (and as many ports) are followed; a new
/// one beyond evicts the least recently active, counted in
/// [`Census::forgotten`].
pub const MAX_GROUPS: usize = 65_536;
/// How long a closer's name learnt from a record or /proc names its later
/// records that come without one. Short, so that a reused pid is not
/// named after the process that had it before (pids wrap far slower).
pub const NAME_TTL: Duration = Duration::from_secs(10);

/// Closers of one group: TIME_WAIT sockets entered, by (pid, comm). A
/// reused pid is another closer, since its records carry the new comm.
type CloserCounts = HashMap<(u32, String), u64>;

/// One destination's or port's history.
#[derive(Debug, Default)]
struct Group {
    rate: Rate,
    closers: CloserCounts,
    /// When tcptrace first projected exhaustion for it (destinations).
    exhaustion_projected: Option<u64>,
}

/// Counts entries, rates and closers over time; [`Census::snapshot`] groups
/// the sockets of one poll. Groups without an entry for [`STALE_AFTER`]
/// are forgotten at the next snapshot.
#[derive(Debug)]
pub struct Census {
    dests: Aged<DestKey, Group>,
    ports: Aged<u16, Group>,
    /// Names of recent closers, for their records without one.
    names: Aged<u32, String>,
    /// Every port a listener was seen on.
    listening: HashSet<u16>,
}

impl Default for Census {
    fn default() -> Self {
        Census {
            dests: Aged::new(STALE_AFTER, MAX_GROUPS),
            ports: Aged::new(STALE_AFTER, MAX_GROUPS),
            names: Aged::new(NAME_TTL, MAX_GROUPS),
            listening: HashSet::new(),
        }
    }
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

fn closers(counts: Option<&CloserCounts>) -> Closers {
    let mut v: Closers = counts
        .into_iter()
        .flatten()
        .map(|((pid, comm), n)| (*pid, comm.clone(), *n))
        .collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    v
}

/// Count one entry closed by `pid` named `comm` (empty if unknown): a
/// named record takes over the count of the pid's unnamed ones.
fn count_closer(counts: &mut CloserCounts, pid: u32, comm: String) {
    let unnamed = if comm.is_empty() {
        0
    } else {
        counts.remove(&(pid, String::new())).unwrap_or(0)
    };
    *counts.entry((pid, comm)).or_default() += 1 + unnamed;
}

impl Census {
    /// Ports with a listener now (from a sock_diag dump of LISTEN sockets).
    pub fn saw_listeners(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.listening.extend(ports);
    }

    /// A full socket became a timewait socket at `ts_ns`; this side closed
    /// first. `closer` is the process that closed it, when known;
    /// `live_comm` names a closer whose record came without a comm.
    pub fn on_entry(
        &mut self,
        tuple: Tuple,
        ts_ns: u64,
        closer: Option<(u32, &str)>,
        sysctls: &Sysctls,
        live_comm: impl FnOnce(u32) -> Option<String>,
    ) {
        let (l, lport, r, rport) = canonical_tuple(tuple);
        let closer = closer.map(|(pid, comm)| {
            let name = if comm.is_empty() {
                // A record without a comm: the kernel's comm cache had
                // lost the closer's thread to another one. A recent
                // record named it, or the process has it while it lives.
                match self.names.get(&pid) {
                    Some(n) => n.clone(),
                    None => live_comm(pid).unwrap_or_default(),
                }
            } else {
                comm.to_owned()
            };
            if !name.is_empty() {
                self.names.touch(pid, ts_ns, String::new).clone_from(&name);
            }
            (pid, name)
        });
        let group = match side(lport, rport, &self.listening, sysctls) {
            Side::Client => self.dests.touch((l, r, rport), ts_ns, Group::default),
            Side::Server => self.ports.touch(lport, ts_ns, Group::default),
        };
        group.rate.add(ts_ns);
        if let Some((pid, name)) = closer {
            count_closer(&mut group.closers, pid, name);
        }
    }

    /// Destinations and ports forgotten so far: stale, or evicted by the
    /// cap.
    #[must_use]
    pub fn forgotten(&self) -> u64 {
        self.dests.forgotten() + self.ports.forgotten()
    }

    /// Groups followed now (destinations and ports), and names cached.
    #[must_use]
    pub fn sizes(&self) -> (usize, usize) {
        (self.dests.len() + self.ports.len(), self.names.len())
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
        self.dests.prune(now_ns);
        self.ports.prune(now_ns);
        self.names.prune(now_ns);
        for (k, g) in self.dests.iter() {
            if g.rate.per_sec(now_ns) > 0.0 {
                dests.entry(*k).or_default();
            }
        }
        for (p, g) in self.ports.iter() {
            if g.rate.per_sec(now_ns) > 0.0 {
                ports.entry(*p).or_default();
            }
        }
        let usable = sysctls.usable_ports();
        for (key, c) in dests {
            let rate = self.dests.get(&key).map_or(0.0, |g| g.rate.per_sec(now_ns));
            let reuse = reuse_applies(sysctls, key.0, key.1);
            let hold = if reuse { reuse_delay_s } else { tw_len_s };
            let projection = project(&c.remaining_s, c.live, rate, usable, hold, reuse);
            let projected_ns = if projection.exhaustion {
                let g = self.dests.touch(key, now_ns, Group::default);
                Some(*g.exhaustion_projected.get_or_insert(now_ns))
            } else {
                self.dests.get(&key).and_then(|g| g.exhaustion_projected)
            };
            snap.destinations.push(DestGroup {
                key,
                time_wait: c.tw,
                fin_wait2: c.fw2,
                live: c.live,
                rate_per_s: rate,
                closers: closers(self.dests.get(&key).map(|g| &g.closers)),
                projection,
                exhaustion_projected_ns: projected_ns,
            });
        }
        for (lport, c) in ports {
            snap.local_ports.push(PortGroup {
                lport,
                time_wait: c.tw,
                fin_wait2: c.fw2,
                rate_per_s: self
                    .ports
                    .get(&lport)
                    .map_or(0.0, |g| g.rate.per_sec(now_ns)),
                closers: closers(self.ports.get(&lport).map(|g| &g.closers)),
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
mod tests;
