//! `--closewait-leaks`: every `--interval`, report the sockets that have sat
//! in CLOSE_WAIT longer than `--min-age`, grouped by owner and code path.
//!
//! No record streams: the kernel's socket store holds each socket's state,
//! entry time, owner, EOF time and stacks, so a report is a scan of it
//! ([`collect`]). Leaks that ended are counted by the kernel's CLOSE_WAIT
//! dwell histogram and its count of dwells past `--min-age`.

use std::{sync::Arc, time::SystemTime};

use tcptrace_common::{Counter, TcpState};

use crate::{
    analyses::{Analysis, Cx, RunCounts, Setup},
    host::{procs, sockdiag, symbolize::Symbols},
    kernel::{clock::monotonic_ns, maps},
    model::{counters::KernelCounters, event::Event, plan::LeakOptions},
    report::{
        closewait::{JsonGroup, closed_line, render_text},
        json_line,
    },
};

mod collect;

pub struct Leaks {
    opts: LeakOptions,
    json: bool,
    collector: collect::Collector,
    /// Frees the stacks of sockets gone, after each report.
    stacks: maps::StackRecycler,
}

impl Leaks {
    /// Note the sockets already in CLOSE_WAIT: their age is known only from
    /// now on.
    #[must_use]
    pub fn new(setup: &Setup<'_>, opts: LeakOptions) -> Self {
        let start_ns = monotonic_ns();
        let seeded = sockdiag::dump(&[TcpState::CloseWait])
            .inspect_err(|e| {
                log::warn!(
                    "sock_diag at start-up (sockets older than tcptrace will be missed): {e}"
                );
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.inode != 0)
            .map(|d| d.inode)
            .collect();
        Leaks {
            opts,
            json: setup.plan.json,
            collector: collect::Collector {
                min_age: opts.min_age,
                filter: setup.plan.filter.clone(),
                ports: setup.plan.ports,
                start_ns,
                seeded,
                symbols: Symbols::new(opts.symbolize_timeout, Arc::clone(&setup.stopping)),
                marks: maps::StackMarks::default(),
            },
            stacks: maps::StackRecycler::default(),
        }
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

    /// The leak report reads the kernel's socket store; no record is for it.
    fn on_event(&mut self, _cx: &mut Cx<'_>, _ev: Event) {}

    fn report(&mut self, cx: &mut Cx<'_>, final_report: bool) -> anyhow::Result<()> {
        let groups = self.collector.collect(cx.ebpf)?.finish(procs::info);
        let when = crate::report::text::report_time(SystemTime::now());
        if self.json {
            for g in &groups {
                let group = JsonGroup {
                    kind: "closewait_leak",
                    report_time: &when,
                    report: if final_report { "final" } else { "interval" },
                    min_age_s: self.opts.min_age.as_secs_f64(),
                    group: g,
                };
                json_line(cx.out, &group)?;
            }
        } else {
            let text = render_text(&groups, &when, self.opts.min_age, final_report);
            cx.out.extend_from_slice(text.as_bytes());
            cx.out.extend_from_slice(b"\n");
        }
        match self.stacks.sweep(cx.ebpf, &self.collector.marks) {
            Ok(r) => log::debug!("stacks freed: {r:?}"),
            Err(e) => log::warn!("freeing the stacks of sockets gone: {e}"),
        }
        Ok(())
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
        vec![closed_line(
            ended,
            self.opts.min_age,
            row.as_ref().map(|(h, min)| (h, *min)),
        )]
    }
}
