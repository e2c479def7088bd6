//! The lives of timewait sockets, which `inet_sock_set_state` never
//! reports: followed through sock_diag polls (their substate and timer),
//! with entries from the kernel's records or from the polls alone.
//! Mechanism: docs/internals.md, "TIME_WAIT lives".

use std::{collections::HashMap, time::Duration};

use tcptrace_common::TcpState;

use crate::model::{
    histogram::Hist,
    socket::{DiagSocket, Tuple, canonical_tuple},
};

/// `TCP_TIMEWAIT_LEN` (include/net/tcp.h): fixed at 60 s on Linux.
pub const TIMEWAIT_LEN: Duration = Duration::from_mins(1);

/// How much later a TIME_WAIT timer may end than the previous poll saw
/// before it is a new life ([`Tracker::from_polls`]): well above the jitter
/// of the readings (the timer's jiffy, the dump's own time), well below the
/// second a reuse needs (`tcp_tw_reuse_delay`).
const RENEWED_SLACK_NS: u64 = 100_000_000;

/// One timewait socket being followed.
#[derive(Clone, Debug)]
struct Tw {
    /// When the full socket was swapped out (from the kernel event), ns.
    entered_ns: Option<u64>,
    /// When its TIME_WAIT substate began (derived from the timer), ns.
    time_wait_ns: Option<u64>,
    /// When the timer will fire, ns.
    expires_ns: u64,
    last_seen_ns: u64,
    seen: bool,
    /// A poll saw it in substate FIN_WAIT2 (an orphan waiting for the FIN).
    fin_wait2_seen: bool,
    pub pid: Option<u32>,
}

impl Tw {
    /// A socket first seen by a poll at `now_ns`.
    fn seen_at(now_ns: u64, entered_ns: Option<u64>) -> Self {
        Tw {
            entered_ns,
            time_wait_ns: None,
            expires_ns: u64::MAX,
            last_seen_ns: now_ns,
            seen: true,
            fin_wait2_seen: false,
            pid: None,
        }
    }
}

impl Tw {
    /// When this life ended as `end`, noticed at `now_ns`: at its timer's
    /// expiry, exact however late it is noticed; killed somewhere between
    /// its last sighting and now (the midpoint).
    fn end_ns(&self, end: End, now_ns: u64) -> u64 {
        match end {
            End::Expired => self.expires_ns,
            End::KilledEarly => self.last_seen_ns + now_ns.saturating_sub(self.last_seen_ns) / 2,
        }
    }
}

/// How a timewait socket ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Expired,
    /// Gone before its timer: port reuse or a RST.
    KilledEarly,
}

/// Counts and histograms of timewait sockets.
#[derive(Debug, Default)]
pub struct Tracker {
    live: HashMap<Tuple, Tw>,
    /// Full sockets that entered timewait (kernel events).
    pub entered: u64,
    pub expired: u64,
    pub killed_early: u64,
    /// Of `killed_early`, those known to be port reuse: the same 4-tuple
    /// connected or closed again while its TIME_WAIT was alive.
    pub killed_by_reuse: u64,
    /// Entries never seen as a timewait socket: not created
    /// (`tcp_max_tw_buckets` overflow) or gone before the next poll.
    pub never_seen: u64,
    /// TIME_WAIT dwell of completed sockets.
    pub time_wait: Hist,
    /// FIN_WAIT2 spent as an orphaned timewait socket, waiting for the peer's
    /// FIN (`tcp_fin_timeout`), separate from a full socket's FIN_WAIT2.
    pub fin_wait2_orphan: Hist,
    /// Timewait sockets by substate at the last poll.
    pub population_time_wait: u64,
    pub population_fin_wait2: u64,
    entries: Entries,
}

/// Where a [`Tracker`]'s entries come from.
#[derive(Clone, Copy, Debug, Default)]
enum Entries {
    /// [`Tracker::on_entry`], from the kernel's records.
    #[default]
    Records,
    /// The polls alone ([`Tracker::from_polls`]), with `tcp_fin_timeout`
    /// (the orphan FIN_WAIT2 timer) if readable.
    Polls { fin_timeout: Option<Duration> },
}

impl Tracker {
    /// A tracker fed by polls alone, with no entry record: an entry is a
    /// life the polls saw begin. `fin_timeout` (`net.ipv4.tcp_fin_timeout`,
    /// None if unreadable) dates the start of orphan FIN_WAIT2 phases from
    /// their timers; without it they are not timed.
    #[must_use]
    pub fn from_polls(fin_timeout: Option<Duration>) -> Self {
        Tracker {
            entries: Entries::Polls { fin_timeout },
            ..Tracker::default()
        }
    }

    /// Timewait sockets followed now, entries not seen by a poll yet
    /// included. None: a poll of the namespace can only find new ones.
    #[must_use]
    pub fn following(&self) -> usize {
        self.live.len()
    }

    /// Add `other`'s counts, histograms and populations, not its lives:
    /// totals over the trackers of several namespaces.
    pub fn absorb(&mut self, other: &Tracker) {
        self.entered += other.entered;
        self.expired += other.expired;
        self.killed_early += other.killed_early;
        self.killed_by_reuse += other.killed_by_reuse;
        self.never_seen += other.never_seen;
        self.time_wait.merge(&other.time_wait);
        self.fin_wait2_orphan.merge(&other.fin_wait2_orphan);
        self.population_time_wait += other.population_time_wait;
        self.population_fin_wait2 += other.population_fin_wait2;
    }

    /// A full socket left FIN_WAIT2 or CLOSING for a timewait socket.
    pub fn on_entry(&mut self, tuple: Tuple, ts_ns: u64, pid: Option<u32>) {
        self.entered += 1;
        let tuple = canonical_tuple(tuple);
        // The same 4-tuple entering again while a life of it is followed:
        // one 4-tuple has one socket at a time, so that life is over. Before
        // its timer, the port was reused (tcp_tw_reuse) and the new
        // connection closed before the next poll: the old life ended early,
        // somewhere between its last sighting and now. After its timer, it
        // expired and no poll has noticed yet.
        if let Some(old) = self.live.remove(&tuple) {
            if old.seen && ts_ns >= old.expires_ns {
                self.count_end(&old, End::Expired, ts_ns);
            } else {
                self.count_end(&old, End::KilledEarly, ts_ns);
                self.killed_by_reuse += 1;
            }
        }
        // A new life.
        self.live.insert(
            tuple,
            Tw {
                fin_wait2_seen: false,
                entered_ns: Some(ts_ns),
                time_wait_ns: None,
                expires_ns: u64::MAX,
                last_seen_ns: ts_ns,
                seen: false,
                pid,
            },
        );
    }

    /// Of the lives the last [`Tracker::on_poll`] reported killed early,
    /// `n` had their 4-tuple held by a live socket right after the poll:
    /// `tcp_tw_reuse` gave their port to a connection still open (the
    /// others were ended by a RST, or reused by a connection already gone).
    pub fn reused_by_open_connections(&mut self, n: u64) {
        self.killed_by_reuse += n;
    }

    /// Count the end of a followed life: its TIME_WAIT dwell, when its
    /// start is known, and how it ended.
    fn count_end(&mut self, t: &Tw, end: End, now_ns: u64) {
        if let Some(began) = t.time_wait_ns {
            self.time_wait
                .add(t.end_ns(end, now_ns).saturating_sub(began));
        }
        match end {
            End::Expired => self.expired += 1,
            End::KilledEarly => self.killed_early += 1,
        }
    }

    /// With entries from polls: a tuple seen for the first time, or whose
    /// TIME_WAIT timer moved later (a new life: the old one ended between
    /// the two polls), is an entry.
    fn poll_entry(
        &mut self,
        tuple: Tuple,
        s: &DiagSocket,
        now_ns: u64,
        expires_ns: u64,
        fin_timeout: Option<Duration>,
    ) {
        let renewed = self.live.get(&tuple).is_some_and(|t| {
            t.seen
                && t.time_wait_ns.is_some()
                && expires_ns > t.expires_ns.saturating_add(RENEWED_SLACK_NS)
        });
        if renewed && let Some(t) = self.live.remove(&tuple) {
            self.count_end(&t, End::KilledEarly, now_ns);
            self.killed_by_reuse += 1;
        }
        if !self.live.contains_key(&tuple) {
            self.entered += 1;
            // An orphan's timer was set to tcp_fin_timeout when it became a
            // timewait socket.
            let entered_ns = fin_timeout
                .filter(|_| s.state != Some(TcpState::TimeWait))
                .and_then(|f| u64::try_from(f.as_nanos()).ok())
                .map(|f| expires_ns.saturating_sub(f));
            self.live.insert(tuple, Tw::seen_at(now_ns, entered_ns));
        }
    }

    /// One sock_diag poll at `now_ns` (monotonic), with `poll` the interval
    /// between polls. `sockets` are the namespace's timewait sockets.
    pub fn on_poll(
        &mut self,
        now_ns: u64,
        poll: Duration,
        sockets: &[DiagSocket],
    ) -> Vec<(Tuple, End, Option<u32>)> {
        let poll_ns = u64::try_from(poll.as_nanos()).unwrap_or(u64::MAX);
        let tw_len_ns = u64::try_from(TIMEWAIT_LEN.as_nanos()).unwrap_or(u64::MAX);
        self.population_time_wait = 0;
        self.population_fin_wait2 = 0;
        let mut present = std::collections::HashSet::new();
        for s in sockets {
            let tuple = canonical_tuple((s.local, s.lport, s.remote, s.rport));
            present.insert(tuple);
            let remaining_ns = u64::from(s.timer_expires_ms.unwrap_or(0)) * 1_000_000;
            let expires_ns = now_ns + remaining_ns;
            if let Entries::Polls { fin_timeout } = self.entries {
                self.poll_entry(tuple, s, now_ns, expires_ns, fin_timeout);
            }
            let t = self
                .live
                .entry(tuple)
                .or_insert_with(|| Tw::seen_at(now_ns, None));
            t.seen = true;
            t.last_seen_ns = now_ns;
            t.expires_ns = expires_ns;
            if s.state == Some(TcpState::TimeWait) {
                self.population_time_wait += 1;
                if t.time_wait_ns.is_none() {
                    let began = (now_ns + remaining_ns).saturating_sub(tw_len_ns);
                    t.time_wait_ns = Some(began);
                    // Only sockets a poll saw as orphans had a FIN_WAIT2
                    // phase; for the rest the gap is the timer's jiffy.
                    if let Some(entered) = t.entered_ns
                        && t.fin_wait2_seen
                        && began > entered
                    {
                        self.fin_wait2_orphan.add(began - entered);
                    }
                }
            } else {
                t.fin_wait2_seen = true;
                self.population_fin_wait2 += 1;
            }
        }
        // Gone from this poll; one not seen yet gets one poll to show up.
        let gone: Vec<(Tuple, Tw)> = self
            .live
            .extract_if(|tuple, t| {
                !present.contains(tuple)
                    && (t.seen || now_ns.saturating_sub(t.last_seen_ns) > poll_ns)
            })
            .collect();
        let mut ended = Vec::new();
        for (tuple, t) in gone {
            if !t.seen {
                self.never_seen += 1;
                continue;
            }
            let end = if now_ns + poll_ns >= t.expires_ns {
                End::Expired
            } else {
                End::KilledEarly
            };
            self.count_end(&t, end, now_ns);
            ended.push((tuple, end, t.pid));
        }
        ended
    }

    /// Predicted TIME_WAIT dwell of the live sockets that have a known start:
    /// `(tuple, dwell)` where dwell = timer expiry - TIME_WAIT start.
    #[must_use]
    pub fn predicted(&self) -> Vec<(Tuple, Duration)> {
        self.live
            .iter()
            .filter_map(|(k, t)| {
                let began = t.time_wait_ns?;
                (t.expires_ns != u64::MAX).then(|| (*k, Duration::from_nanos(t.expires_ns - began)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
