//! `--timewait`: why a server cannot restart (`bind()` EADDRINUSE) and why
//! clients run out of ports (`connect()` EADDRNOTAVAIL): TIME_WAIT entries
//! from the per-CPU log, a census with projection and advice from the
//! polls, and each failed call explained at once ([`failures`]).

use std::{net::IpAddr, path::Path, time::Duration};

use tcptrace_common::TcpState;

use crate::{
    analyses::{Analysis, Cx, RunCounts, Setup, TW_POLL, TimewaitPoll},
    host::{
        netstat::timewait_overflow,
        procs::{self, NetnsFilter},
        sockdiag, sysctl,
    },
    kernel::clock::monotonic_ns,
    model::{
        aging::{Aged, TokenBucket},
        counters::KernelCounters,
        event::{Event, StateChange},
        filter::PortFilter,
        plan::TimewaitOptions,
        socket::{DiagSocket, Tuple},
        sysctl::Sysctls,
        timewait::{
            advice::{self, BindFacts, ConnectFacts},
            census::{Census, DestKey, LiveCounts, STALE_AFTER, Snapshot},
            lives::{self, Tracker},
        },
    },
    report::{
        json_line,
        timewait::{CensusReport, Forgotten, Times},
    },
};

mod failures;

/// At most this many exact sock_diag lookups per poll to tell TIME_WAIT
/// sockets killed by port reuse from those killed by a RST
/// ([`Timewait::find_reuses`]): a few milliseconds of netlink round trips.
const MAX_REUSE_LOOKUPS: usize = 1024;

/// A failed call's (pid, port) or (pid, destination) is forgotten after
/// this long without a failure, and at most [`MAX_FAILURE_GROUPS`] of each
/// are kept (the least recently failing go first).
const FAILURE_TTL: Duration = Duration::from_mins(10);
const MAX_FAILURE_GROUPS: usize = 4096;
/// Explaining a new failure costs a /proc scan and sock_diag dumps: at most
/// this many a second (and a burst of [`LOOKUP_BURST`]), so that a user
/// failing calls on purpose cannot make tcptrace work hard. The others are
/// counted, and explained by a later failure of theirs.
const LOOKUPS_PER_S: u64 = 4;
const LOOKUP_BURST: u64 = 16;

/// The live (non-timewait) states whose sockets hold a local port, and
/// listeners.
const LIVE_STATES: [TcpState; 9] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Closing,
    TcpState::Listen,
];

pub struct Timewait {
    opts: TimewaitOptions,
    json: bool,
    times: Times,
    ports: PortFilter,
    sysctls: Sysctls,
    tracker: Tracker,
    census: Census,
    netns: NetnsFilter,
    /// The last polls: timewait sockets every second, live ones per report.
    polled: Vec<DiagSocket>,
    live: LiveCounts,
    overflow_at_start: Option<u64>,
    binds: Aged<(u32, u16), BindFacts>,
    connects: Aged<(u32, IpAddr, u16), ConnectFacts>,
    /// Lookups that explain failures, rate-limited.
    lookups: TokenBucket,
    /// Destinations announced as heading for exhaustion, while they are.
    announced: Aged<DestKey, ()>,
    failures_unavailable: Option<String>,
}

impl Timewait {
    /// Read the sysctls, and say what the census goes on without.
    #[must_use]
    pub fn new(setup: &Setup<'_>, opts: TimewaitOptions) -> Self {
        let sysctls = sysctl::read(Path::new(sysctl::ROOT));
        for e in sysctls.unreadable() {
            eprintln!("tcptrace: warning: cannot read {e}; the census goes on without it");
        }
        if let Some(why) = setup.failures_unavailable {
            eprintln!("tcptrace: warning: bind()/connect() failures are not caught: {why}");
        }
        Timewait {
            opts,
            json: setup.plan.json,
            times: Times(setup.clock),
            ports: setup.plan.ports,
            sysctls,
            tracker: Tracker::default(),
            census: Census::default(),
            netns: NetnsFilter::default(),
            polled: Vec::new(),
            live: LiveCounts::new(),
            overflow_at_start: timewait_overflow(),
            binds: Aged::new(FAILURE_TTL, MAX_FAILURE_GROUPS),
            connects: Aged::new(FAILURE_TTL, MAX_FAILURE_GROUPS),
            lookups: TokenBucket::new(LOOKUPS_PER_S, LOOKUP_BURST),
            announced: Aged::new(STALE_AFTER, MAX_FAILURE_GROUPS),
            failures_unavailable: setup.failures_unavailable.map(str::to_owned),
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
            self.census
                .on_entry(tuple, s.ts_ns, closer, &self.sysctls, procs::comm);
        }
    }

    /// Follow the timewait sockets of a poll.
    fn follow(&mut self, now_ns: u64, socks: Vec<DiagSocket>) {
        self.netns.forget();
        let ended = self.tracker.on_poll(now_ns, TW_POLL, &socks);
        self.polled = socks;
        self.find_reuses(&ended);
    }

    /// A fresh poll, outside the runtime's (a failure's explanation).
    fn poll_timewait(&mut self) {
        match sockdiag::timewait_sockets(&self.ports) {
            Ok(socks) => self.follow(monotonic_ns(), socks),
            Err(e) => log::warn!("sock_diag poll of timewait sockets: {e}"),
        }
    }

    /// Of the lives a poll saw killed early, those whose 4-tuple a live
    /// socket holds: `tcp_tw_reuse` gave the port to a connection that is
    /// still open. (A reuse whose connection closed before the poll shows
    /// as a new entry of the tuple, [`Tracker::on_entry`].) One exact
    /// sock_diag lookup per such life, at most [`MAX_REUSE_LOOKUPS`] per
    /// poll; beyond that, the rest stay "killed early" without a cause.
    fn find_reuses(&mut self, ended: &[(Tuple, lives::End, Option<u32>)]) {
        let killed: Vec<_> = ended
            .iter()
            .filter(|(_, end, _)| *end == lives::End::KilledEarly)
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
        match sockdiag::dump_with(&LIVE_STATES, |s| {
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
            .snapshot(monotonic_ns(), &self.polled, &self.live, &self.sysctls)
    }

    /// Announce destinations newly heading for exhaustion (again, once
    /// they stopped for [`STALE_AFTER`]).
    fn check_projections(&mut self, cx: &mut Cx<'_>) {
        let snap = self.snapshot();
        let now = monotonic_ns();
        self.announced.prune(now);
        for g in &snap.destinations {
            if !g.projection.exhaustion || self.announced.touch_existing(&g.key, now).is_some() {
                continue;
            }
            self.announced.touch(g.key, now, || ());
            if self.json {
                push_json(cx, &self.times.projection_json(g, now));
            } else {
                cx.out
                    .extend_from_slice(self.times.projection_line(g, now).as_bytes());
            }
        }
    }
}

/// One JSON line into the output batch; a value that cannot be written
/// is logged, not fatal.
fn push_json(cx: &mut Cx<'_>, v: &serde_json::Value) {
    if let Err(e) = json_line(cx.out, v) {
        log::warn!("writing a JSON line: {e}");
    }
}

impl Analysis for Timewait {
    fn banner(&self) -> String {
        format!(
            "TIME_WAIT and port failures: a census every {}",
            humantime::format_duration(self.opts.interval)
        )
    }

    fn polls_timewait(&self) -> bool {
        true
    }

    fn on_start(&mut self, _cx: &mut Cx<'_>) {
        self.poll_listeners();
    }

    fn on_event(&mut self, cx: &mut Cx<'_>, ev: Event) {
        match ev {
            Event::State(s) => self.on_state(&s),
            Event::Failure(f) => {
                if self.netns.is_ours(f.owner.pid) {
                    self.on_failure(cx, &f);
                }
            }
            Event::Reset(_) => {}
        }
    }

    fn on_poll(&mut self, _cx: &mut Cx<'_>, poll: &TimewaitPoll<'_>) {
        self.poll_listeners();
        self.follow(poll.now_ns, poll.sockets.to_vec());
    }

    fn on_tick(&mut self, cx: &mut Cx<'_>) {
        // The one place the sysctls are re-read: reports use these.
        self.sysctls = sysctl::read(Path::new(sysctl::ROOT));
        self.check_projections(cx);
    }

    fn report(&mut self, cx: &mut Cx<'_>, final_report: bool) -> anyhow::Result<()> {
        self.count_live();
        let snap = self.snapshot();
        let overflow = timewait_overflow()
            .zip(self.overflow_at_start)
            .map(|(a, b)| a.saturating_sub(b));
        let now = monotonic_ns();
        self.binds.prune(now);
        self.connects.prune(now);
        let binds: Vec<BindFacts> = self.binds.values().cloned().collect();
        let connects: Vec<ConnectFacts> = self.connects.values().cloned().collect();
        let advice = advice::advise(&advice::Facts {
            census: &snap,
            sysctls: &self.sysctls,
            binds: &binds,
            connects: &connects,
            overflow,
        });
        let report = CensusReport {
            times: self.times,
            now_ns: monotonic_ns(),
            final_report,
            snap: &snap,
            tracker: &self.tracker,
            sysctls: &self.sysctls,
            overflow,
            binds: &binds,
            connects: &connects,
            advice: &advice,
            failures_unavailable: self.failures_unavailable.as_deref(),
            forgotten: Forgotten {
                unexplained: self.lookups.refused,
                failures: self.binds.forgotten() + self.connects.forgotten(),
                groups: self.census.forgotten(),
            },
        };
        if self.json {
            push_json(cx, &report.json());
        } else {
            cx.out.extend_from_slice(report.text().as_bytes());
        }
        Ok(())
    }

    fn exit_lines(
        &self,
        _cx: &mut Cx<'_>,
        _kernel: Option<&KernelCounters>,
        counts: &RunCounts,
    ) -> Vec<String> {
        vec![format!(
            "tcptrace: TIME_WAIT entries: {} read from the per-CPU log, {} lost (overwritten \
             before they were read)",
            counts.log_read, counts.log_lost
        )]
    }
}
