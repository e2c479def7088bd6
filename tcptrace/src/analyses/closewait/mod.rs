//! `--closewait-leaks`: every `--interval`, report the sockets that have sat
//! in CLOSE_WAIT longer than `--min-age`, grouped by owner and code path.
//!
//! No record streams: the kernel's socket store holds each socket's state,
//! entry time, owner, EOF time and stacks, so a report is a scan of it
//! ([`collect`]). Leaks that ended are counted by the kernel's CLOSE_WAIT
//! dwell histogram and its count of dwells past `--min-age`.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::SystemTime,
};

use tcptrace_common::{Counter, TcpState};

use crate::{
    analyses::{Analysis, Cx, RunCounts, Setup},
    host::{cgroup::labels::Labeller, procs, symbolize::Symbols},
    kernel::{clock::monotonic_ns, maps},
    model::{
        cardinality::{OTHER, top_n},
        closewait::Group,
        counters::KernelCounters,
        event::Event,
        plan::{LeakOptions, Scope},
    },
    report::{
        closewait::{JsonGroup, closed_line, render_text},
        json::{Report, json_line, wall_time},
        prometheus::{LeakGauge, Snapshot},
    },
};

mod collect;
mod jvm;

/// The groups' sockets summed by process (comm), namespace and container
/// (pids and code paths would multiply the series), the `top` largest and
/// `other`.
fn gauges(groups: &[Group], top: usize) -> Vec<LeakGauge> {
    let mut by: BTreeMap<_, LeakGauge> = BTreeMap::new();
    for g in groups {
        let comm = g.comm.clone().unwrap_or_default();
        let key = (comm.clone(), g.netns, g.process.container_id.clone());
        let e = by.entry(key).or_insert_with(|| LeakGauge {
            comm,
            netns: g.netns,
            container: g.process.container_id.clone(),
            ..LeakGauge::default()
        });
        e.sockets += g.count as u64;
        e.oldest_s = e.oldest_s.max(g.oldest_age.as_secs_f64());
    }
    let other = LeakGauge {
        comm: OTHER.to_owned(),
        ..LeakGauge::default()
    };
    #[expect(clippy::cast_precision_loss, reason = "an order, not a value")]
    top_n(
        by.into_values().collect(),
        top,
        |g| g.sockets as f64,
        other,
        |o, g| {
            o.sockets += g.sockets;
            o.oldest_s = o.oldest_s.max(g.oldest_s);
        },
    )
}

pub struct Leaks {
    opts: LeakOptions,
    json: bool,
    collector: collect::Collector,
    /// Frees the stacks of sockets gone, after each report.
    stacks: maps::StackRecycler,
    labels: Labeller,
    /// `--container` and `--cgroup`, applied to each group's owner.
    scope: Scope,
    /// The last report's sockets by owner, namespace and container, for
    /// `/metrics`.
    gauges: Vec<LeakGauge>,
    /// `--top`: the processes `/metrics` names.
    top: usize,
    jvms: jvm::Jvms,
}

impl Leaks {
    #[must_use]
    pub fn new(setup: &Setup<'_>, opts: LeakOptions) -> Self {
        let start_ns = monotonic_ns();
        Leaks {
            opts,
            json: setup.plan.json,
            collector: collect::Collector {
                min_age: opts.min_age,
                filter: setup.plan.filter.clone(),
                ports: setup.plan.ports,
                start_ns,
                seeded: HashSet::new(),
                busy: BTreeSet::new(),
                seeded_in: BTreeSet::new(),
                symbols: Symbols::new(opts.symbolize_timeout, Arc::clone(&setup.stopping)),
                marks: maps::StackMarks::default(),
            },
            stacks: maps::StackRecycler::default(),
            labels: Labeller::default(),
            scope: setup.plan.scope.clone(),
            gauges: Vec::new(),
            top: setup.plan.metrics_top,
            jvms: jvm::Jvms::new(opts.jvm_attach),
        }
    }

    /// This report's groups: collected, placed in their containers, and
    /// filtered by `--container` and `--cgroup`.
    fn groups(&mut self, cx: &mut Cx<'_>) -> anyhow::Result<Vec<Group>> {
        let mut groups = self.collector.collect(cx)?.finish(procs::info);
        // The container of an owner that has exited, by the cgroup id the
        // kernel noted with it.
        for g in &mut groups {
            if g.process.container_id.is_none()
                && let Some(pid) = g.pid
            {
                let place = self.labels.place(g.cgroup_id, pid);
                if place.container.is_some() || g.process.cgroup.is_none() {
                    g.process.cgroup = place.cgroup.map(|c| c.to_string());
                    g.process.container_id = place.container.map(|c| c.to_string());
                }
            }
        }
        groups.retain(|g| {
            self.scope.accepts_owner(
                g.process.cgroup.as_deref(),
                g.process.container_id.as_deref(),
            )
        });
        Ok(groups)
    }
}

impl Analysis for Leaks {
    fn banner(&self) -> String {
        format!(
            "CLOSE_WAIT leaks: reporting sockets older than {} every {}",
            humantime::format_duration(self.opts.min_age),
            humantime::format_duration(self.opts.interval)
        )
    }

    /// Note the sockets already in CLOSE_WAIT in every namespace: their age
    /// is known only from now on.
    fn on_start(&mut self, cx: &mut Cx<'_>) {
        let (seeded, namespaces) = collect::seed(cx);
        self.collector.seeded = seeded;
        self.collector.busy.clone_from(&namespaces);
        self.collector.seeded_in = namespaces;
    }

    /// The leak report reads the kernel's socket store; no record is for it.
    fn on_event(&mut self, _cx: &mut Cx<'_>, _ev: Event) {}

    fn report(&mut self, cx: &mut Cx<'_>, final_report: bool) -> anyhow::Result<()> {
        let mut groups = self.groups(cx)?;
        // A JVM's perf map refreshed now names its frames in the next
        // report; the final one has no next: it waits, and reads again.
        if self.jvms.visit(&mut groups, true) && final_report {
            self.jvms.wait(crate::host::jvm::ATTACH_TIMEOUT);
            self.collector.symbols.restart();
            groups = self.groups(cx)?;
            self.jvms.visit(&mut groups, false);
        }
        self.gauges = gauges(&groups, self.top);
        let now = SystemTime::now();
        if self.json {
            let time = wall_time(now);
            let report = Report {
                final_report,
                time: &time,
            };
            for g in &groups {
                json_line(cx.out, &JsonGroup::new(report, self.opts.min_age, g))?;
            }
        } else {
            let when = crate::report::text::report_time(now);
            let own = cx.own().map(|n| n.0);
            let text = render_text(&groups, &when, self.opts.min_age, final_report, own);
            cx.out.extend_from_slice(text.as_bytes());
            cx.out.extend_from_slice(b"\n");
        }
        match self.stacks.sweep(cx.ebpf, &self.collector.marks) {
            Ok(r) => log::debug!("stacks freed: {r:?}"),
            Err(e) => log::warn!("freeing the stacks of sockets gone: {e}"),
        }
        Ok(())
    }

    fn export(&mut self, _cx: &mut Cx<'_>, snapshot: &mut Snapshot) {
        snapshot.leaks.clone_from(&self.gauges);
    }

    /// CLOSE_WAIT sockets closed during the run.
    fn exit_lines(
        &self,
        cx: &mut Cx<'_>,
        kernel: Option<&KernelCounters>,
        _counts: &RunCounts,
    ) -> Vec<String> {
        let row = maps::read_state_row(cx.ebpf, TcpState::CloseWait)
            .inspect_err(|e| log::warn!("reading the CLOSE_WAIT dwell histogram: {e}"))
            .ok()
            .flatten();
        let ended = kernel.map_or(0, |k| k.get(Counter::LongDwells));
        let mut lines = vec![closed_line(
            ended,
            self.opts.min_age,
            row.as_ref().map(|(h, min)| (h, *min)),
        )];
        let bad = self.collector.symbols.perf_map_bad_lines;
        if bad != 0 {
            lines.push(format!(
                "perf maps: {bad} lines did not parse (the traced processes write them; \
                 the frames they would name stay unnamed)"
            ));
        }
        lines
    }
}
