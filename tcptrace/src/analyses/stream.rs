//! The stream: every transition and reset that passes the filters, printed
//! in time order as a line of text or JSON, with its owner and dwell.

use std::time::Duration;

use tcptrace_common::user::alloc_free::Comm;

use crate::{
    analyses::{Analysis, Cx, RunCounts, Setup},
    host::{cgroup::labels::Labeller, localtime, procs},
    kernel::cpulog::CommCache,
    model::{
        counters::{KernelCounters, UserCounters},
        event::Event,
        filter::Filter,
        plan::Scope,
    },
    report::{
        event_line::{Format, Printer, Width, Zone},
        summary,
    },
};

/// How long a record may take from its timestamp to its commit in the ring:
/// a drain holds back what is younger, since a record of another CPU's ring
/// that was drained first could still be committed with an earlier time.
/// (A program runs for microseconds; one held up longer by preemption comes
/// out in the next drain, out of order but not lost.)
const IN_FLIGHT_NS: u64 = 1_000_000;

/// The stream's drain period: the per-CPU state rings wake no reader (a
/// wakeup costs the kernel an `irq_work` per record it is due for), so
/// userspace drains every ring this often; a ring of
/// `crate::kernel::sizing::MIN_CPU_RING_BYTES` then holds 200 000
/// transitions a second per CPU.
const DRAIN_PERIOD: Duration = Duration::from_millis(20);

/// Events from several rings, released in time order once no ring can still
/// deliver an earlier one.
#[derive(Default)]
pub struct Merge {
    pending: Vec<Event>,
}

impl Merge {
    pub fn push(&mut self, ev: Event) {
        self.pending.push(ev);
    }

    /// The events stamped before `watermark` (all of them with `u64::MAX`),
    /// in time order; the rest wait for a later call.
    pub fn release(&mut self, watermark: u64) -> Vec<Event> {
        self.pending.sort_by_key(Event::ts_ns);
        let n = self.pending.partition_point(|e| e.ts_ns() < watermark);
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }
}

pub struct Stream {
    printer: Printer,
    filter: Filter,
    /// `--container` and `--cgroup`, applied where the owner is placed.
    scope: Scope,
    /// Where owners' comms come from: the lean store keeps only pids.
    comms: CommCache,
    merge: Merge,
    /// Owners' containers, by the cgroup id the kernel noted.
    labels: Labeller,
    /// What it saw; records and undecodable ones are the runtime's.
    counts: UserCounters,
}

impl Stream {
    pub fn new(setup: &Setup<'_>) -> anyhow::Result<Self> {
        let format = if setup.plan.json {
            Format::Json
        } else {
            Format::Text
        };
        Ok(Stream {
            printer: Printer::new(format, setup.clock, setup.reasons.clone())
                .with_own_netns(setup.own_netns)
                .with_width(if setup.plan.text.wide {
                    Width::Wide
                } else {
                    Width::Narrow
                })
                .with_zone(setup.plan.text.local_time.then(|| -> Zone {
                    Box::new(|s| localtime::offset_at(s).map(|o| (o.seconds, o.name)))
                })),
            filter: setup.plan.filter.clone(),
            scope: setup.plan.scope.clone(),
            comms: CommCache::open(setup.ebpf)?,
            merge: Merge::default(),
            labels: Labeller::default(),
            counts: UserCounters::default(),
        })
    }

    /// Name the owner of `ev` if the kernel sent it without a comm: from
    /// the comm cache, else from /proc while the process lives, else it
    /// stays unnamed.
    fn name_owner(&self, ev: &mut Event) {
        if let Some(o) = ev.owner_mut()
            && o.comm.is_empty()
        {
            match self.comms.comm(o.pid, o.tid) {
                Some((c, cgroup)) => {
                    o.comm = Comm::of(&c).to_string();
                    o.cgroup = (cgroup != 0).then_some(cgroup);
                }
                None => o.comm = procs::comm(o.pid).unwrap_or_default(),
            }
        }
    }
}

impl Analysis for Stream {
    fn banner(&self) -> String {
        "TCP state transitions and resets".to_owned()
    }

    fn drain_period(&self) -> Option<Duration> {
        Some(DRAIN_PERIOD)
    }

    fn on_start(&mut self, cx: &mut Cx<'_>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(h) = self.printer.header(now) {
            cx.out.extend_from_slice(h.as_bytes());
            cx.out.extend_from_slice(b"\n");
        }
    }

    fn on_event(&mut self, _cx: &mut Cx<'_>, mut ev: Event) {
        match ev {
            Event::State(_) => self.counts.state_events += 1,
            Event::Reset(_) => self.counts.reset_events += 1,
            Event::Failure(_) => {}
        }
        if self.filter.matches(&ev) {
            self.name_owner(&mut ev);
            self.merge.push(ev);
        } else {
            self.counts.filtered += 1;
        }
    }

    /// Print, in time order, what no ring can still precede; at the end,
    /// everything.
    fn on_drained(&mut self, cx: &mut Cx<'_>, started_ns: u64, last: bool) {
        // Whatever is stamped before the drain began is committed by the
        // time the rings are read (see IN_FLIGHT_NS).
        let watermark = if last {
            u64::MAX
        } else {
            started_ns.saturating_sub(IN_FLIGHT_NS)
        };
        for ev in self.merge.release(watermark) {
            let place = ev
                .owner()
                .map(|o| self.labels.place(o.cgroup, o.pid))
                .unwrap_or_default();
            if !self
                .scope
                .accepts_owner(place.cgroup.as_deref(), place.container.as_deref())
            {
                self.counts.filtered += 1;
                continue;
            }
            self.printer.write(&ev, place.container.as_deref(), cx.out);
            self.counts.printed += 1;
        }
    }

    fn exit_lines(
        &self,
        _cx: &mut Cx<'_>,
        _kernel: Option<&KernelCounters>,
        counts: &RunCounts,
    ) -> Vec<String> {
        let user = UserCounters {
            records: counts.records,
            decode_errors: counts.undecodable,
            ..self.counts
        };
        vec![summary::events_line(&user)]
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::TcpState;

    use super::*;
    use crate::model::records::{as_bytes, decode, tests::raw_state};

    fn at(ts_ns: u64) -> Event {
        let mut raw = raw_state(TcpState::Established, TcpState::CloseWait);
        raw.header.ts_ns = ts_ns;
        decode(&as_bytes(&raw)).unwrap()
    }

    fn times(evs: &[Event]) -> Vec<u64> {
        evs.iter().map(Event::ts_ns).collect()
    }

    /// Two CPUs' rings drained one after the other: what each drain
    /// releases is in time order, what is younger than the watermark waits,
    /// and a record committed late on the first ring still comes out before
    /// the later ones of the second.
    #[test]
    fn the_merge_releases_in_time_order_up_to_the_watermark() {
        let mut m = Merge::default();
        for ts in [10, 40, 70] {
            m.push(at(ts)); // CPU 0's ring
        }
        for ts in [20, 30, 90] {
            m.push(at(ts)); // CPU 1's ring
        }
        assert_eq!(times(&m.release(50)), [10, 20, 30, 40]);
        // CPU 0 commits a record stamped 60 after its ring was read.
        m.push(at(60));
        m.push(at(100));
        assert_eq!(times(&m.release(95)), [60, 70, 90]);
        assert!(m.release(95).is_empty(), "nothing is released twice");
        assert_eq!(times(&m.release(u64::MAX)), [100]);
    }
}
