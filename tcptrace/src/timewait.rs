//! TIME_WAIT tracking. `inet_sock_set_state` never reports TIME_WAIT: at
//! `FIN_WAIT2 -> CLOSE` or `CLOSING -> CLOSE` the kernel swaps the full socket
//! for a small timewait socket (`tcp_time_wait()`), visible only to sock_diag.
//!
//! Entries come from those transitions (exact time). Lives are observed by
//! polling sock_diag for timewait sockets: their substate (FIN_WAIT2 for an
//! orphan waiting for the peer's FIN, then TIME_WAIT) and their timer. The
//! TIME_WAIT timer is `TCP_TIMEWAIT_LEN` (60 s) when set, so the moment a
//! socket entered TIME_WAIT is `seen - (60 s - remaining)`, and a natural end
//! is exactly the timer's expiry. A socket that vanishes well before its
//! expiry was killed early: its port was reused, or it received a RST. Those
//! ends are known only to the poll interval.

use std::{collections::HashMap, time::Duration};

use tcptrace_common::TcpState;

use crate::{histogram::Hist, sockdiag::DiagSocket};

/// `TCP_TIMEWAIT_LEN` (include/net/tcp.h): fixed at 60 s on Linux.
pub const TIMEWAIT_LEN: Duration = Duration::from_mins(1);

pub use crate::sockdiag::{Tuple, canonical_tuple};

/// The namespace's timewait sockets that pass the family and port filters.
pub fn poll_sockets(
    filters: &tcptrace_common::Config,
) -> Result<Vec<DiagSocket>, crate::sockdiag::DiagError> {
    let mut socks = crate::sockdiag::dump_timewait()?;
    socks.retain(|s| {
        let family = if canonical_tuple((s.local, 0, s.remote, 0)).0.is_ipv4() {
            tcptrace_common::AF_INET
        } else {
            tcptrace_common::AF_INET6
        };
        filters.accepts(family, s.lport, s.rport)
    });
    Ok(socks)
}

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
}

impl Tracker {
    /// A full socket left FIN_WAIT2 or CLOSING for a timewait socket.
    pub fn on_entry(&mut self, tuple: Tuple, ts_ns: u64, pid: Option<u32>) {
        self.entered += 1;
        let tuple = canonical_tuple(tuple);
        // The same 4-tuple entering again while its timewait socket lives:
        // the port was reused (tcp_tw_reuse) and the new connection closed
        // before the next poll. The old life ended early, at the reuse.
        if let Some(old) = self.live.get(&tuple)
            && old.seen
            && ts_ns < old.expires_ns
        {
            if let Some(began) = old.time_wait_ns {
                self.time_wait.add(old.last_seen_ns.max(began) - began);
            }
            self.killed_early += 1;
            self.killed_by_reuse += 1;
        }
        let t = self.live.entry(tuple).or_insert(Tw {
            entered_ns: None,
            time_wait_ns: None,
            expires_ns: u64::MAX,
            last_seen_ns: ts_ns,
            seen: false,
            fin_wait2_seen: false,
            pid,
        });
        // A reused tuple starts a new life.
        *t = Tw {
            fin_wait2_seen: false,
            entered_ns: Some(ts_ns),
            time_wait_ns: None,
            expires_ns: u64::MAX,
            last_seen_ns: ts_ns,
            seen: false,
            pid,
        };
    }

    /// A connection on `tuple` was established at `ts_ns` (it took its port
    /// with `connect()`). If a TIME_WAIT socket of the same 4-tuple was
    /// alive, `tcp_tw_reuse` killed it to free the port: its life ends early.
    /// Returns whether it did.
    pub fn on_connected(&mut self, tuple: Tuple, ts_ns: u64) -> bool {
        let tuple = canonical_tuple(tuple);
        let Some(old) = self.live.get(&tuple) else {
            return false;
        };
        if ts_ns >= old.expires_ns {
            return false;
        }
        if let Some(began) = old.time_wait_ns {
            self.time_wait.add(ts_ns.max(began) - began);
        }
        self.killed_early += 1;
        self.killed_by_reuse += 1;
        self.live.remove(&tuple);
        true
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
            let t = self.live.entry(tuple).or_insert(Tw {
                entered_ns: None,
                time_wait_ns: None,
                expires_ns: u64::MAX,
                last_seen_ns: now_ns,
                seen: true,
                fin_wait2_seen: false,
                pid: None,
            });
            t.seen = true;
            t.last_seen_ns = now_ns;
            t.expires_ns = now_ns + remaining_ns;
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
        let mut ended = Vec::new();
        self.live.retain(|tuple, t| {
            if present.contains(tuple) {
                return true;
            }
            if !t.seen {
                // Not seen yet: give it one poll to show up.
                if now_ns.saturating_sub(t.last_seen_ns) <= poll_ns {
                    return true;
                }
                self.never_seen += 1;
                return false;
            }
            let end = if now_ns + poll_ns >= t.expires_ns {
                End::Expired
            } else {
                End::KilledEarly
            };
            if let Some(began) = t.time_wait_ns {
                let end_ns = match end {
                    // The timer's expiry is exact; the poll only saw it late.
                    End::Expired => t.expires_ns,
                    // Somewhere between the last sighting and now.
                    End::KilledEarly => t.last_seen_ns + (now_ns - t.last_seen_ns) / 2,
                };
                self.time_wait.add(end_ns.saturating_sub(began));
            }
            match end {
                End::Expired => self.expired += 1,
                End::KilledEarly => self.killed_early += 1,
            }
            ended.push((*tuple, end, t.pid));
            false
        });
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
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn tw(port: u16, state: TcpState, remaining_ms: u32) -> DiagSocket {
        DiagSocket {
            state: Some(state),
            local: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lport: port,
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rport: 80,
            inode: 0,
            recv_queue: 0,
            send_queue: 0,
            timer_expires_ms: Some(remaining_ms),
            timer: 3,
            cookie: 0,
        }
    }

    fn tuple(port: u16) -> Tuple {
        (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            80,
        )
    }

    #[test]
    fn natural_expiry_gives_the_timer_exact_dwell() {
        let mut t = Tracker::default();
        t.on_entry(tuple(5000), 10 * S, Some(7));
        // First poll 1 s later: TIME_WAIT with 59 s left.
        t.on_poll(
            11 * S,
            Duration::from_secs(1),
            &[tw(5000, TcpState::TimeWait, 59_000)],
        );
        assert_eq!(t.population_time_wait, 1);
        let pred = t.predicted();
        assert_eq!(pred[0].1, TIMEWAIT_LEN);
        // Gone at the poll after its expiry (t = 70 s).
        let ended = t.on_poll(71 * S, Duration::from_secs(1), &[]);
        assert_eq!(ended, vec![(tuple(5000), End::Expired, Some(7))]);
        assert_eq!(t.expired, 1);
        assert_eq!(t.time_wait.count(), 1);
        assert_eq!(t.time_wait.max_ns, 60 * S);
    }

    #[test]
    fn early_disappearance_is_a_kill_and_orphan_fin_wait2_is_timed() {
        let mut t = Tracker::default();
        t.on_entry(tuple(5001), 10 * S, None);
        t.on_poll(
            10 * S + S / 2,
            Duration::from_secs(1),
            &[tw(5001, TcpState::FinWait2, 59_500)],
        );
        assert_eq!(t.population_fin_wait2, 1);
        // The peer's FIN arrived at 12 s: TIME_WAIT with 60 s from then.
        t.on_poll(
            13 * S,
            Duration::from_secs(1),
            &[tw(5001, TcpState::TimeWait, 59_000)],
        );
        assert_eq!(t.fin_wait2_orphan.count(), 1);
        assert_eq!(t.fin_wait2_orphan.max_ns, 2 * S);
        let ended = t.on_poll(20 * S, Duration::from_secs(1), &[]);
        assert_eq!(ended[0].1, End::KilledEarly);
        assert_eq!(t.killed_early, 1);
    }

    #[test]
    fn reuse_within_a_poll_ends_the_old_life_early() {
        let mut t = Tracker::default();
        t.on_entry(tuple(5003), 10 * S, None);
        t.on_poll(
            11 * S,
            Duration::from_secs(1),
            &[tw(5003, TcpState::TimeWait, 59_000)],
        );
        // Reused and closed again before the next poll.
        t.on_entry(tuple(5003), 11 * S + S / 2, None);
        assert_eq!(t.killed_early, 1);
        assert_eq!(t.killed_by_reuse, 1);
        assert_eq!(t.entered, 2);
        assert_eq!(t.time_wait.count(), 1);
    }

    #[test]
    fn a_connection_on_a_live_time_wait_tuple_is_reuse() {
        let mut t = Tracker::default();
        t.on_entry(tuple(5005), 10 * S, None);
        t.on_poll(
            11 * S,
            Duration::from_secs(1),
            &[tw(5005, TcpState::TimeWait, 59_000)],
        );
        assert!(!t.on_connected(tuple(5006), 12 * S), "another tuple");
        assert!(t.on_connected(tuple(5005), 12 * S));
        assert_eq!((t.killed_early, t.killed_by_reuse), (1, 1));
        assert_eq!(t.time_wait.max_ns, 2 * S);
        // Gone from the live set: the next poll does not count it again.
        t.on_poll(13 * S, Duration::from_secs(1), &[]);
        assert_eq!(t.killed_early, 1);
        // A tuple whose timer had run out was not killed.
        t.on_entry(tuple(5007), 20 * S, None);
        t.on_poll(
            21 * S,
            Duration::from_secs(1),
            &[tw(5007, TcpState::TimeWait, 100)],
        );
        assert!(!t.on_connected(tuple(5007), 22 * S));
    }

    #[test]
    fn no_orphan_sample_without_an_orphan_phase() {
        let mut t = Tracker::default();
        t.on_entry(tuple(5004), 10 * S, None);
        // Straight to TIME_WAIT; the timer's jiffy makes `began` a bit late.
        t.on_poll(
            11 * S,
            Duration::from_secs(1),
            &[tw(5004, TcpState::TimeWait, 59_003)],
        );
        assert_eq!(t.fin_wait2_orphan.count(), 0);
    }

    #[test]
    fn an_entry_that_never_shows_up_is_counted() {
        let mut t = Tracker::default();
        t.on_entry(tuple(5002), 10 * S, None);
        t.on_poll(10 * S + S / 2, Duration::from_secs(1), &[]);
        assert_eq!(t.never_seen, 0, "one poll of grace");
        t.on_poll(12 * S, Duration::from_secs(1), &[]);
        assert_eq!(t.never_seen, 1);
        assert_eq!(t.entered, 1);
    }
}
