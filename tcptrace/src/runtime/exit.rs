//! How a run ends: the final reports after a stop, and the exit summary on
//! stderr on every way out (a stop, a closed stdout, an error), with the one
//! loss line that every mode shares; and the same counters for `/metrics`.

use aya::maps::{MapData, RingBuf};

use tcptrace_common::Counter;

use super::{End, Run};
use crate::{
    analyses::RunCounts,
    host::{sockdiag, uname},
    kernel::{counters, maps},
    model::counters::{UserLosses, losses},
    report::{
        prometheus::{BuildInfo, Snapshot},
        summary::{
            NamespaceCounts, costs_line, losses_line, namespaces_line, recursion_misses_line,
            socket_map_line,
        },
    },
};

impl Run<'_> {
    /// After the loop: whatever was submitted before the end is still
    /// handed over; after a stop, the final reports; then the summary.
    pub(super) fn finish(&mut self, ring: &mut RingBuf<MapData>, end: End) -> anyhow::Result<End> {
        self.drain(ring, true);
        let reported = if end == End::Stopped {
            self.poll();
            self.report(true)
        } else {
            Ok(())
        };
        let flushed = self.flush();
        let end = if self.sink.closed() {
            End::BrokenPipe
        } else {
            end
        };
        self.print_exit_lines();
        reported?;
        flushed?;
        Ok(end)
    }

    /// The exit summary, on stderr.
    pub(super) fn print_exit_lines(&mut self) {
        for line in self.exit_lines() {
            eprintln!("{line}");
        }
    }

    /// Each analysis's lines, then the loss line, the socket store and the
    /// kernel cost shared by all; at `-v`, the skipped runs per program.
    fn exit_lines(&mut self) -> Vec<String> {
        let kernel = counters::read(self.ebpf)
            .inspect_err(|e| log::warn!("reading kernel counters: {e}"))
            .ok();
        let counts = self.counts;
        let (analyses, mut cx) = self.split();
        let mut lines: Vec<String> = analyses
            .iter()
            .flat_map(|a| a.exit_lines(&mut cx, kernel.as_ref(), &counts))
            .collect();
        let user = user_losses(&counts);
        lines.push(losses_line(kernel.as_ref(), &user));
        if let Some(n) = &self.namespaces {
            let c = n.counts();
            lines.push(namespaces_line(&NamespaceCounts {
                followed: c.alive,
                closed: c.closed,
                vanished: c.vanished,
                unreadable: c.unopenable,
                left_out: c.untracked,
            }));
        }
        if let Some(k) = &kernel {
            lines.push(socket_map_line(k));
        }
        let costs = counters::program_costs(self.ebpf);
        lines.push(costs_line(&costs));
        if log::log_enabled!(log::Level::Info) {
            lines.push(recursion_misses_line(&costs));
        }
        lines
    }

    /// What `/metrics` has of the run itself, whatever the analyses: the
    /// build, every loss of the loss line, the sockets in CLOSE_WAIT.
    pub(super) fn export_run(&self, snap: &mut Snapshot) {
        if snap.build.version.is_empty() {
            snap.build = BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                kernel: uname::kernel_release(),
            };
        }
        let kernel = counters::read(self.ebpf)
            .inspect_err(|e| log::warn!("reading kernel counters for /metrics: {e}"))
            .ok();
        let user = user_losses(&self.counts);
        snap.losses = (losses(kernel.as_ref(), &user).iter())
            .filter_map(|l| Some((l.reason, l.value?)))
            .collect();
        snap.close_wait = kernel.map(|k| k.close_wait);
        snap.untracked = kernel.map(|k| k.get(Counter::SockUnknown));
    }
}

/// The losses counted in userspace so far.
fn user_losses(counts: &RunCounts) -> UserLosses {
    UserLosses {
        undecodable: counts.undecodable,
        log_lost: counts.log_lost,
        map_unreadable: maps::unreadable_entries(),
        sockdiag_failed: sockdiag::failed_requests(),
    }
}
