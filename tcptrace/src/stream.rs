//! The streaming mode: drain the ring buffer, decode, filter, print, until
//! Ctrl-C, SIGTERM, the end of `--duration`, or a closed stdout.

use std::{io, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use bytes::BytesMut;
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::interval,
};

use crate::{
    cli::Cli,
    cpulog::CommCache,
    event::{Event, decode},
    filter::Filter,
    loader::Tracer,
    output::{Clock, Format, Printer, StdoutSink, monotonic_ns},
    stats::{KernelCounters, Summary, UserCounters},
    stop::Stop,
};

/// Printed on stderr once every program is attached: from here on no event is
/// missed. Tests wait for it.
pub const READY: &str = "tcptrace: tracing";

/// Wait for the kernel to wake the ring buffer's reader, then drain it with
/// `drain`. Every mode's event loop has this arm.
pub async fn drain_when_woken<T>(
    ring: &mut AsyncFd<RingBuf<MapData>>,
    drain: impl FnOnce(&mut RingBuf<MapData>) -> T,
) -> anyhow::Result<T> {
    let mut guard = ring
        .readable_mut()
        .await
        .context("waiting on the ring buffer")?;
    let out = drain(guard.get_inner_mut());
    guard.clear_ready();
    Ok(out)
}

/// A timer that first fires after `first`, then every `period`; a late tick
/// delays the next ones instead of bursting to catch up.
#[must_use]
pub fn timer(first: Duration, period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Ctrl-C, SIGTERM or the end of `--duration`.
    Stopped,
    /// stdout was closed (e.g. `| head`): not an error.
    BrokenPipe,
}

/// How long a record may take from its timestamp to its commit in the ring:
/// a drain holds back what is younger, since a record of another CPU's ring
/// that was drained first could still be committed with an earlier time.
/// (A program runs for microseconds; one held up longer by preemption comes
/// out in the next drain, out of order but not lost.)
const IN_FLIGHT_NS: u64 = 1_000_000;

/// The stream's drain period: the per-CPU state rings wake no reader (a
/// wakeup costs the kernel an `irq_work` per record it is due for), so
/// userspace drains every ring this often; a ring of
/// `crate::loader::MIN_CPU_RING_BYTES` then holds 200 000 transitions a
/// second per CPU.
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

struct Drain<'a> {
    printer: &'a Printer,
    filter: &'a Filter,
    /// Where owners' comms come from: the lean store keeps only pids.
    comms: &'a CommCache,
    counts: UserCounters,
    merge: Merge,
    buf: BytesMut,
    out: StdoutSink,
}

impl Drain<'_> {
    /// Decode, count and filter every record in `ring`; what passes waits
    /// in the merge.
    fn collect(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            self.counts.records += 1;
            match decode(&item) {
                Ok(mut ev) => {
                    match ev {
                        Event::State(_) => self.counts.state_events += 1,
                        Event::Reset(_) => self.counts.reset_events += 1,
                        Event::Failure(_) => {}
                    }
                    if self.filter.matches(&ev) {
                        self.comms.name_owner(&mut ev);
                        self.merge.push(ev);
                    } else {
                        self.counts.filtered += 1;
                    }
                }
                Err(e) => {
                    self.counts.decode_errors += 1;
                    log::warn!("dropping a record: {e}");
                }
            }
        }
    }

    /// Drain the shared ring and every CPU's state ring, and print, in time
    /// order, what no ring can still precede; `last` prints everything.
    fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        cpu_rings: &mut [RingBuf<MapData>],
        last: bool,
    ) -> io::Result<()> {
        // Read before the rings: whatever is stamped earlier is committed by
        // the time they are read (see IN_FLIGHT_NS).
        let watermark = if last {
            u64::MAX
        } else {
            monotonic_ns().saturating_sub(IN_FLIGHT_NS)
        };
        self.collect(ring);
        for r in cpu_rings {
            self.collect(r);
        }
        for ev in self.merge.release(watermark) {
            self.printer.write(&ev, &mut self.buf);
            self.counts.printed += 1;
            if self.buf.len() >= 64 * 1024 {
                self.out.write(&mut self.buf)?;
            }
        }
        self.out.write(&mut self.buf)
    }
}

/// Take the `EVENTS` ring buffer and register it with the event loop. Every
/// mode drains it the same way: completely, then `clear_ready`.
pub fn take_ring(ebpf: &mut aya::Ebpf) -> anyhow::Result<AsyncFd<RingBuf<MapData>>> {
    let ring = ebpf
        .take_map("EVENTS")
        .context("the eBPF object has no EVENTS map")?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    // SAFETY: the RingBuf owns the map fd, which stays open and refers to the
    // same ring buffer until the AsyncFd (and the RingBuf in it) is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with the event loop: {e}"))
}

/// Run the streaming mode on a loaded tracer.
pub async fn run(cli: &Cli, tracer: Tracer) -> anyhow::Result<(End, Summary)> {
    let Tracer {
        mut ebpf,
        reasons,
        mut logger,
        mut state_rings,
        ..
    } = tracer;
    let mut ring = take_ring(&mut ebpf)?;

    let format = if cli.json { Format::Json } else { Format::Text };
    let printer = Printer::new(format, Clock::now(), reasons);
    let filter = Filter::from_cli(cli);
    let comms = CommCache::open(&ebpf)?;
    let mut drain = Drain {
        printer: &printer,
        filter: &filter,
        comms: &comms,
        counts: UserCounters::default(),
        merge: Merge::default(),
        buf: BytesMut::with_capacity(128 * 1024),
        out: StdoutSink::default(),
    };
    if let Some(h) = printer.header() {
        drain.buf.extend_from_slice(h.as_bytes());
        drain.buf.extend_from_slice(b"\n");
        drain.out.write(&mut drain.buf)?;
    }

    let mut stop = Stop::new(cli.duration)?;
    // The kernel wakes us for the shared ring only once an eighth of it is
    // full, and never for the per-CPU state rings (wakeups are costly for
    // it): this tick drains them all, and the eBPF side's log records.
    let mut tick = interval(DRAIN_PERIOD);
    eprintln!("{READY} TCP state transitions and resets (Ctrl-C to stop)");

    let end = loop {
        tokio::select! {
            r = drain_when_woken(&mut ring, |r| drain.drain(r, &mut state_rings, false)) => r??,
            _ = tick.tick() => {
                drain.drain(ring.get_mut(), &mut state_rings, false)?;
                if let Some(l) = logger.as_mut() {
                    l.flush();
                }
            }
            () = stop.wait() => break End::Stopped,
        }
        if drain.out.closed() {
            break End::BrokenPipe;
        }
    };
    // Whatever was submitted before we stopped is still printed.
    drain.drain(ring.get_mut(), &mut state_rings, true)?;
    let kernel = KernelCounters::read(&ebpf)
        .inspect_err(|e| log::warn!("reading kernel counters: {e}"))
        .ok();
    let end = if drain.out.closed() {
        End::BrokenPipe
    } else {
        end
    };
    Ok((
        end,
        Summary {
            kernel,
            user: drain.counts,
            costs: crate::stats::program_costs(&ebpf),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_state;
    use tcptrace_common::TcpState;

    fn at(ts_ns: u64) -> Event {
        let mut raw = raw_state(TcpState::Established, TcpState::CloseWait);
        raw.header.ts_ns = ts_ns;
        crate::event::decode(&crate::event::as_bytes(&raw)).unwrap()
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

    #[test]
    fn the_monotonic_clock_is_the_kernels() {
        // bpf_ktime_get_ns() and CLOCK_MONOTONIC agree: boot-relative, so
        // far below the epoch's nanoseconds, and moving forward.
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && a <= b && b < 1_000_000_000 * 86_400 * 365 * 50);
    }
}
