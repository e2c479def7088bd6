//! `--closewait-leaks`: every `--interval`, report the sockets that have sat in
//! CLOSE_WAIT longer than `--min-age`, grouped by owner and code path.
//!
//! No per-transition stream: the kernel's socket map already holds each
//! socket's state, entry time, owner, EOF time and stacks, so a report is a
//! scan of that map. Only CLOSE_WAIT exits are streamed, for the summary of
//! leaks that ended. Sockets older than the tracer come from sock_diag, with
//! owners from a `/proc/<pid>/fd` scan.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap},
};
use bytes::BytesMut;
use tcptrace_common::{
    AF_INET, AF_INET6, Addrs, Config, OwnerSource, SockInfo, StackRef, TcpState,
};

use crate::{
    cli::Cli,
    event::{Event, decode},
    filter::Filter,
    leaks::{self, Group, JsonGroup, LeakClass, LeakSocket, ProcessInfo},
    loader::Tracer,
    output::{StdoutSink, human_duration},
    procs, sockdiag,
    stats::KernelCounters,
    stop::Stop,
    stream::{End, READY, drain_when_woken, timer},
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
    /// Dwell of every CLOSE_WAIT that ended during the run.
    ended: Vec<Duration>,
    /// Sockets that left CLOSE_WAIT after passing `min_age`: leaks that ended.
    ended_leaks: u64,
    undecodable: u64,
}

/// Everything the kernel map says about one CLOSE_WAIT socket.
struct KernelSocket {
    info: SockInfo,
    tuple: Tuple,
    age: Duration,
}

fn stack_of(
    symbols: &mut Symbols,
    stacks: Option<&StackTraceMap<&MapData>>,
    r: &StackRef,
) -> Option<Stack> {
    if !r.is_some() {
        return None;
    }
    let trace = stacks?.get(&(r.id_plus_one - 1), 0).ok()?;
    let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
    Some(symbols.stack(r.tgid, &ips, r.sp_word))
}

/// Sockets the kernel map has seen in CLOSE_WAIT for at least `min_age_ns`.
fn kernel_sockets(ebpf: &Ebpf, now: u64, min_age_ns: u64) -> anyhow::Result<Vec<KernelSocket>> {
    let socks: BpfHashMap<_, u64, SockInfo> =
        BpfHashMap::try_from(ebpf.map("SOCKS").context("no SOCKS map")?)?;
    let mut kernel = Vec::new();
    // An entry can vanish between key and value reads: skip it.
    for (_, info) in socks.iter().flatten() {
        if info.state != TcpState::CloseWait as u32 || info.entered_ns == 0 {
            continue;
        }
        let age_ns = now.saturating_sub(info.entered_ns);
        if age_ns < min_age_ns {
            continue;
        }
        let Some(tuple) = tuple(&info.addrs) else {
            continue;
        };
        kernel.push(KernelSocket {
            info,
            tuple,
            age: Duration::from_nanos(age_ns),
        });
    }
    Ok(kernel)
}

impl State<'_> {
    /// Collect the sockets to report now.
    fn collect(&mut self, ebpf: &Ebpf) -> anyhow::Result<Vec<LeakSocket>> {
        let now = crate::output::monotonic_ns();
        let min_age_ns = u64::try_from(self.opts.min_age.as_nanos()).unwrap_or(u64::MAX);

        let kernel = kernel_sockets(ebpf, now, min_age_ns)?;

        // sock_diag: Recv-Q and inodes for this namespace's sockets, and the
        // CLOSE_WAIT sockets older than the tracer.
        let diag = sockdiag::dump(&[TcpState::CloseWait])
            .inspect_err(|e| log::warn!("sock_diag: {e}"))
            .unwrap_or_default();
        let by_tuple: HashMap<Tuple, &sockdiag::DiagSocket> = diag
            .iter()
            .map(|d| (canonical_tuple((d.local, d.lport, d.remote, d.rport)), d))
            .collect();
        let kernel_tuples: HashSet<Tuple> =
            kernel.iter().map(|k| canonical_tuple(k.tuple)).collect();
        let observed_ns = now.saturating_sub(self.start_ns);
        let seeded: Vec<&sockdiag::DiagSocket> = diag
            .iter()
            .filter(|d| d.inode != 0 && self.seeded.contains(&d.inode))
            .filter(|d| {
                let family = if d.local.is_ipv4() { AF_INET } else { AF_INET6 };
                self.kernel_filters.accepts(family, d.lport, d.rport)
            })
            .filter(|d| {
                !kernel_tuples.contains(&canonical_tuple((d.local, d.lport, d.remote, d.rport)))
            })
            .filter(|_| observed_ns >= min_age_ns)
            .collect();

        // Owners the kernel side never saw: by inode, one /proc scan.
        let mut wanted: HashSet<u64> = seeded.iter().map(|d| u64::from(d.inode)).collect();
        for k in &kernel {
            if k.info.owner_source == OwnerSource::Unknown as u32
                && let Some(d) = by_tuple.get(&canonical_tuple(k.tuple))
                && d.inode != 0
            {
                wanted.insert(u64::from(d.inode));
            }
        }
        let holders = procs::socket_holders(&wanted);

        let stacks_map = ebpf
            .map("STACKS")
            .map(StackTraceMap::try_from)
            .transpose()?;
        self.symbols.clear();
        let mut out = Vec::new();
        for k in kernel {
            let d = by_tuple.get(&canonical_tuple(k.tuple));
            let (pid, comm) = if k.info.owner_source == OwnerSource::Unknown as u32 {
                d.and_then(|d| holders.get(&u64::from(d.inode)))
                    .map_or((None, None), |h| (Some(h.pid), Some(h.comm.clone())))
            } else {
                (
                    Some(k.info.owner.tgid),
                    Some(k.info.owner.comm_lossy().to_string()),
                )
            };
            let recv_queue = d.map(|d| d.recv_queue);
            out.push(LeakSocket {
                pid,
                comm,
                local: k.tuple.0,
                lport: k.tuple.1,
                remote: k.tuple.2,
                rport: k.tuple.3,
                age: k.age,
                age_lower_bound: false,
                class: LeakClass::classify(Some(k.info.eof_ns != 0), recv_queue),
                recv_queue,
                eof_stack: stack_of(&mut self.symbols, stacks_map.as_ref(), &k.info.eof_stack),
                first_stack: stack_of(&mut self.symbols, stacks_map.as_ref(), &k.info.first_stack),
            });
        }
        for d in seeded {
            let h = holders.get(&u64::from(d.inode));
            out.push(LeakSocket {
                pid: h.map(|h| h.pid),
                comm: h.map(|h| h.comm.clone()),
                local: d.local,
                lport: d.lport,
                remote: d.remote,
                rport: d.rport,
                age: Duration::from_nanos(observed_ns),
                age_lower_bound: true,
                class: LeakClass::classify(None, Some(d.recv_queue)),
                recv_queue: Some(d.recv_queue),
                eof_stack: None,
                first_stack: None,
            });
        }
        out.retain(|s| self.keep(s));
        Ok(out)
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
        let sockets = self.collect(ebpf)?;
        let groups: Vec<Group> = leaks::group(sockets, |pid| {
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

    /// Drain CLOSE_WAIT exits from the ring buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(Event::State(s)) if s.old == TcpState::CloseWait => {
                    if let Some(d) = s.dwell {
                        if d >= self.opts.min_age {
                            self.ended_leaks += 1;
                        }
                        self.ended.push(d);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.undecodable += 1;
                    log::warn!("dropping a record: {e}");
                }
            }
        }
    }

    fn summary(&mut self, kernel: Option<&KernelCounters>) -> String {
        self.ended.sort();
        let n = self.ended.len();
        let mut s = format!(
            "tcptrace: {n} CLOSE_WAIT sockets closed during the run, {} of them after leaking longer than {}",
            self.ended_leaks,
            humantime::format_duration(self.opts.min_age)
        );
        if n > 0 {
            let _ = write!(
                s,
                "; CLOSE_WAIT dwell min {}, median {}, max {}",
                human_duration(self.ended[0]),
                human_duration(self.ended[n / 2]),
                human_duration(self.ended[n - 1])
            );
        }
        if let Some(k) = kernel {
            let _ = write!(
                s,
                "\ntcptrace: losses: {} ring-buffer full, {} socket-map evictions, {} stack captures failed, {} undecodable",
                k.get(tcptrace_common::Counter::RingbufFull),
                k.evictions(),
                k.get(tcptrace_common::Counter::StackErrors),
                self.undecodable
            );
            let _ = write!(s, "\n{}", k.socket_map_line());
        }
        s
    }
}

/// Run leak mode on a loaded tracer.
pub async fn run(cli: &Cli, tracer: Tracer, opts: LeakOptions) -> anyhow::Result<End> {
    let Tracer {
        mut ebpf,
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
    let mut ring = crate::stream::take_ring(&mut ebpf)?;

    let filter = Filter::from_cli(cli);
    let mut state = State {
        opts,
        filter: &filter,
        kernel_filters,
        json: cli.json,
        start_ns,
        seeded,
        symbols: Symbols::new(),
        ended: Vec::new(),
        ended_leaks: 0,
        undecodable: 0,
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
            r = drain_when_woken(&mut ring, |r| state.drain(r)) => r?,
            _ = tick.tick() => {
                state.drain(ring.get_mut());
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
    state.drain(ring.get_mut());
    if end == End::Stopped {
        state.report(&ebpf, &mut out, true)?;
        let kernel = KernelCounters::read(&ebpf)
            .inspect_err(|e| log::warn!("reading kernel counters: {e}"))
            .ok();
        eprintln!("{}", state.summary(kernel.as_ref()));
        eprintln!(
            "{}",
            crate::stats::costs_line(&crate::stats::program_costs(&ebpf))
        );
    }
    Ok(if out.closed() { End::BrokenPipe } else { end })
}
