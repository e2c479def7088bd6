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
    output::{Clock, Format, Printer, StdoutSink},
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

struct Drain<'a> {
    printer: &'a Printer,
    filter: &'a Filter,
    /// Where owners' comms come from: the lean store keeps only pids.
    comms: &'a CommCache,
    counts: UserCounters,
    buf: BytesMut,
    out: StdoutSink,
}

impl Drain<'_> {
    /// Consume every record in the ring buffer, writing in batches.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> io::Result<()> {
        while let Some(item) = ring.next() {
            self.counts.records += 1;
            match decode(&item) {
                Ok(mut ev) => {
                    self.comms.name_owner(&mut ev);
                    match ev {
                        Event::State(_) => self.counts.state_events += 1,
                        Event::Reset(_) => self.counts.reset_events += 1,
                        Event::Failure(_) => {}
                    }
                    if self.filter.matches(&ev) {
                        self.printer.write(&ev, &mut self.buf);
                        self.counts.printed += 1;
                    } else {
                        self.counts.filtered += 1;
                    }
                }
                Err(e) => {
                    self.counts.decode_errors += 1;
                    log::warn!("dropping a record: {e}");
                }
            }
            drop(item);
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
        buf: BytesMut::with_capacity(128 * 1024),
        out: StdoutSink::default(),
    };
    if let Some(h) = printer.header() {
        drain.buf.extend_from_slice(h.as_bytes());
        drain.buf.extend_from_slice(b"\n");
        drain.out.write(&mut drain.buf)?;
    }

    let mut stop = Stop::new(cli.duration)?;
    // The kernel wakes us only once an eighth of the ring is full (wakeups
    // are costly for it); this tick bounds the delay of a quiet stream, and
    // drains the eBPF side's log records.
    let mut tick = interval(Duration::from_millis(100));
    eprintln!("{READY} TCP state transitions and resets (Ctrl-C to stop)");

    let end = loop {
        tokio::select! {
            r = drain_when_woken(&mut ring, |r| drain.drain(r)) => r??,
            _ = tick.tick() => {
                drain.drain(ring.get_mut())?;
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
    drain.drain(ring.get_mut())?;
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
