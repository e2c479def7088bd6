//! The analyses: the stream, dwell histograms, CLOSE_WAIT leaks and
//! TIME_WAIT. Each consumes decoded records and sock_diag polls through
//! [`Analysis`] and writes its own reports; none imports another, so any
//! combination runs in one process over one loaded kernel object.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use aya::Ebpf;

use crate::model::{
    clock::Clock, counters::KernelCounters, event::Event, netns::Netns, plan::Plan,
    reset_reasons::ResetReasons, socket::DiagSocket,
};

pub mod closewait;
mod cx;
pub mod hist;
pub mod stream;
pub mod timewait;

pub use cx::{AskError, Cx};

/// What the analyses are built from: the plan, and what loading the kernel
/// side found out.
pub struct Setup<'a> {
    pub plan: &'a Plan,
    pub ebpf: &'a Ebpf,
    /// The kernel's names of `enum sk_rst_reason` values.
    pub reasons: &'a ResetReasons,
    /// Why failed `bind()`/`connect()` calls are not caught, if they are not.
    pub failures_unavailable: Option<&'a str>,
    pub clock: Clock,
    /// Set once the run is ending: work that may take long (symbolizing)
    /// cuts itself short.
    pub stopping: Arc<AtomicBool>,
    /// tcptrace's own network namespace, when records carry namespaces.
    pub own_netns: Option<Netns>,
}

/// A poll of one namespace's timewait sockets, filtered like the kernel's
/// records: every [`TW_POLL`], for each namespace an analysis asked for
/// ([`Analysis::timewait_wanted`]).
pub struct TimewaitPoll<'a> {
    pub now_ns: u64,
    /// The namespace polled; None when namespaces are not followed (then
    /// it is tcptrace's own).
    pub netns: Option<Netns>,
    pub sockets: &'a [DiagSocket],
}

/// How often timewait sockets are polled: the resolution of early-kill
/// times and of "never seen".
pub const TW_POLL: Duration = Duration::from_secs(1);

/// What the run counted outside the analyses, for their exit lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunCounts {
    /// Records read from the rings and the per-CPU logs.
    pub records: u64,
    /// Of those, records that could not be decoded.
    pub undecodable: u64,
    /// Per-CPU log records read, and lost (overwritten before they were
    /// read, or never intact).
    pub log_read: u64,
    pub log_lost: u64,
}

/// One analysis, driven by the runtime.
pub trait Analysis {
    /// What it reports, for the start-up line.
    fn banner(&self) -> String;

    /// How often it needs the rings and logs drained, beyond the wakeups
    /// of the shared ring; None when those suffice.
    fn drain_period(&self) -> Option<Duration> {
        None
    }

    /// Whether it follows timewait sockets: then the runtime polls every
    /// [`TW_POLL`], asking [`Analysis::timewait_wanted`] each time.
    fn follows_timewait(&self) -> bool {
        false
    }

    /// At each poll, once the host's namespaces were listed again: the
    /// namespaces whose timewait sockets it wants now (of [`Cx::traced`],
    /// and those its own state follows). The runtime dumps each namespace
    /// of all the analyses' wants once, and hands each analysis a
    /// [`TimewaitPoll`] of every namespace it asked for. Asking for idle
    /// namespaces is what makes polls cost: ask for those with sockets to
    /// follow.
    fn timewait_wanted(&mut self, _cx: &Cx<'_>) -> Vec<Option<Netns>> {
        Vec::new()
    }

    /// Once, before the first record: a header, a first look.
    fn on_start(&mut self, _cx: &mut Cx<'_>) {}

    /// A decoded record, from a ring or a per-CPU log.
    fn on_event(&mut self, cx: &mut Cx<'_>, ev: Event);

    /// The rings and logs were drained. `started_ns` is when the drain
    /// began (no record stamped well before it is still in flight); `last`
    /// when the run is over.
    fn on_drained(&mut self, _cx: &mut Cx<'_>, _started_ns: u64, _last: bool) {}

    /// One namespace's timewait sockets, when it asked for them.
    fn on_poll(&mut self, _cx: &mut Cx<'_>, _poll: &TimewaitPoll<'_>) {}

    /// Every poll period, for what it re-reads or announces on its own.
    fn on_tick(&mut self, _cx: &mut Cx<'_>) {}

    /// A report every `--interval`, and the final one.
    fn report(&mut self, _cx: &mut Cx<'_>, _final_report: bool) -> anyhow::Result<()> {
        Ok(())
    }

    /// Fill in what it exports to Prometheus.
    fn export(&mut self, _cx: &mut Cx<'_>, _snapshot: &mut crate::report::prometheus::Snapshot) {}

    /// Its lines of the exit summary, after a stop (Ctrl-C, SIGTERM, the end
    /// of `--duration`).
    fn exit_lines(
        &self,
        _cx: &mut Cx<'_>,
        _kernel: Option<&KernelCounters>,
        _counts: &RunCounts,
    ) -> Vec<String> {
        Vec::new()
    }
}

/// The analyses `setup.plan` asks for, in report order.
pub fn build(setup: &Setup<'_>) -> anyhow::Result<Vec<Box<dyn Analysis>>> {
    let a = &setup.plan.analyses;
    let mut out: Vec<Box<dyn Analysis>> = Vec::new();
    if a.stream {
        out.push(Box::new(stream::Stream::new(setup)?));
    }
    if let Some(o) = a.closewait {
        out.push(Box::new(closewait::Leaks::new(setup, o)));
    }
    if let Some(o) = a.hist {
        out.push(Box::new(hist::Hists::new(setup, o)));
    }
    if let Some(o) = a.timewait {
        out.push(Box::new(timewait::Timewait::new(setup, o)));
    }
    Ok(out)
}
