//! The one event loop every run has: it drains the rings and per-CPU logs,
//! decodes each record once and hands it to every analysis, polls the
//! timewait sockets for those that follow them, fires the reports, serves
//! `/metrics`, and ends on Ctrl-C, SIGTERM, `--duration` or a closed stdout.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use bytes::BytesMut;

use crate::{
    analyses::{self, Analysis, Cx, RunCounts, Setup, TW_POLL},
    host::netns::Namespaces,
    kernel::{
        clock::{monotonic_ns, wall_clock},
        cpulog::{CpuLogs, LOG_DRAIN},
        load::Tracer,
        rings,
    },
    model::{
        event::Event,
        filter::PortFilter,
        netns::Netns,
        plan::Plan,
        records::{decode, decode_state},
    },
    report::prometheus::Snapshot,
};

mod exit;
mod poll;
mod serve;
mod sink;
mod stop;
#[cfg(test)]
mod tests;

use sink::StdoutSink;
use stop::Stop;

/// Printed on stderr once every program is attached: from here on no event is
/// missed. Tests wait for it.
pub const READY: &str = "tcptrace: tracing";

/// Undecodable records logged one by one; the rest are only counted (the
/// loss line has them all).
const UNDECODABLE_WARNINGS: u64 = 5;

/// Count an undecodable record, and log it while that is useful.
fn undecodable(counts: &mut RunCounts, e: &dyn std::fmt::Display) {
    counts.undecodable += 1;
    match counts.undecodable.cmp(&UNDECODABLE_WARNINGS) {
        std::cmp::Ordering::Less => log::warn!("dropping a record: {e}"),
        std::cmp::Ordering::Equal => {
            log::warn!("dropping a record: {e} (further ones are only counted)");
        }
        std::cmp::Ordering::Greater => {}
    }
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Ctrl-C, SIGTERM or the end of `--duration`.
    Stopped,
    /// stdout was closed (e.g. `| head`): not an error.
    BrokenPipe,
}

/// A timer that first fires after `first`, then every `period`; a late tick
/// delays the next ones instead of bursting to catch up. A `first` past what
/// an instant can hold (the flags bound it) waits a year instead of panicking.
fn timer(first: Duration, period: Duration) -> tokio::time::Interval {
    let now = tokio::time::Instant::now();
    let start = now
        .checked_add(first)
        .unwrap_or_else(|| now + Duration::from_hours(24 * 365));
    let mut t = tokio::time::interval_at(start, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// A timer that never fires, for a period nobody asked for.
fn maybe_timer(period: Option<Duration>, first: Option<Duration>) -> tokio::time::Interval {
    const NEVER: Duration = Duration::from_hours(24 * 365);
    match period {
        Some(p) => timer(first.unwrap_or(p), p),
        None => timer(NEVER, NEVER),
    }
}

/// The loop's state, apart from the shared ring (borrowed while it is
/// drained).
struct Run<'a> {
    ebpf: &'a Ebpf,
    analyses: Vec<Box<dyn Analysis>>,
    state_rings: Vec<RingBuf<MapData>>,
    logs: Option<CpuLogs>,
    counts: RunCounts,
    ports: PortFilter,
    out: BytesMut,
    sink: StdoutSink,
    namespaces: Option<Namespaces>,
    /// `--netns`, resolved.
    only: Option<Netns>,
    /// Namespaces whose failed timewait poll was logged.
    poll_warned: BTreeSet<Option<Netns>>,
}

impl Run<'_> {
    /// The analyses, and what they may use while they run, borrowed apart.
    fn split(&mut self) -> (&mut Vec<Box<dyn Analysis>>, Cx<'_>) {
        (
            &mut self.analyses,
            Cx {
                ebpf: self.ebpf,
                out: &mut self.out,
                namespaces: self.namespaces.as_mut(),
                only: self.only,
            },
        )
    }

    /// Every analysis gets `ev`; all but the last a copy.
    fn dispatch(&mut self, ev: Event) {
        let (analyses, mut cx) = self.split();
        if let Some((last, rest)) = analyses.split_last_mut() {
            for a in rest {
                a.on_event(&mut cx, ev.clone());
            }
            last.on_event(&mut cx, ev);
        }
    }

    fn record(&mut self, bytes: &[u8]) {
        self.counts.records += 1;
        match decode(bytes) {
            Ok(ev) => self.dispatch(ev),
            Err(e) => {
                undecodable(&mut self.counts, &e);
            }
        }
    }

    /// Drain the shared ring, every CPU's state ring and the per-CPU logs;
    /// then tell the analyses (`last` at the end of the run).
    fn drain(&mut self, ring: &mut RingBuf<MapData>, last: bool) {
        let started_ns = monotonic_ns();
        while let Some(item) = ring.next() {
            self.record(&item);
        }
        let mut cpu_rings = std::mem::take(&mut self.state_rings);
        for r in &mut cpu_rings {
            while let Some(item) = r.next() {
                self.record(&item);
            }
        }
        self.state_rings = cpu_rings;
        if let Some(logs) = self.logs.as_mut() {
            let logged = logs.drain();
            self.counts.log_read = logs.read();
            self.counts.log_lost = logs.lost();
            for r in logged {
                self.counts.records += 1;
                match decode_state(&r) {
                    Ok(s) => self.dispatch(Event::State(s)),
                    Err(e) => {
                        undecodable(&mut self.counts, &e);
                    }
                }
            }
        }
        let (analyses, mut cx) = self.split();
        for a in analyses.iter_mut() {
            a.on_drained(&mut cx, started_ns, last);
        }
    }

    /// Every poll period: namespaces that appeared or died, the poll, then
    /// every analysis's tick.
    fn tick(&mut self) {
        if let Some(n) = self.namespaces.as_mut() {
            n.refresh();
        }
        self.poll();
        let (analyses, mut cx) = self.split();
        for a in analyses.iter_mut() {
            a.on_tick(&mut cx);
        }
    }

    fn report(&mut self, final_report: bool) -> anyhow::Result<()> {
        let (analyses, mut cx) = self.split();
        for a in analyses.iter_mut() {
            a.report(&mut cx, final_report)?;
        }
        Ok(())
    }

    fn export(&mut self, snapshot: &Mutex<Snapshot>) -> anyhow::Result<()> {
        let mut snap = snapshot
            .lock()
            .map_err(|_| anyhow::anyhow!("metrics lock poisoned"))?;
        self.export_run(&mut snap);
        let (analyses, mut cx) = self.split();
        for a in analyses.iter_mut() {
            a.export(&mut cx, &mut snap);
        }
        Ok(())
    }

    /// Before the first record: each analysis's start, then the line that
    /// says tracing has begun.
    fn start(&mut self, plan: &Plan) -> std::io::Result<()> {
        let (analyses, mut cx) = self.split();
        for a in analyses.iter_mut() {
            a.on_start(&mut cx);
        }
        self.flush()?;
        let banners: Vec<String> = self.analyses.iter().map(|a| a.banner()).collect();
        let ctrl_c = if plan.report_interval().is_some() {
            "Ctrl-C for the final report"
        } else {
            "Ctrl-C to stop"
        };
        eprintln!("{READY} {} ({ctrl_c})", banners.join("; "));
        Ok(())
    }

    /// How often the rings and logs must be drained beyond the shared
    /// ring's wakeups: the shortest any analysis or the per-CPU logs need.
    fn drain_period(&self) -> Option<Duration> {
        (self.analyses.iter())
            .filter_map(|a| a.drain_period())
            .chain(self.logs.is_some().then_some(LOG_DRAIN))
            .min()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.write(&mut self.out)
    }
}

/// The `/metrics` endpoint, if the plan asks for one, and the snapshot it
/// serves.
async fn serve_metrics(plan: &Plan) -> anyhow::Result<Option<Arc<Mutex<Snapshot>>>> {
    let Some(addr) = plan.prometheus else {
        return Ok(None);
    };
    let s = Arc::new(Mutex::new(Snapshot::default()));
    serve::serve(addr, Arc::clone(&s)).await?;
    eprintln!("tcptrace: serving Prometheus metrics on http://{addr}/metrics");
    Ok(Some(s))
}

/// What `--netns` and the namespaces found at start-up give the run.
pub struct Scope {
    /// None when records carry no namespace or namespaces cannot be
    /// followed.
    pub namespaces: Option<Namespaces>,
    /// `--netns`, resolved to its inode.
    pub only: Option<Netns>,
}

/// Run `plan`'s analyses on a loaded tracer until the run ends.
pub async fn run(plan: &Plan, tracer: Tracer, scope: Scope) -> anyhow::Result<End> {
    let Tracer {
        mut ebpf,
        reasons,
        mut logger,
        failures_unavailable,
        log_cpus,
        state_rings,
        netns_unavailable,
        ..
    } = tracer;
    let mut ring = rings::take_events(&mut ebpf)?;
    let logs = (log_cpus != 0)
        .then(|| CpuLogs::open(&ebpf, log_cpus))
        .transpose()?;
    // Without namespaces in the records, every event is taken as
    // tcptrace's own namespace's.
    let namespaces = scope.namespaces.filter(|_| netns_unavailable.is_none());
    let mut stop = Stop::new(plan.duration)?;
    let analyses = analyses::build(&Setup {
        plan,
        ebpf: &ebpf,
        reasons: &reasons,
        failures_unavailable: failures_unavailable.as_deref(),
        clock: wall_clock(),
        stopping: stop.flag(),
        own_netns: namespaces.as_ref().map(Namespaces::own),
    })?;
    let snapshot = serve_metrics(plan).await?;
    let mut run = Run {
        ebpf: &ebpf,
        analyses,
        state_rings,
        logs,
        counts: RunCounts::default(),
        ports: plan.ports,
        out: BytesMut::with_capacity(128 * 1024),
        sink: if plan.quiet {
            StdoutSink::quiet()
        } else {
            StdoutSink::default()
        },
        namespaces,
        only: scope.only,
        poll_warned: BTreeSet::new(),
    };

    let polls = run.analyses.iter().any(|a| a.follows_timewait());
    let drain_period = run.drain_period();
    // The kernel wakes the shared ring only once an eighth of it is full,
    // and never the per-CPU rings and logs: timers drain them all.
    let mut drain = maybe_timer(drain_period, None);
    // Namespaces appear and die whatever the mode: a namespace's sockets
    // must be let go once its last process exits.
    let mut poll = maybe_timer(
        (polls || snapshot.is_some() || run.namespaces.is_some()).then_some(TW_POLL),
        Some(Duration::ZERO),
    );
    let mut report = maybe_timer(plan.report_interval(), None);
    // Every way out of the loop, errors included, ends with the summary.
    let looped: anyhow::Result<End> = async {
        run.start(plan)?;
        loop {
            tokio::select! {
                r = ring.readable_mut() => {
                    let mut guard = r.context("waiting on the ring buffer")?;
                    run.drain(guard.get_inner_mut(), false);
                    guard.clear_ready();
                }
                _ = drain.tick() => {
                    run.drain(ring.get_mut(), false);
                    if let Some(l) = logger.as_mut() {
                        l.flush();
                    }
                }
                _ = poll.tick() => {
                    run.drain(ring.get_mut(), false);
                    run.tick();
                    if let Some(s) = &snapshot {
                        run.export(s)?;
                    }
                    if let Some(l) = logger.as_mut() {
                        l.flush();
                    }
                }
                _ = report.tick() => {
                    if let Some(l) = logger.as_mut() {
                        l.flush();
                    }
                    run.report(false)?;
                }
                () = stop.wait() => break Ok(End::Stopped),
            }
            run.flush()?;
            if run.sink.closed() {
                break Ok(End::BrokenPipe);
            }
        }
    }
    .await;
    match looped {
        Ok(end) => run.finish(ring.get_mut(), end),
        Err(e) => {
            run.print_exit_lines();
            Err(e)
        }
    }
}
