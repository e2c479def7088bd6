//! `--hist`: dwell-time histograms for every TCP state, TIME_WAIT included.
//!
//! Full-socket states are counted in the kernel (no per-transition records).
//! TIME_WAIT and orphaned FIN_WAIT2 live in timewait sockets that the
//! tracepoint never sees: they are followed through the runtime's sock_diag
//! polls ([`Tracker::from_polls`]). Only resets stream.

use std::{collections::BTreeMap, path::Path, time::Duration, time::SystemTime};

use tcptrace_common::Counter;

use crate::{
    analyses::{Analysis, Cx, Setup, TW_POLL, TimewaitPoll},
    host::{netstat::timewait_overflow, sysctl},
    kernel::{counters, maps},
    model::{
        event::Event, histogram::by_name, plan::HistOptions, reset_reasons::ResetReasons,
        timewait::lives::Tracker,
    },
    report::{hist::HistReport, prometheus::Snapshot},
};

pub struct Hists {
    opts: HistOptions,
    json: bool,
    tw: Tracker,
    /// RSTs by (direction, reason).
    resets: BTreeMap<(&'static str, String), u64>,
    reasons: ResetReasons,
    overflow_at_start: Option<u64>,
}

impl Hists {
    #[must_use]
    pub fn new(setup: &Setup<'_>, opts: HistOptions) -> Self {
        let fin_timeout = sysctl::read(Path::new(sysctl::ROOT))
            .fin_timeout_s
            .inspect_err(|e| log::warn!("orphan FIN_WAIT2 dwell not timed: {e}"))
            .ok()
            .map(|s| Duration::from_secs(u64::from(s)));
        Hists {
            opts,
            json: setup.plan.json,
            tw: Tracker::from_polls(fin_timeout),
            resets: BTreeMap::new(),
            reasons: setup.reasons.clone(),
            overflow_at_start: timewait_overflow(),
        }
    }
}

impl Analysis for Hists {
    fn banner(&self) -> String {
        format!(
            "TCP state dwell times: histograms every {}",
            humantime::format_duration(self.opts.interval)
        )
    }

    fn polls_timewait(&self) -> bool {
        true
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

    fn on_poll(&mut self, _cx: &mut Cx<'_>, poll: &TimewaitPoll<'_>) {
        self.tw.on_poll(poll.now_ns, TW_POLL, poll.sockets);
    }

    fn report(&mut self, cx: &mut Cx<'_>, final_report: bool) -> anyhow::Result<()> {
        let hists = maps::read_hists(cx.ebpf, self.opts.by)?;
        let when = crate::report::text::report_time(SystemTime::now());
        let report = HistReport {
            when: &when,
            final_report,
            by: by_name(self.opts.by),
            hists: &hists,
            timewait: &self.tw,
            overflow: timewait_overflow()
                .zip(self.overflow_at_start)
                .map(|(a, b)| a.saturating_sub(b)),
            poll_interval: TW_POLL,
        };
        if self.json {
            report.json(cx.out)?;
        } else {
            cx.out.extend_from_slice(report.text().as_bytes());
        }
        Ok(())
    }

    /// The histograms, transitions, resets and timewait sockets, and the
    /// kernel's losses; a failed read keeps the last figures.
    fn export(&mut self, cx: &mut Cx<'_>, snap: &mut Snapshot) {
        let hists = match maps::read_hists(cx.ebpf, self.opts.by) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("reading the dwell histograms for /metrics: {e}");
                return;
            }
        };
        snap.by = by_name(self.opts.by);
        snap.dwell = hists
            .into_iter()
            .map(|((s, g), h)| (s.name().to_owned(), g, h))
            .collect();
        snap.dwell
            .push(("TIME_WAIT".to_owned(), None, self.tw.time_wait.clone()));
        snap.dwell.push((
            "FIN_WAIT2_ORPHAN".to_owned(),
            None,
            self.tw.fin_wait2_orphan.clone(),
        ));
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
        snap.time_wait = self.tw.population_time_wait;
        snap.fin_wait2_orphans = self.tw.population_fin_wait2;
        snap.timewait_entered = self.tw.entered;
        snap.timewait_expired = self.tw.expired;
        snap.timewait_killed_early = self.tw.killed_early;
        match counters::read(cx.ebpf) {
            Ok(k) => {
                snap.close_wait = k.close_wait;
                snap.ringbuf_full = k.get(Counter::RingbufFull);
                snap.evictions = k.evictions();
                snap.insert_failures = k.get(Counter::SockInsertErrors);
                snap.read_errors = k.get(Counter::ReadErrors);
                snap.hist_full = k.get(Counter::HistFull);
            }
            Err(e) => log::warn!("reading kernel counters: {e}"),
        }
    }
}
