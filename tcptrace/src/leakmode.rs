//! `--closewait-leaks`: every `--interval`, report the sockets that have sat in
//! CLOSE_WAIT longer than `--min-age`, grouped by owner and code path.
//!
//! No record streams: the kernel's socket store already holds each socket's
//! state, entry time, owner, EOF time and stacks, so a report is a scan of
//! it. The summary of CLOSE_WAIT sockets closed during the run (leaks that
//! ended) comes from the kernel's histogram of the CLOSE_WAIT dwell and its
//! count of those past `--min-age`. Sockets older than the tracer come from
//! sock_diag, with owners from a `/proc/<pid>/fd` scan.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, StackTraceMap},
};
use bytes::BytesMut;
use tcptrace_common::{
    AF_INET, AF_INET6, Addrs, Config, OwnerSource, STACK_DEPTH, SockInfo, StackLocation, StackRef,
    TcpState,
};

use crate::{
    cli::Cli,
    filter::Filter,
    leaks::{self, Group, Grouper, JsonGroup, LeakClass, LeakSocket, ProcessInfo},
    loader::Tracer,
    output::{StdoutSink, human_duration},
    procs, sockdiag,
    stats::KernelCounters,
    stop::Stop,
    stream::{End, READY, timer},
    symbolize::{Stack, Symbols},
};

/// Leak-mode settings.
#[derive(Clone, Copy, Debug)]
pub struct LeakOptions {
    pub min_age: Duration,
    pub interval: Duration,
}

use crate::sockdiag::{Tuple, canonical_tuple};

fn tuple(a: &Addrs) -> Option<Tuple> {
    let ip = |b: &[u8; 16]| match a.family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    };
    Some((ip(&a.saddr)?, a.sport, ip(&a.daddr)?, a.dport))
}

/// What the runtime keeps between reports.
struct State<'a> {
    opts: LeakOptions,
    filter: &'a Filter,
    /// The kernel's family and port filters, for sockets sock_diag finds.
    kernel_filters: Config,
    json: bool,
    start_ns: u64,
    /// Inodes of sockets already in CLOSE_WAIT when tcptrace started.
    seeded: HashSet<u32>,
    symbols: Symbols,
}

/// The kernel's two stack maps: `STACKS`, and `STACK_SPILL` for the stacks
/// whose `STACKS` bucket was taken.
struct StackMaps<'a> {
    stacks: Option<StackTraceMap<&'a MapData>>,
    spill: Option<BpfHashMap<&'a MapData, u32, [u64; STACK_DEPTH]>>,
}

impl<'a> StackMaps<'a> {
    fn new(ebpf: &'a Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            stacks: ebpf
                .map("STACKS")
                .map(StackTraceMap::try_from)
                .transpose()?,
            spill: ebpf
                .map("STACK_SPILL")
                .map(BpfHashMap::try_from)
                .transpose()?,
        })
    }

    /// The frames of `r`, innermost first; None if it has none or they are
    /// gone.
    fn frames(&self, r: &StackRef) -> Option<Vec<u64>> {
        match r.location()? {
            StackLocation::Stacks(id) => {
                let trace = self.stacks.as_ref()?.get(&id, 0).ok()?;
                Some(trace.frames().iter().map(|f| f.ip).collect())
            }
            StackLocation::Spill(key) => {
                let words = self.spill.as_ref()?.get(&key, 0).ok()?;
                Some(words.into_iter().take_while(|&ip| ip != 0).collect())
            }
        }
    }
}

/// What sock_diag says about one CLOSE_WAIT socket of the namespace. A
/// report keeps one per socket, sorted by tuple for lookups: a sorted `Vec`
/// is half the size of a hash map.
struct Diag {
    /// Canonical (v4-mapped v6 as v4).
    tuple: Tuple,
    inode: u32,
    recv_queue: u32,
    /// An IPv6 socket (a dual-stack one too, whatever its tuple shows), for
    /// the kernel's family filter.
    ipv6: bool,
    /// The kernel map has the socket too.
    in_kernel: bool,
}

/// A kernel-map socket whose owner the kernel side never saw (accepted,
/// never touched): resolved through its inode after the `/proc` scan.
struct Unowned {
    /// Index into the sorted sock_diag sockets.
    diag: u32,
    age: Duration,
    eof_seen: bool,
    eof_stack: StackRef,
    first_stack: StackRef,
}

/// Symbolized stacks of one report, one per captured stack: the sockets of a
/// leak share a few code paths.
struct StackCache<'a> {
    maps: StackMaps<'a>,
    cache: HashMap<(u32, u32, u64), Option<Arc<Stack>>>,
}

impl StackCache<'_> {
    fn get(&mut self, symbols: &mut Symbols, r: &StackRef) -> Option<Arc<Stack>> {
        if !r.is_some() {
            return None;
        }
        let maps = &self.maps;
        self.cache
            .entry((r.tgid, r.id_plus_one, r.sp_word))
            .or_insert_with(|| {
                let ips = maps.frames(r)?;
                Some(Arc::new(symbols.stack(r.tgid, &ips, r.sp_word)))
            })
            .clone()
    }
}

impl State<'_> {
    /// This namespace's CLOSE_WAIT sockets from sock_diag, sorted by tuple.
    fn diag_sockets() -> Vec<Diag> {
        let mut diag = Vec::new();
        sockdiag::dump_with(&[TcpState::CloseWait], |d| {
            diag.push(Diag {
                tuple: canonical_tuple((d.local, d.lport, d.remote, d.rport)),
                inode: d.inode,
                recv_queue: d.recv_queue,
                ipv6: d.local.is_ipv6(),
                in_kernel: false,
            });
        })
        .inspect_err(|e| log::warn!("sock_diag: {e}"))
        .unwrap_or_default();
        diag.sort_unstable_by_key(|d| d.tuple);
        diag
    }

    /// Group the sockets to report now, one at a time: the kernel map's
    /// CLOSE_WAIT sockets past `min_age`, and those sock_diag found at
    /// start-up that the map never saw.
    fn collect(&mut self, ebpf: &Ebpf) -> anyhow::Result<Grouper> {
        let now = crate::output::monotonic_ns();
        let min_age_ns = u64::try_from(self.opts.min_age.as_nanos()).unwrap_or(u64::MAX);
        // Recv-Q and inodes of this namespace's sockets first, so that each
        // kernel socket is joined to them as it is read.
        let mut diag = Self::diag_sockets();
        let mut stacks = StackCache {
            maps: StackMaps::new(ebpf)?,
            cache: HashMap::new(),
        };
        self.symbols.clear();
        let mut grouper = Grouper::default();
        let unowned =
            self.kernel_sockets(ebpf, now, min_age_ns, &mut diag, &mut stacks, &mut grouper)?;

        // sock_diag's sockets already in CLOSE_WAIT at start-up that the
        // kernel map does not have.
        let observed_ns = now.saturating_sub(self.start_ns);
        let seeded: Vec<usize> = if observed_ns < min_age_ns {
            Vec::new()
        } else {
            diag.iter()
                .enumerate()
                .filter(|(_, d)| {
                    let family = if d.ipv6 { AF_INET6 } else { AF_INET };
                    !d.in_kernel
                        && d.inode != 0
                        && self.seeded.contains(&d.inode)
                        && self.kernel_filters.accepts(family, d.tuple.1, d.tuple.3)
                })
                .map(|(i, _)| i)
                .collect()
        };

        // Owners the kernel side never saw: by inode, one /proc scan.
        let wanted: HashSet<u64> = unowned
            .iter()
            .map(|u| u.diag as usize)
            .chain(seeded.iter().copied())
            .filter_map(|i| diag.get(i))
            .map(|d| u64::from(d.inode))
            .collect();
        let holders = procs::socket_holders(&wanted);
        drop(wanted);
        let from_diag = |d: &Diag, age: Duration| {
            let h = holders.get(&u64::from(d.inode));
            LeakSocket {
                pid: h.map(|h| h.pid),
                comm: h.map(|h| h.comm.to_string()),
                local: d.tuple.0,
                lport: d.tuple.1,
                remote: d.tuple.2,
                rport: d.tuple.3,
                age,
                age_lower_bound: false,
                class: LeakClass::classify(None, Some(d.recv_queue)),
                recv_queue: Some(d.recv_queue),
                eof_stack: None,
                first_stack: None,
            }
        };
        for u in unowned {
            let Some(d) = diag.get(u.diag as usize) else {
                continue;
            };
            let s = LeakSocket {
                class: LeakClass::classify(Some(u.eof_seen), Some(d.recv_queue)),
                eof_stack: stacks.get(&mut self.symbols, &u.eof_stack),
                first_stack: stacks.get(&mut self.symbols, &u.first_stack),
                ..from_diag(d, u.age)
            };
            self.add(&mut grouper, s);
        }
        for i in seeded {
            if let Some(d) = diag.get(i) {
                let s = LeakSocket {
                    age_lower_bound: true,
                    ..from_diag(d, Duration::from_nanos(observed_ns))
                };
                self.add(&mut grouper, s);
            }
        }
        Ok(grouper)
    }

    /// Group the kernel map's CLOSE_WAIT sockets past `min_age_ns` whose
    /// owner is known, marking them in `diag`; return those whose owner is
    /// to be found by inode.
    fn kernel_sockets(
        &mut self,
        ebpf: &Ebpf,
        now: u64,
        min_age_ns: u64,
        diag: &mut [Diag],
        stacks: &mut StackCache<'_>,
        grouper: &mut Grouper,
    ) -> anyhow::Result<Vec<Unowned>> {
        let mut unowned = Vec::new();
        let socks: BpfHashMap<_, u64, SockInfo> =
            BpfHashMap::try_from(ebpf.map("SOCKS").context("no SOCKS map")?)?;
        // An entry can vanish between key and value reads: skip it.
        for (_, info) in socks.iter().flatten() {
            if info.state != TcpState::CloseWait as u32 || info.entered_ns == 0 {
                continue;
            }
            let age_ns = now.saturating_sub(info.entered_ns);
            if age_ns < min_age_ns {
                continue;
            }
            let Some(t) = tuple(&info.addrs) else {
                continue;
            };
            let t = canonical_tuple(t);
            let at = diag.binary_search_by(|d| d.tuple.cmp(&t)).ok();
            let (inode, recv_queue) = match at.and_then(|i| diag.get_mut(i)) {
                Some(d) => {
                    d.in_kernel = true;
                    (d.inode, Some(d.recv_queue))
                }
                None => (0, None),
            };
            let age = Duration::from_nanos(age_ns);
            let eof_seen = info.eof_ns != 0;
            let known = info.owner_source != OwnerSource::Unknown as u32;
            if !known
                && inode != 0
                && let Some(i) = at.and_then(|i| u32::try_from(i).ok())
            {
                unowned.push(Unowned {
                    diag: i,
                    age,
                    eof_seen,
                    eof_stack: info.eof_stack,
                    first_stack: info.first_stack,
                });
                continue;
            }
            let s = LeakSocket {
                pid: known.then_some(info.owner.tgid),
                comm: known.then(|| info.owner.comm_lossy().to_string()),
                local: t.0,
                lport: t.1,
                remote: t.2,
                rport: t.3,
                age,
                age_lower_bound: false,
                class: LeakClass::classify(Some(eof_seen), recv_queue),
                recv_queue,
                eof_stack: stacks.get(&mut self.symbols, &info.eof_stack),
                first_stack: stacks.get(&mut self.symbols, &info.first_stack),
            };
            self.add(grouper, s);
        }
        Ok(unowned)
    }

    /// Group `s` unless the userspace filters (pid, comm) drop it.
    fn add(&self, grouper: &mut Grouper, s: LeakSocket) {
        if self.keep(&s) {
            grouper.add(s);
        }
    }

    /// The userspace filters (pid, comm) applied to a leak.
    fn keep(&self, s: &LeakSocket) -> bool {
        let f = self.filter;
        (f.pids.is_empty() || s.pid.is_some_and(|p| f.pids.contains(&p)))
            && f.comm.as_ref().is_none_or(|c| s.comm.as_ref() == Some(c))
    }

    fn report(
        &mut self,
        ebpf: &Ebpf,
        out: &mut StdoutSink,
        final_report: bool,
    ) -> anyhow::Result<()> {
        let groups: Vec<Group> = self.collect(ebpf)?.finish(|pid| {
            let i = procs::info(pid);
            ProcessInfo {
                cmdline: i.cmdline,
                cgroup: i.cgroup,
                container_id: i.container_id,
            }
        });
        let when = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let mut buf = BytesMut::new();
        if self.json {
            for g in &groups {
                let line = serde_json::to_vec(&JsonGroup {
                    kind: "closewait_leak",
                    report_time: &when,
                    report: if final_report { "final" } else { "interval" },
                    min_age_s: self.opts.min_age.as_secs_f64(),
                    group: g,
                })?;
                buf.extend_from_slice(&line);
                buf.extend_from_slice(b"\n");
            }
        } else {
            buf.extend_from_slice(
                leaks::render_text(&groups, &when, self.opts.min_age, final_report).as_bytes(),
            );
            buf.extend_from_slice(b"\n");
        }
        out.write(&mut buf)?;
        Ok(())
    }

    /// The exit summary: CLOSE_WAIT sockets closed during the run, from the
    /// kernel's histogram of the CLOSE_WAIT dwell (count, exact minimum and
    /// maximum, the median at its bucket's midpoint) and its count of those
    /// past `--min-age`; then losses and the socket store.
    fn summary(&self, ebpf: &Ebpf, kernel: Option<&KernelCounters>) -> String {
        let row = crate::histmode::read_state_row(ebpf, TcpState::CloseWait)
            .inspect_err(|e| log::warn!("reading the CLOSE_WAIT dwell histogram: {e}"))
            .ok()
            .flatten();
        let n = row.as_ref().map_or(0, |(h, _)| h.count());
        let ended_leaks = kernel.map_or(0, |k| k.get(tcptrace_common::Counter::LongDwells));
        let mut s = format!(
            "tcptrace: {n} CLOSE_WAIT sockets closed during the run, {ended_leaks} of them after leaking longer than {}",
            humantime::format_duration(self.opts.min_age)
        );
        if let Some((h, min)) = row {
            let _ = write!(
                s,
                "; CLOSE_WAIT dwell min {}, median {}, max {}",
                human_duration(Duration::from_nanos(min)),
                human_duration(Duration::from_nanos(h.percentile(0.5).unwrap_or(h.max_ns))),
                human_duration(Duration::from_nanos(h.max_ns))
            );
        }
        if let Some(k) = kernel {
            let _ = write!(
                s,
                "\ntcptrace: losses: {} socket-map evictions, {} stack captures failed",
                k.evictions(),
                k.get(tcptrace_common::Counter::StackErrors),
            );
            let _ = write!(s, "\n{}", k.socket_map_line());
        }
        s
    }
}

/// Run leak mode on a loaded tracer.
pub async fn run(cli: &Cli, tracer: Tracer, opts: LeakOptions) -> anyhow::Result<End> {
    let Tracer {
        ebpf,
        mut logger,
        config: kernel_filters,
        ..
    } = tracer;
    let start_ns = crate::output::monotonic_ns();
    let seeded = sockdiag::dump(&[TcpState::CloseWait])
        .inspect_err(|e| {
            log::warn!("sock_diag at start-up (sockets older than tcptrace will be missed): {e}");
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.inode != 0)
        .map(|d| d.inode)
        .collect();

    let filter = Filter::from_cli(cli);
    let mut state = State {
        opts,
        filter: &filter,
        kernel_filters,
        json: cli.json,
        start_ns,
        seeded,
        symbols: Symbols::new(),
    };
    let mut out = StdoutSink::default();
    let mut stop = Stop::new(cli.duration)?;
    let mut tick = timer(opts.interval, opts.interval);
    eprintln!(
        "{READY} CLOSE_WAIT leaks: reporting sockets older than {} every {} (Ctrl-C for the final report)",
        humantime::format_duration(opts.min_age),
        humantime::format_duration(opts.interval)
    );

    let end = loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(l) = logger.as_mut() {
                    l.flush();
                }
                state.report(&ebpf, &mut out, false)?;
            }
            () = stop.wait() => break End::Stopped,
        }
        if out.closed() {
            break End::BrokenPipe;
        }
    };
    if end == End::Stopped {
        state.report(&ebpf, &mut out, true)?;
        let kernel = KernelCounters::read(&ebpf)
            .inspect_err(|e| log::warn!("reading kernel counters: {e}"))
            .ok();
        eprintln!("{}", state.summary(&ebpf, kernel.as_ref()));
        eprintln!(
            "{}",
            crate::stats::costs_line(&crate::stats::program_costs(&ebpf))
        );
    }
    Ok(if out.closed() { End::BrokenPipe } else { end })
}
