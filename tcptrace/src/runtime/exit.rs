//! How a run ends: the final reports after a stop, and the exit summary on
//! stderr on every way out (a stop, a closed stdout, an error), with the one
//! loss line that every mode shares.

use aya::maps::{MapData, RingBuf};

use super::{End, Run};
use crate::{
    host::sockdiag,
    kernel::{counters, maps},
    model::counters::UserLosses,
    report::summary::{NamespaceCounts, costs_line, losses_line, namespaces_line, socket_map_line},
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
    /// kernel cost shared by all.
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
        let user = UserLosses {
            undecodable: counts.undecodable,
            log_lost: counts.log_lost,
            map_unreadable: maps::unreadable_entries(),
            sockdiag_failed: sockdiag::failed_requests(),
        };
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
        lines.push(costs_line(&counters::program_costs(self.ebpf)));
        lines
    }
}
