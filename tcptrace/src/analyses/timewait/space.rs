//! One network namespace's share of `--timewait`: its sysctls, TIME_WAIT
//! lives, census, failures and announced projections, asked of that
//! namespace's own sock_diag socket, sysctls and netstat. 4-tuples collide
//! across namespaces, so nothing here ever mixes two namespaces' sockets.

use std::{net::IpAddr, time::Duration};

use tcptrace_common::TcpState;

use super::LIVE_STATES;
use crate::{
    analyses::{AskError, Cx, TW_POLL},
    kernel::clock::monotonic_ns,
    model::{
        aging::Aged,
        event::StateChange,
        filter::PortFilter,
        socket::{DiagSocket, Tuple},
        sysctl::Sysctls,
        timewait::{
            advice::{BindFacts, ConnectFacts},
            census::{Census, DestKey, LiveCounts, STALE_AFTER, Snapshot},
            lives::{self, Tracker},
            spaces::Place,
        },
    },
};

/// At most this many exact sock_diag lookups per poll to tell TIME_WAIT
/// sockets killed by port reuse from those killed by a RST
/// ([`Space::find_reuses`]): a few milliseconds of netlink round trips.
const MAX_REUSE_LOOKUPS: usize = 1024;

/// A failed call's (pid, port) or (pid, destination) is forgotten after
/// this long without a failure, and at most [`MAX_FAILURE_GROUPS`] of each
/// are kept per namespace (the least recently failing go first).
const FAILURE_TTL: Duration = Duration::from_mins(10);
pub(super) const MAX_FAILURE_GROUPS: usize = 4096;

/// A request to the namespace that failed: logged, unless the namespace
/// went away meanwhile (`Namespaces` counts those).
pub(super) fn warn(what: &str, place: Place, e: &AskError) {
    if !e.vanished() {
        match place {
            Some(ns) => log::warn!("{what} in network namespace {ns}: {e}"),
            None => log::warn!("{what}: {e}"),
        }
    }
}

/// One namespace's state.
pub(super) struct Space {
    pub sysctls: Sysctls,
    pub tracker: Tracker,
    pub census: Census,
    /// The last polls: timewait sockets at each poll, live ones per report.
    pub polled: Vec<DiagSocket>,
    pub live: LiveCounts,
    /// `TcpExtTCPTimeWaitOverflow` when the namespace was first seen.
    overflow_at_start: Option<u64>,
    pub binds: Aged<(u32, u16), BindFacts>,
    pub connects: Aged<(u32, IpAddr, u16), ConnectFacts>,
    /// Destinations announced as heading for exhaustion, while they are.
    pub announced: Aged<DestKey, ()>,
    /// Failures not explained at once: over the rate of lookups.
    pub unexplained: u64,
}

impl Space {
    /// A namespace first seen: its sysctls, its netstat's overflow count
    /// (the baseline) and its listeners.
    pub fn new(cx: &mut Cx<'_>, place: Place) -> Self {
        let mut s = Space {
            sysctls: Sysctls::unknown("not read yet"),
            tracker: Tracker::default(),
            census: Census::default(),
            polled: Vec::new(),
            live: LiveCounts::new(),
            overflow_at_start: cx.timewait_overflow(place).ok().flatten(),
            binds: Aged::new(FAILURE_TTL, MAX_FAILURE_GROUPS),
            connects: Aged::new(FAILURE_TTL, MAX_FAILURE_GROUPS),
            announced: Aged::new(STALE_AFTER, MAX_FAILURE_GROUPS),
            unexplained: 0,
        };
        s.read_sysctls(cx, place);
        s.poll_listeners(cx, place);
        s
    }

    /// Re-read the sysctls; on a failure the last reading stays.
    pub fn read_sysctls(&mut self, cx: &mut Cx<'_>, place: Place) {
        match cx.sysctls(place) {
            Ok(s) => self.sysctls = s,
            Err(e) => {
                warn("reading the sysctls", place, &e);
                if self.sysctls.port_range.is_err() {
                    self.sysctls = Sysctls::unknown(&e.to_string());
                }
            }
        }
    }

    pub fn poll_listeners(&mut self, cx: &mut Cx<'_>, place: Place) {
        match cx.diag(place, |d| d.dump(&[TcpState::Listen])) {
            Ok(l) => self.census.saw_listeners(l.iter().map(|s| s.lport)),
            Err(e) => warn("sock_diag dump of listeners", place, &e),
        }
    }

    /// A state record of this namespace: an entry into TIME_WAIT.
    /// `live_comm` names a closer whose record came without a comm.
    pub fn on_state(&mut self, s: &StateChange, live_comm: impl FnOnce(u32) -> Option<String>) {
        let e = s.endpoints;
        let tuple = (e.local, e.lport, e.remote, e.rport);
        let closer = s.owner.as_ref().map(|o| (o.pid, o.comm.as_str()));
        self.tracker.on_entry(tuple, s.ts_ns, closer.map(|c| c.0));
        self.census
            .on_entry(tuple, s.ts_ns, closer, &self.sysctls, live_comm);
    }

    /// Follow the timewait sockets of a poll of this namespace.
    pub fn follow(&mut self, cx: &mut Cx<'_>, place: Place, now_ns: u64, socks: Vec<DiagSocket>) {
        let ended = self.tracker.on_poll(now_ns, TW_POLL, &socks);
        self.polled = socks;
        self.find_reuses(cx, place, &ended);
    }

    /// A fresh poll, outside the runtime's (a failure's explanation).
    pub fn poll_timewait(&mut self, cx: &mut Cx<'_>, place: Place, ports: &PortFilter) {
        match cx.diag(place, |d| d.timewait_sockets(ports)) {
            Ok(socks) => self.follow(cx, place, monotonic_ns(), socks),
            Err(e) => warn("sock_diag poll of timewait sockets", place, &e),
        }
    }

    /// Of the lives a poll saw killed early, those whose 4-tuple a live
    /// socket of the namespace holds: `tcp_tw_reuse` gave the port to a
    /// connection that is still open. (A reuse whose connection closed
    /// before the poll shows as a new entry of the tuple,
    /// [`Tracker::on_entry`].) One exact sock_diag lookup per such life, at
    /// most [`MAX_REUSE_LOOKUPS`] per poll; beyond that, the rest stay
    /// "killed early" without a cause.
    fn find_reuses(
        &mut self,
        cx: &mut Cx<'_>,
        place: Place,
        ended: &[(Tuple, lives::End, Option<u32>)],
    ) {
        let killed: Vec<_> = ended
            .iter()
            .filter(|(_, end, _)| *end == lives::End::KilledEarly)
            .map(|(tuple, _, _)| *tuple)
            .take(MAX_REUSE_LOOKUPS)
            .collect();
        if killed.is_empty() {
            return;
        }
        match cx.diag(place, |d| d.held_tuples(&killed)) {
            Ok(held) => {
                let n = held.iter().filter(|h| **h).count();
                self.tracker
                    .reused_by_open_connections(u64::try_from(n).unwrap_or(u64::MAX));
            }
            Err(e) => warn("sock_diag lookup of reused TIME_WAIT ports", place, &e),
        }
    }

    /// Refresh the live client sockets by destination (one dump).
    pub fn count_live(&mut self, cx: &mut Cx<'_>, place: Place) {
        let mut live = LiveCounts::new();
        let (census, sysctls) = (&self.census, &self.sysctls);
        match cx.diag(place, |d| {
            d.dump_with(&LIVE_STATES, |s| census.count_live(&mut live, &s, sysctls))
        }) {
            Ok(()) => self.live = live,
            Err(e) => warn("sock_diag dump of live sockets", place, &e),
        }
    }

    pub fn snapshot(&mut self) -> Snapshot {
        self.census
            .snapshot(monotonic_ns(), &self.polled, &self.live, &self.sysctls)
    }

    /// `tcp_max_tw_buckets` overflows since the namespace was first seen
    /// (or since its netstat was first readable), when it is readable.
    pub fn overflow(&mut self, cx: &mut Cx<'_>, place: Place) -> Option<u64> {
        let now = cx.timewait_overflow(place).ok().flatten()?;
        let start = *self.overflow_at_start.get_or_insert(now);
        Some(now.saturating_sub(start))
    }

    /// Whether a report of the namespace has anything to say now: sockets
    /// followed, a destination or port still counting its rate, failures
    /// not forgotten, an overflow; at the final report, any entry since
    /// start too.
    pub fn has_news(&self, overflow: Option<u64>, final_report: bool) -> bool {
        self.tracker.following() > 0
            || !self.polled.is_empty()
            || self.census.sizes().0 > 0
            || !self.binds.is_empty()
            || !self.connects.is_empty()
            || self.unexplained > 0
            || overflow.is_some_and(|o| o > 0)
            || (final_report && self.tracker.entered > 0)
    }
}
