//! `--hist`: dwell-time histograms for every TCP state, TIME_WAIT included.
//!
//! Full-socket states are counted in the kernel (no per-transition records).
//! TIME_WAIT and orphaned FIN_WAIT2 live in timewait sockets that the
//! tracepoint never sees: they are followed by polling sock_diag for
//! timewait sockets only, entries included ([`Tracker::from_polls`]), so
//! that they are the sockets of tcptrace's namespace and no record streams
//! per connection. Only resets stream.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use bytes::BytesMut;
use tcptrace_common::{Config, HistBy, HistKey, TcpState, hist};

use crate::{
    cli::Cli,
    event::{Event, decode},
    histogram::{self, Hist, JsonHist},
    loader::Tracer,
    metrics::{self, Snapshot},
    offsets::ResetReasons,
    output::StdoutSink,
    stats::KernelCounters,
    stop::Stop,
    stream::{End, READY, drain_when_woken, timer},
    timewait::Tracker,
};

/// How often timewait sockets are polled: the resolution of early-kill
/// times and of "never seen".
pub const TW_POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct HistOptions {
    pub interval: Duration,
    pub by: HistBy,
}

/// The `--by` key of a split, as printed.
#[must_use]
pub fn by_key(by: HistBy) -> Option<&'static str> {
    match by {
        HistBy::Off | HistBy::State => None,
        HistBy::LocalPort => Some("lport"),
        HistBy::RemotePort => Some("rport"),
        HistBy::RemoteAddr => Some("raddr"),
        HistBy::Comm => Some("comm"),
    }
}

/// The label of a group key from the kernel.
fn group_label(by: HistBy, g: &[u8; 16]) -> Option<String> {
    match by {
        HistBy::Off | HistBy::State => None,
        HistBy::LocalPort | HistBy::RemotePort => {
            Some(u16::from_ne_bytes([g[0], g[1]]).to_string())
        }
        HistBy::RemoteAddr => {
            let v6 = Ipv6Addr::from(*g);
            // v4 sockets store their address in the first four bytes.
            let is_v4 = g[4..].iter().all(|b| *b == 0);
            Some(if is_v4 {
                IpAddr::from([g[0], g[1], g[2], g[3]]).to_string()
            } else {
                v6.to_string()
            })
        }
        HistBy::Comm => {
            let end = g.iter().position(|b| *b == 0).unwrap_or(16);
            Some(if end == 0 {
                "?".to_owned()
            } else {
                String::from_utf8_lossy(&g[..end]).into_owned()
            })
        }
    }
}

/// One state's row of the kernel's by-state histograms (`HIST_STATE`),
/// summed over CPUs: the histogram, its maximum included, and the exact
/// minimum. None when the row counted no dwell.
pub fn read_state_row(ebpf: &Ebpf, state: TcpState) -> anyhow::Result<Option<(Hist, u64)>> {
    let rows: PerCpuArray<_, [u64; hist::ROW]> =
        PerCpuArray::try_from(ebpf.map("HIST_STATE").context("no HIST_STATE map")?)?;
    let per_cpu = rows.get(&(state as u32), 0)?;
    let mut h = Hist::default();
    for slot in 0..hist::ROW_MIN_INV {
        let n: u64 = per_cpu.iter().map(|r| r[slot]).sum();
        if n > 0 {
            #[expect(clippy::cast_possible_truncation, reason = "slot < 512")]
            h.add_bucket(slot as u32, n);
        }
    }
    if h.count() == 0 {
        return Ok(None);
    }
    let max = per_cpu.iter().map(|r| r[hist::ROW_MAX]).max().unwrap_or(0);
    h.add_bucket(hist::MAX_SLOT, max);
    // Stored inverted: the largest is the smallest dwell, 0 is none.
    let min = !per_cpu
        .iter()
        .map(|r| r[hist::ROW_MIN_INV])
        .max()
        .unwrap_or(0);
    Ok(Some((h, min)))
}

/// Histograms by (state, group) from the kernel's `HIST` map.
pub fn read_kernel_hists(
    ebpf: &Ebpf,
    by: HistBy,
) -> anyhow::Result<BTreeMap<(TcpState, Option<String>), Hist>> {
    let mut out: BTreeMap<(TcpState, Option<String>), Hist> = BTreeMap::new();
    if by == HistBy::State {
        for state in TcpState::ALL {
            if let Some((h, _)) = read_state_row(ebpf, state)? {
                out.insert((state, None), h);
            }
        }
        return Ok(out);
    }
    let map: PerCpuHashMap<_, HistKey, u64> =
        PerCpuHashMap::try_from(ebpf.map("HIST").context("no HIST map")?)?;
    for (key, values) in map.iter().flatten() {
        let Some(state) = TcpState::from_u32(key.state) else {
            continue;
        };
        let h = out.entry((state, group_label(by, &key.group))).or_default();
        if key.slot == hist::MAX_SLOT {
            h.add_bucket(key.slot, values.iter().copied().max().unwrap_or(0));
        } else {
            h.add_bucket(key.slot, values.iter().sum());
        }
    }
    Ok(out)
}

/// Transitions `(old, new, count)` from the kernel's `TRANSITIONS` array.
pub fn read_transitions(ebpf: &Ebpf) -> anyhow::Result<Vec<(TcpState, TcpState, u64)>> {
    let arr: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("TRANSITIONS").context("no TRANSITIONS map")?)?;
    let mut out = Vec::new();
    for old in TcpState::ALL {
        for new in TcpState::ALL {
            let i = (old as u32) * 16 + new as u32;
            let n: u64 = arr.get(&i, 0)?.iter().sum();
            if n > 0 {
                out.push((old, new, n));
            }
        }
    }
    Ok(out)
}

/// `TcpExtTCPTimeWaitOverflow` from /proc/net/netstat (this namespace):
/// TIME_WAIT sockets the kernel did not create because `tcp_max_tw_buckets`
/// was reached. None when unreadable.
#[must_use]
pub fn timewait_overflow() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "TCPTimeWaitOverflow")
        .and_then(|(_, v)| v.parse().ok())
}

struct State {
    opts: HistOptions,
    json: bool,
    filters: Config,
    tw: Tracker,
    resets: BTreeMap<(&'static str, String), u64>,
    reasons: ResetReasons,
    overflow_at_start: Option<u64>,
    snapshot: Arc<Mutex<Snapshot>>,
    undecodable: u64,
}

impl State {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(Event::Reset(r)) => {
                    let reason = r
                        .reason
                        .map_or_else(|| "-".to_owned(), |c| self.reasons.name(c));
                    *self
                        .resets
                        .entry((r.direction.as_str(), reason))
                        .or_default() += 1;
                }
                Ok(Event::State(_) | Event::Failure(_)) => {}
                Err(e) => {
                    self.undecodable += 1;
                    log::warn!("dropping a record: {e}");
                }
            }
        }
    }

    fn poll_timewait(&mut self) {
        match crate::timewait::poll_sockets(&self.filters) {
            Ok(socks) => {
                self.tw
                    .on_poll(crate::output::monotonic_ns(), TW_POLL, &socks);
            }
            Err(e) => log::warn!("sock_diag poll of timewait sockets: {e}"),
        }
    }

    fn update_snapshot(
        &mut self,
        ebpf: &Ebpf,
    ) -> anyhow::Result<BTreeMap<(TcpState, Option<String>), Hist>> {
        let hists = read_kernel_hists(ebpf, self.opts.by)?;
        let kernel = KernelCounters::read(ebpf)
            .inspect_err(|e| log::warn!("reading kernel counters: {e}"))
            .ok();
        let mut snap = self
            .snapshot
            .lock()
            .map_err(|_| anyhow::anyhow!("metrics lock poisoned"))?;
        snap.by = by_key(self.opts.by);
        snap.dwell = hists
            .iter()
            .map(|((s, g), h)| (s.name().to_owned(), g.clone(), h.clone()))
            .collect();
        snap.dwell
            .push(("TIME_WAIT".to_owned(), None, self.tw.time_wait.clone()));
        snap.dwell.push((
            "FIN_WAIT2_ORPHAN".to_owned(),
            None,
            self.tw.fin_wait2_orphan.clone(),
        ));
        snap.transitions = read_transitions(ebpf)?
            .into_iter()
            .map(|(o, n, c)| (o.name(), n.name(), c))
            .collect();
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
        if let Some(k) = kernel {
            snap.close_wait = k.close_wait;
            snap.ringbuf_full = k.get(tcptrace_common::Counter::RingbufFull);
            snap.evictions = k.evictions();
        }
        Ok(hists)
    }

    fn report(
        &mut self,
        ebpf: &Ebpf,
        out: &mut StdoutSink,
        final_report: bool,
    ) -> anyhow::Result<()> {
        let hists = self.update_snapshot(ebpf)?;
        let when = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let overflow = timewait_overflow()
            .zip(self.overflow_at_start)
            .map(|(a, b)| a.saturating_sub(b));
        let predicted = self.tw.predicted();
        let pmin = predicted.iter().map(|p| p.1).min();
        let pmax = predicted.iter().map(|p| p.1).max();
        let by = by_key(self.opts.by);
        let mut buf = BytesMut::new();
        if self.json {
            for ((state, group), h) in &hists {
                push_json(
                    &mut buf,
                    &JsonHist::new(state.name(), by, group.as_deref(), h),
                )?;
            }
            push_json(
                &mut buf,
                &JsonHist::new("TIME_WAIT", None, None, &self.tw.time_wait),
            )?;
            push_json(
                &mut buf,
                &JsonHist::new("FIN_WAIT2_ORPHAN", None, None, &self.tw.fin_wait2_orphan),
            )?;
            push_json(
                &mut buf,
                &serde_json::json!({
                    "type": "timewait",
                    "report": if final_report { "final" } else { "interval" },
                    "time": when,
                    "entered": self.tw.entered,
                    "live_time_wait": self.tw.population_time_wait,
                    "live_fin_wait2_orphans": self.tw.population_fin_wait2,
                    "expired": self.tw.expired,
                    "killed_early": self.tw.killed_early,
                    "overflow": overflow,
                    "predicted_dwell_ns": {
                        "count": predicted.len(),
                        "min": pmin.map(|d| d.as_nanos()),
                        "max": pmax.map(|d| d.as_nanos()),
                    },
                    "poll_interval_ns": TW_POLL.as_nanos(),
                }),
            )?;
        } else {
            use std::fmt::Write as _;
            let mut t = String::new();
            let _ = writeln!(
                t,
                "{}Dwell histograms at {when}, since start{}",
                if final_report { "Final: " } else { "" },
                by.map(|b| format!(", by {b}")).unwrap_or_default()
            );
            for ((state, group), h) in &hists {
                let title = match group {
                    Some(g) => format!("{} [{}={g}]", state.name(), by.unwrap_or("group")),
                    None => state.name().to_owned(),
                };
                t.push_str(&histogram::render(&title, h));
            }
            t.push_str(&histogram::render(
                "FIN_WAIT2 (orphan, timewait socket)",
                &self.tw.fin_wait2_orphan,
            ));
            t.push_str(&histogram::render(
                "TIME_WAIT (completed)",
                &self.tw.time_wait,
            ));
            let _ = writeln!(
                t,
                "TIME_WAIT now: {} sockets (+{} orphaned FIN_WAIT2); entered {}, expired {}, killed early {} \
                 (port reuse or RST){}",
                self.tw.population_time_wait,
                self.tw.population_fin_wait2,
                self.tw.entered,
                self.tw.expired,
                self.tw.killed_early,
                overflow
                    .map(|o| format!(", tcp_max_tw_buckets overflow {o}"))
                    .unwrap_or_default()
            );
            if let (Some(a), Some(b)) = (pmin, pmax) {
                let _ = writeln!(
                    t,
                    "  live TIME_WAIT predicted dwell (kernel timer): {} .. {}",
                    humantime::format_duration(a),
                    humantime::format_duration(b)
                );
            }
            let _ = writeln!(t, "  {}\n", histogram::RESOLUTION);
            buf.extend_from_slice(t.as_bytes());
        }
        out.write(&mut buf)?;
        Ok(())
    }
}

fn push_json<T: serde::Serialize>(buf: &mut BytesMut, v: &T) -> anyhow::Result<()> {
    buf.extend_from_slice(&serde_json::to_vec(v)?);
    buf.extend_from_slice(b"\n");
    Ok(())
}

/// Run hist mode on a loaded tracer.
pub async fn run(cli: &Cli, tracer: Tracer, opts: HistOptions) -> anyhow::Result<End> {
    let Tracer {
        mut ebpf,
        reasons,
        mut logger,
        config: filters,
        ..
    } = tracer;
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    if let Some(addr) = cli.prometheus {
        metrics::serve(addr, Arc::clone(&snapshot)).await?;
        eprintln!("tcptrace: serving Prometheus metrics on http://{addr}/metrics");
    }
    let mut ring = crate::stream::take_ring(&mut ebpf)?;
    let mut state = State {
        opts,
        json: cli.json,
        filters,
        tw: Tracker::from_polls(
            crate::sysctl::Sysctls::read(std::path::Path::new(crate::sysctl::ROOT))
                .fin_timeout_s
                .inspect_err(|e| log::warn!("orphan FIN_WAIT2 dwell not timed: {e}"))
                .ok()
                .map(|s| Duration::from_secs(u64::from(s))),
        ),
        resets: BTreeMap::new(),
        reasons,
        overflow_at_start: timewait_overflow(),
        snapshot,
        undecodable: 0,
    };
    let mut out = StdoutSink::default();
    let mut stop = Stop::new(cli.duration)?;
    let mut poll = timer(Duration::ZERO, TW_POLL);
    let mut report = timer(opts.interval, opts.interval);
    eprintln!(
        "{READY} TCP state dwell times: histograms every {} (Ctrl-C for the final one)",
        humantime::format_duration(opts.interval)
    );
    let end = loop {
        tokio::select! {
            r = drain_when_woken(&mut ring, |r| state.drain(r)) => r?,
            _ = poll.tick() => {
                state.drain(ring.get_mut());
                state.poll_timewait();
                // Only a scrape needs fresher figures than the next report;
                // the refresh reads every kernel map, the socket map included.
                if cli.prometheus.is_some() {
                    state.update_snapshot(&ebpf)?;
                }
                if let Some(l) = logger.as_mut() {
                    l.flush();
                }
            }
            _ = report.tick() => state.report(&ebpf, &mut out, false)?,
            () = stop.wait() => break End::Stopped,
        }
        if out.closed() {
            break End::BrokenPipe;
        }
    };
    state.drain(ring.get_mut());
    state.poll_timewait();
    if end == End::Stopped {
        state.report(&ebpf, &mut out, true)?;
        match KernelCounters::read(&ebpf) {
            Ok(k) => eprintln!("{}", k.socket_map_line()),
            Err(e) => log::warn!("reading kernel counters: {e}"),
        }
        eprintln!(
            "{}",
            crate::stats::costs_line(&crate::stats::program_costs(&ebpf))
        );
    }
    Ok(if out.closed() { End::BrokenPipe } else { end })
}
