//! `--timewait`: why a server cannot restart (`bind()` EADDRINUSE) and why
//! clients run out of ports (`connect()` EADDRNOTAVAIL): TIME_WAIT entries
//! from the per-CPU log, a census with projection and advice from the
//! polls, and each failed call explained at once ([`failures`]). Every
//! network namespace has its own state ([`space::Space`]): its sysctls,
//! lives, census and failures, asked of that namespace alone.

use std::collections::BTreeMap;

use tcptrace_common::TcpState;

use crate::{
    analyses::{Analysis, Cx, RunCounts, Setup, TimewaitPoll},
    host::procs,
    kernel::clock::monotonic_ns,
    model::{
        aging::TokenBucket,
        cardinality::{CappedCounters, OTHER, top_n},
        counters::KernelCounters,
        event::{Event, FailedCall},
        filter::PortFilter,
        netns::Netns,
        plan::TimewaitOptions,
        socket::endpoint,
        timewait::{
            advice::{self, BindFacts, ConnectFacts},
            spaces::{Place, Spaces},
        },
    },
    report::{
        json_line,
        prometheus::{DestGauge, FailureCount, Snapshot},
        timewait::{CensusReport, Forgotten, Times},
    },
};

mod failures;
mod space;

use space::Space;

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
    /// Each namespace's state.
    spaces: Spaces<Space>,
    /// Lookups that explain failures, rate-limited across namespaces.
    lookups: TokenBucket,
    failures_unavailable: Option<String>,
    /// Polls so far.
    ticks: u64,
    /// Failed calls by (namespace, call, errno) and target, for `/metrics`.
    failures: CappedCounters<(Option<Netns>, &'static str, &'static str), String>,
    /// `--top`: the destinations `/metrics` names.
    top: usize,
}

/// Namespace-and-call groups of failure counters at most; past them new
/// ones count under the first group's `other`.
const FAILURE_GROUPS: usize = 256;

impl Timewait {
    /// Say what the census goes without.
    #[must_use]
    pub fn new(setup: &Setup<'_>, opts: TimewaitOptions) -> Self {
        if let Some(why) = setup.failures_unavailable {
            eprintln!("tcptrace: warning: bind()/connect() failures are not caught: {why}");
        }
        Timewait {
            opts,
            json: setup.plan.json,
            times: Times(setup.clock),
            ports: setup.plan.ports,
            spaces: Spaces::default(),
            lookups: TokenBucket::new(LOOKUPS_PER_S, LOOKUP_BURST),
            failures_unavailable: setup.failures_unavailable.map(str::to_owned),
            ticks: 0,
            failures: CappedCounters::new(setup.plan.metrics_top, FAILURE_GROUPS, OTHER.to_owned()),
            top: setup.plan.metrics_top,
        }
    }

    /// The state of `place`, made (its sysctls, netstat and listeners
    /// read) when the namespace is first seen.
    fn space<'s>(spaces: &'s mut Spaces<Space>, cx: &mut Cx<'_>, place: Place) -> &'s mut Space {
        let home = cx.home();
        spaces.entry(place, monotonic_ns(), home, || Space::new(cx, place))
    }

    /// Announce the namespace's destinations newly heading for exhaustion
    /// (again, once they stopped for [`STALE_AFTER`]).
    ///
    /// [`STALE_AFTER`]: crate::model::timewait::census::STALE_AFTER
    fn check_projections(&mut self, cx: &mut Cx<'_>, place: Place) {
        let Some(space) = self.spaces.get_mut(place) else {
            return;
        };
        let snap = space.snapshot();
        let now = monotonic_ns();
        space.announced.prune(now);
        let foreign = cx.foreign(place);
        for g in &snap.destinations {
            if !g.projection.exhaustion || space.announced.touch_existing(&g.key, now).is_some() {
                continue;
            }
            space.announced.touch(g.key, now, || ());
            if self.json {
                push_json(cx, &self.times.projection_json(g, now, place));
            } else {
                cx.out
                    .extend_from_slice(self.times.projection_line(g, now, foreign).as_bytes());
            }
        }
    }

    /// The census of one namespace, if it has anything to say (tcptrace's
    /// own, or `--netns`'s, always does).
    fn report_space(&mut self, cx: &mut Cx<'_>, place: Place, final_report: bool) {
        let home = cx.home();
        let Some(space) = self.spaces.get_mut(place) else {
            return;
        };
        let overflow = space.overflow(cx, place);
        if place != home && !space.has_news(overflow, final_report) {
            return;
        }
        space.count_live(cx, place);
        let snap = space.snapshot();
        let now = monotonic_ns();
        space.binds.prune(now);
        space.connects.prune(now);
        let binds: Vec<BindFacts> = space.binds.values().cloned().collect();
        let connects: Vec<ConnectFacts> = space.connects.values().cloned().collect();
        let advice = advice::advise(&advice::Facts {
            census: &snap,
            sysctls: &space.sysctls,
            binds: &binds,
            connects: &connects,
            overflow,
        });
        let foreign = cx.foreign(place);
        let report = CensusReport {
            times: self.times,
            now_ns: monotonic_ns(),
            final_report,
            netns: place,
            foreign: foreign.map(|ns| (ns, cx.netns_name(ns))),
            snap: &snap,
            tracker: &space.tracker,
            sysctls: &space.sysctls,
            overflow,
            binds: &binds,
            connects: &connects,
            advice: &advice,
            failures_unavailable: self.failures_unavailable.as_deref(),
            forgotten: Forgotten {
                unexplained: space.unexplained,
                failures: space.binds.forgotten() + space.connects.forgotten(),
                groups: space.census.forgotten(),
            },
        };
        if self.json {
            // Owned bytes: the report borrows `cx` (for the text's header).
            let line = serde_json::to_vec(&report.json());
            match line {
                Ok(line) => {
                    cx.out.extend_from_slice(&line);
                    cx.out.extend_from_slice(b"\n");
                }
                Err(e) => log::warn!("writing a JSON line: {e}"),
            }
        } else {
            let text = report.text();
            cx.out.extend_from_slice(text.as_bytes());
        }
    }
}

/// One JSON line into the output batch; a value that cannot be written
/// is logged, not fatal.
fn push_json(cx: &mut Cx<'_>, v: &impl serde::Serialize) {
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

    fn follows_timewait(&self) -> bool {
        true
    }

    /// The namespaces first seen, and those with TIME_WAIT entries or
    /// timewait sockets to follow: an idle namespace costs no poll.
    fn timewait_wanted(&mut self, cx: &Cx<'_>) -> Vec<Option<Netns>> {
        self.ticks += 1;
        let traced = cx.traced();
        self.spaces.refreshed(&traced, cx.home());
        self.spaces
            .due(&traced, self.ticks, None, |s| s.tracker.following() > 0)
    }

    /// Every traced namespace's state, so that overflows count from the
    /// start (a namespace found later counts from when it is first seen),
    /// and a word on the sysctls the home namespace lacks.
    fn on_start(&mut self, cx: &mut Cx<'_>) {
        for place in cx.traced() {
            Self::space(&mut self.spaces, cx, place);
        }
        let home = cx.home();
        let space = Self::space(&mut self.spaces, cx, home);
        for e in space.sysctls.unreadable() {
            eprintln!("tcptrace: warning: cannot read {e}; the census goes on without it");
        }
    }

    fn on_event(&mut self, cx: &mut Cx<'_>, ev: Event) {
        match ev {
            Event::State(s) => {
                let entry = s.new == TcpState::Close
                    && matches!(s.old, TcpState::FinWait2 | TcpState::Closing);
                if entry {
                    let place = cx.place(s.netns);
                    Self::space(&mut self.spaces, cx, place).on_state(&s, procs::comm);
                }
            }
            Event::Failure(f) => {
                let place = cx.place(f.netns);
                let target = match (f.call, f.addr) {
                    (_, None) => "unknown".to_owned(),
                    (FailedCall::BindInUse, Some((_, port))) => port.to_string(),
                    (FailedCall::ConnectNoPort, Some((ip, port))) => endpoint(ip, port),
                };
                (self.failures).add((place, f.call.syscall(), f.call.errno()), target);
                self.on_failure(cx, place, &f);
            }
            Event::Reset(_) => {}
        }
    }

    /// Follow the namespace's sockets with its sysctls and listeners as of
    /// now, then announce its new projections.
    fn on_poll(&mut self, cx: &mut Cx<'_>, poll: &TimewaitPoll<'_>) {
        let place = poll.netns;
        let known = self.spaces.get(place).is_some();
        let space = Self::space(&mut self.spaces, cx, place);
        if known {
            space.read_sysctls(cx, place);
            space.poll_listeners(cx, place);
        }
        space.follow(cx, place, poll.now_ns, poll.sockets.to_vec());
        self.spaces.polled(place);
        self.check_projections(cx, place);
    }

    /// A census per namespace with anything to say; then the states of
    /// namespaces gone since are dropped.
    fn report(&mut self, cx: &mut Cx<'_>, final_report: bool) -> anyhow::Result<()> {
        let home = cx.home();
        if self.spaces.get(home).is_none() {
            Self::space(&mut self.spaces, cx, home);
        }
        // Home first, then the others by inode.
        let places: Vec<Place> = std::iter::once(home)
            .chain(self.spaces.iter().map(|(p, _)| p).filter(|p| *p != home))
            .collect();
        for place in places {
            self.report_space(cx, place, final_report);
        }
        self.spaces.sweep();
        Ok(())
    }

    /// Each destination's census, the `--top` largest over every
    /// namespace (a destination is summed over local addresses), and the
    /// failure counters.
    fn export(&mut self, _cx: &mut Cx<'_>, snap: &mut Snapshot) {
        let mut dests: BTreeMap<(Place, String), DestGauge> = BTreeMap::new();
        for (place, space) in self.spaces.iter_mut() {
            for g in space.snapshot().destinations {
                let destination = endpoint(g.key.1, g.key.2);
                let d = dests
                    .entry((place, destination.clone()))
                    .or_insert_with(|| DestGauge {
                        netns: place,
                        destination,
                        usable_ports: g.projection.usable,
                        ..DestGauge::default()
                    });
                d.time_wait += g.time_wait;
                d.rate_per_s += g.rate_per_s;
                d.exhaustion_s = match (d.exhaustion_s, g.projection.eta_s) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let other = DestGauge {
            destination: OTHER.to_owned(),
            ..DestGauge::default()
        };
        #[expect(clippy::cast_precision_loss, reason = "an order, not a value")]
        let dests = top_n(
            dests.into_values().collect(),
            self.top,
            |d| d.time_wait as f64,
            other,
            |o, d| {
                o.time_wait += d.time_wait;
                o.rate_per_s += d.rate_per_s;
            },
        );
        snap.destinations = dests;
        snap.failures = (self.failures.iter())
            .map(|((netns, call, errno), target, count)| FailureCount {
                call,
                errno,
                netns: *netns,
                target: target.clone(),
                count,
            })
            .collect();
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
