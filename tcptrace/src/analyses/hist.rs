//! `--hist`: dwell-time histograms for every TCP state, TIME_WAIT included.
//!
//! Full-socket states are counted in the kernel (no per-transition records).
//! TIME_WAIT and orphaned FIN_WAIT2 live in timewait sockets that the
//! tracepoint never sees: they are followed through the runtime's sock_diag
//! polls ([`Tracker::from_polls`]), one tracker per network namespace
//! (4-tuples collide across namespaces). A namespace whose last poll found
//! timewait sockets is polled every [`TW_POLL`], an idle one less often
//! ([`IDLE_BUDGET`]): a tracker fed by polls alone dates each TIME_WAIT
//! from its timer, so a late first sighting keeps its dwell exact. Only
//! resets stream.

use std::{collections::BTreeMap, time::Duration, time::SystemTime};

use tcptrace_common::{HistBy, TcpState};

use crate::{
    analyses::{Analysis, Cx, Setup, TW_POLL, TimewaitPoll},
    host::cgroup::labels::Labeller,
    kernel::{clock::monotonic_ns, maps},
    model::{
        cardinality::top_groups,
        event::Event,
        histogram::Hist,
        netns::Netns,
        plan::{GroupLabel, HistOptions},
        reset_reasons::ResetReasons,
        timewait::{
            lives::Tracker,
            spaces::{Place, Spaces, idle_every},
        },
    },
    report::{
        hist::{HistReport, NetnsLives},
        prometheus::{Snapshot, TimewaitCounts},
    },
};

/// Idle namespaces (whose last poll found no timewait socket) are polled
/// in turn, [`IDLE_BUDGET`] of them a poll, each at least one poll in
/// [`IDLE_MIN`] and at most one in [`IDLE_MAX`]: each sock_diag dump walks
/// the host-wide TCP hash table, however empty the namespace. What one
/// missed meanwhile is a life that began and ended within the gap (a
/// TIME_WAIT killed early by reuse or a RST); one that runs its 60 s is
/// always seen, [`IDLE_MAX`] polls being shorter.
pub const IDLE_BUDGET: u64 = 8;
pub const IDLE_MIN: u64 = 5;
pub const IDLE_MAX: u64 = 50;

/// One namespace's timewait sockets.
struct Follow {
    tw: Tracker,
    /// `TcpExtTCPTimeWaitOverflow` when the namespace was first seen.
    overflow_at_start: Option<u64>,
    /// Overflows since then, as of the last report.
    overflow: Option<u64>,
}

impl Follow {
    /// A namespace first seen: its `tcp_fin_timeout` (which dates orphan
    /// FIN_WAIT2 phases) and its overflow count, read inside it.
    fn new(cx: &mut Cx<'_>, place: Place) -> Self {
        let fin_timeout = match cx.sysctls(place) {
            Ok(s) => s.fin_timeout_s.map_err(|e| e.clone()),
            Err(e) => Err(e.to_string()),
        };
        let fin_timeout = fin_timeout
            .inspect_err(|e| {
                if place == cx.home() {
                    log::warn!("orphan FIN_WAIT2 dwell not timed: {e}");
                } else {
                    log::debug!("orphan FIN_WAIT2 dwell not timed in {place:?}: {e}");
                }
            })
            .ok()
            .map(|s| Duration::from_secs(u64::from(s)));
        Follow {
            tw: Tracker::from_polls(fin_timeout),
            overflow_at_start: cx.timewait_overflow(place).ok().flatten(),
            overflow: None,
        }
    }

    /// Whether the reports show it: sockets followed, an overflow, or any
    /// life since start.
    fn has_news(&self) -> bool {
        self.tw.following() > 0 || self.tw.entered > 0 || self.overflow.is_some_and(|o| o > 0)
    }
}

pub struct Hists {
    opts: HistOptions,
    json: bool,
    spaces: Spaces<Follow>,
    /// Counts and histograms of the namespaces gone since start.
    departed: Tracker,
    /// RSTs by (direction, reason).
    resets: BTreeMap<(&'static str, String), u64>,
    reasons: ResetReasons,
    /// Polls so far.
    ticks: u64,
    /// `--by container`: each namespace's container id (from a process in
    /// it), refreshed at each report; None for every other split.
    containers: Option<BTreeMap<Netns, String>>,
    labels: Labeller,
    /// `--top`: groups per state on `/metrics`.
    top: usize,
}

/// A namespace's group label: its container's id under `--by container`
/// (`netns:INODE` when no container is found in it), else its inode.
fn container_label(containers: Option<&BTreeMap<Netns, String>>, ns: Netns) -> String {
    match containers {
        Some(c) => c.get(&ns).cloned().unwrap_or_else(|| format!("netns:{ns}")),
        None => ns.to_string(),
    }
}

impl Hists {
    #[must_use]
    pub fn new(setup: &Setup<'_>, opts: HistOptions) -> Self {
        Hists {
            opts,
            json: setup.plan.json,
            spaces: Spaces::default(),
            departed: Tracker::default(),
            resets: BTreeMap::new(),
            reasons: setup.reasons.clone(),
            ticks: 0,
            containers: (opts.label == GroupLabel::Container).then(BTreeMap::new),
            labels: Labeller::default(),
            top: setup.plan.metrics_top,
        }
    }

    /// Under `--by container`, the kernel's groups (namespace inodes)
    /// renamed by the container in each namespace.
    fn name_groups(
        &mut self,
        cx: &Cx<'_>,
        hists: BTreeMap<(TcpState, Option<String>), Hist>,
    ) -> BTreeMap<(TcpState, Option<String>), Hist> {
        let Some(containers) = self.containers.as_mut() else {
            return hists;
        };
        containers.clear();
        let mut out: BTreeMap<(TcpState, Option<String>), Hist> = BTreeMap::new();
        for ((state, group), h) in hists {
            let ns = group.as_deref().and_then(|g| g.parse().ok()).map(Netns);
            let renamed = match ns {
                Some(ns) => {
                    if let std::collections::btree_map::Entry::Vacant(e) = containers.entry(ns) {
                        let pids = cx.namespaces.as_deref().map_or(&[][..], |n| n.pids(ns));
                        if let Some(id) = pids
                            .iter()
                            .find_map(|&pid| self.labels.place(None, pid).container)
                        {
                            e.insert(id.to_string());
                        }
                    }
                    Some(container_label(Some(containers), ns))
                }
                None => group,
            };
            out.entry((state, renamed)).or_default().merge(&h);
        }
        out
    }

    /// Every namespace's timewait counts and histograms together, the gone
    /// ones' included.
    fn totals(&self) -> Tracker {
        let mut t = Tracker::default();
        t.absorb(&self.departed);
        for (_, f) in self.spaces.iter() {
            t.absorb(&f.tw);
        }
        t
    }

    /// The namespace's state, made when it is first seen.
    fn follow<'s>(spaces: &'s mut Spaces<Follow>, cx: &mut Cx<'_>, place: Place) -> &'s mut Follow {
        let home = cx.home();
        spaces.entry(place, monotonic_ns(), home, || Follow::new(cx, place))
    }

    /// Whether the TIME_WAIT histograms are split by namespace, as the
    /// kernel's are under `--by netns` and `--by container`.
    fn split(&self) -> bool {
        self.opts.by == HistBy::Netns
    }
}

impl Analysis for Hists {
    fn banner(&self) -> String {
        format!(
            "TCP state dwell times: histograms every {}",
            humantime::format_duration(self.opts.interval)
        )
    }

    fn follows_timewait(&self) -> bool {
        true
    }

    /// The namespaces first seen, those whose last poll found timewait
    /// sockets, and the idle ones in turn.
    fn timewait_wanted(&mut self, cx: &Cx<'_>) -> Vec<Option<Netns>> {
        let traced = cx.traced();
        self.spaces.refreshed(&traced, cx.home());
        let every = idle_every(traced.len(), IDLE_BUDGET, IDLE_MIN, IDLE_MAX);
        let due = self
            .spaces
            .due(&traced, self.ticks, Some(every), |f| f.tw.following() > 0);
        self.ticks += 1;
        due
    }

    /// Every traced namespace's state, so that overflows count from the
    /// start (a namespace found later counts from when it is first seen).
    fn on_start(&mut self, cx: &mut Cx<'_>) {
        for place in cx.traced() {
            Self::follow(&mut self.spaces, cx, place);
        }
    }

    fn on_event(&mut self, _cx: &mut Cx<'_>, ev: Event) {
        if let Event::Reset(r) = ev {
            let reason = r
                .reason
                .map_or_else(|| "-".to_owned(), |c| self.reasons.name(c));
            *self
                .resets
                .entry((r.direction.as_str(), reason))
                .or_default() += 1;
        }
    }

    fn on_poll(&mut self, cx: &mut Cx<'_>, poll: &TimewaitPoll<'_>) {
        let f = Self::follow(&mut self.spaces, cx, poll.netns);
        f.tw.on_poll(poll.now_ns, TW_POLL, poll.sockets);
        self.spaces.polled(poll.netns);
    }

    /// The histograms, the timewait sockets of every namespace together and
    /// of each with anything to say; then the states of namespaces gone
    /// since are folded into the totals.
    fn report(&mut self, cx: &mut Cx<'_>, final_report: bool) -> anyhow::Result<()> {
        let hists = maps::read_hists(cx.ebpf, self.opts.by)?;
        let hists = self.name_groups(cx, hists);
        let home = cx.home();
        Self::follow(&mut self.spaces, cx, home);
        for (place, f) in self.spaces.iter_mut() {
            // Since the namespace was first seen, or since its netstat
            // was first readable.
            let now = cx.timewait_overflow(place).ok().flatten();
            if let Some(now) = now {
                f.overflow_at_start.get_or_insert(now);
            }
            f.overflow = now
                .zip(f.overflow_at_start)
                .map(|(a, b)| a.saturating_sub(b));
        }
        let totals = self.totals();
        let namespaces: Vec<NetnsLives<'_>> = (self.spaces.iter())
            .filter(|(p, f)| *p == home || f.has_news())
            .map(|(p, f)| NetnsLives {
                netns: p,
                own: p == cx.own(),
                tracker: &f.tw,
                overflow: f.overflow,
            })
            .collect();
        let overflow = (namespaces.iter())
            .filter_map(|n| n.overflow)
            .reduce(u64::saturating_add);
        let report = HistReport {
            when: SystemTime::now(),
            final_report,
            by: self.opts.by_name(),
            hists: &hists,
            timewait: &totals,
            namespaces: &namespaces,
            split: self.split(),
            overflow,
            poll_interval: TW_POLL,
        };
        if self.json {
            report.json(cx.out)?;
        } else {
            cx.out.extend_from_slice(report.text().as_bytes());
        }
        for (_, gone) in self.spaces.sweep() {
            let mut t = gone.tw;
            (t.population_time_wait, t.population_fin_wait2) = (0, 0);
            self.departed.absorb(&t);
        }
        Ok(())
    }

    /// The histograms, transitions, resets and each namespace's timewait
    /// sockets, and the kernel's losses; a failed read keeps the last
    /// figures.
    fn export(&mut self, cx: &mut Cx<'_>, snap: &mut Snapshot) {
        let hists = match maps::read_hists(cx.ebpf, self.opts.by) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("reading the dwell histograms for /metrics: {e}");
                return;
            }
        };
        snap.by = self.opts.by_name();
        let hists = self.name_groups(cx, hists);
        snap.dwell = hists
            .into_iter()
            .map(|((s, g), h)| (s.name().to_owned(), g, h))
            .collect();
        let home = cx.home();
        let shown: Vec<(Place, &Tracker)> = (self.spaces.iter())
            .filter(|(p, f)| *p == home || f.tw.following() > 0 || f.tw.entered > 0)
            .map(|(p, f)| (p, &f.tw))
            .collect();
        if self.split() {
            for (p, t) in &shown {
                let group = p.map(|ns| container_label(self.containers.as_ref(), ns));
                snap.dwell
                    .push(("TIME_WAIT".to_owned(), group.clone(), t.time_wait.clone()));
                snap.dwell.push((
                    "FIN_WAIT2_ORPHAN".to_owned(),
                    group,
                    t.fin_wait2_orphan.clone(),
                ));
            }
        } else {
            let totals = self.totals();
            snap.dwell
                .push(("TIME_WAIT".to_owned(), None, totals.time_wait));
            snap.dwell
                .push(("FIN_WAIT2_ORPHAN".to_owned(), None, totals.fin_wait2_orphan));
        }
        snap.dwell = top_groups(std::mem::take(&mut snap.dwell), self.top);
        snap.timewait = (shown.iter())
            .map(|(p, t)| TimewaitCounts {
                netns: *p,
                time_wait: t.population_time_wait,
                fin_wait2_orphans: t.population_fin_wait2,
                entered: t.entered,
                expired: t.expired,
                killed_early: t.killed_early,
            })
            .collect();
        match maps::read_transitions(cx.ebpf) {
            Ok(t) => {
                snap.transitions = t
                    .into_iter()
                    .map(|(o, n, c)| (o.name(), n.name(), c))
                    .collect();
            }
            Err(e) => log::warn!("reading transitions for /metrics: {e}"),
        }
        snap.resets = self
            .resets
            .iter()
            .map(|((d, r), n)| (*d, r.clone(), *n))
            .collect();
    }
}
