//! Gathering one leak report's sockets: the kernel's socket details past
//! `--min-age`, joined with sock_diag's view of the namespace (Recv-Q,
//! inodes, sockets older than tcptrace), owners the kernel never saw found
//! by inode, and stacks symbolized once per code path.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use aya::Ebpf;
use tcptrace_common::{AF_INET, AF_INET6, Addrs, OwnerSource, StackRef, TcpState};

use crate::{
    analyses::Cx,
    host::{procs, symbolize::Symbols},
    kernel::{
        clock::monotonic_ns,
        maps::{self, StackMaps, StackMarks},
    },
    model::{
        closewait::{Grouper, LeakClass, LeakSocket},
        filter::{Filter, PortFilter},
        netns::Netns,
        socket::{Tuple, canonical_tuple},
        stack::Stack,
    },
};

fn tuple(a: &Addrs) -> Option<Tuple> {
    let ip = |b: &[u8; 16]| match a.family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    };
    Some((ip(&a.saddr)?, a.sport, ip(&a.daddr)?, a.dport))
}

/// What sock_diag says about one CLOSE_WAIT socket of the namespace. A
/// report keeps one per socket, sorted by tuple for lookups: a sorted `Vec`
/// is half the size of a hash map.
struct Diag {
    /// The namespace whose sock_diag socket found it; None when namespaces
    /// are not followed.
    netns: Option<Netns>,
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

/// Group `s` unless the userspace filters (pid, comm) drop it.
fn add(filter: &Filter, grouper: &mut Grouper, s: LeakSocket) {
    let keep = (filter.pids.is_empty() || s.pid.is_some_and(|p| filter.pids.contains(&p)))
        && filter
            .comm
            .as_ref()
            .is_none_or(|c| s.comm.as_ref() == Some(c));
    if keep {
        grouper.add(s);
    }
}

/// What a report is gathered with, kept between reports.
pub(super) struct Collector {
    pub min_age: Duration,
    pub filter: Filter,
    /// The kernel's family and port filters, for sockets sock_diag finds.
    pub ports: PortFilter,
    pub start_ns: u64,
    /// Inodes of sockets already in CLOSE_WAIT when tcptrace started.
    pub seeded: HashSet<u32>,
    /// The namespaces a report asks sock_diag about: each dump walks the
    /// kernel's whole TCP hash table (the namespaces share it), so only
    /// tcptrace's own, those with sockets seeded at start-up, and those
    /// where the last report's kernel map had CLOSE_WAIT sockets.
    pub busy: BTreeSet<Option<Netns>>,
    /// The namespaces of the seeded sockets.
    pub seeded_in: BTreeSet<Option<Netns>>,
    pub symbols: Symbols,
    /// The stacks every socket in the kernel map refers to, marked as the
    /// report reads the map, for the stack recycler.
    pub marks: StackMarks,
}

/// The CLOSE_WAIT sockets of namespaces `of` from each one's own
/// sock_diag socket, sorted by (namespace, tuple): tuples repeat across
/// namespaces.
fn diag_sockets(cx: &mut Cx<'_>, of: impl IntoIterator<Item = Option<Netns>>) -> Vec<Diag> {
    let mut diag = Vec::new();
    for ns in of {
        let dumped = cx.diag(ns, |s| {
            s.dump_with(&[TcpState::CloseWait], |d| {
                diag.push(Diag {
                    netns: ns,
                    tuple: canonical_tuple((d.local, d.lport, d.remote, d.rport)),
                    inode: d.inode,
                    recv_queue: d.recv_queue,
                    ipv6: d.local.is_ipv6(),
                    in_kernel: false,
                });
            })
        });
        match dumped {
            Err(e) if e.vanished() => log::debug!("sock_diag: {e}"),
            Err(e) => log::warn!("sock_diag: {e}"),
            Ok(()) => {}
        }
    }
    diag.sort_unstable_by_key(|d| (d.netns, d.tuple));
    diag
}

/// The inodes of the CLOSE_WAIT sockets of every traced namespace (socket
/// inodes are unique on the host), for the sockets already leaking when
/// tcptrace starts, and the namespaces they are in.
pub(super) fn seed(cx: &mut Cx<'_>) -> (HashSet<u32>, BTreeSet<Option<Netns>>) {
    let traced = cx.traced();
    let found = diag_sockets(cx, traced);
    let namespaces = found.iter().map(|d| d.netns).collect();
    let inodes = found
        .into_iter()
        .filter(|d| d.inode != 0)
        .map(|d| d.inode)
        .collect();
    (inodes, namespaces)
}

impl Collector {
    /// Group the sockets to report now, one at a time: the kernel map's
    /// CLOSE_WAIT sockets past `min_age`, and those sock_diag found at
    /// start-up that the map never saw.
    pub fn collect(&mut self, cx: &mut Cx<'_>) -> anyhow::Result<Grouper> {
        let now = monotonic_ns();
        let min_age_ns = u64::try_from(self.min_age.as_nanos()).unwrap_or(u64::MAX);
        // Recv-Q and inodes of the namespaces' sockets first, so that each
        // kernel socket is joined to them as it is read.
        let own = cx.own();
        let traced = cx.traced();
        let asked: Vec<Option<Netns>> = traced
            .into_iter()
            .filter(|ns| *ns == own || self.busy.contains(ns))
            .collect();
        let mut diag = diag_sockets(cx, asked);
        let ebpf = cx.ebpf;
        let mut stacks = StackCache {
            maps: StackMaps::new(ebpf)?,
            cache: HashMap::new(),
        };
        self.symbols.clear();
        let mut grouper = Grouper::default();
        let unowned = self.kernel_sockets(
            ebpf,
            (now, min_age_ns, own),
            &mut diag,
            &mut stacks,
            &mut grouper,
        )?;

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
                        && self.ports.accepts(family, d.tuple.1, d.tuple.3)
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
                netns: d.netns,
                cgroup_id: None,
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
            add(&self.filter, &mut grouper, s);
        }
        for i in seeded {
            if let Some(d) = diag.get(i) {
                let s = LeakSocket {
                    age_lower_bound: true,
                    ..from_diag(d, Duration::from_nanos(observed_ns))
                };
                add(&self.filter, &mut grouper, s);
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
        (now, min_age_ns, own): (u64, u64, Option<Netns>),
        diag: &mut [Diag],
        stacks: &mut StackCache<'_>,
        grouper: &mut Grouper,
    ) -> anyhow::Result<Vec<Unowned>> {
        let mut unowned = Vec::new();
        let Collector {
            filter,
            symbols,
            marks,
            busy,
            seeded_in,
            ..
        } = self;
        marks.clear();
        busy.clone_from(seeded_in);
        maps::each_sock_details(ebpf, |info| {
            marks.mark(info);
            if info.state != TcpState::CloseWait as u32 || info.entered_ns == 0 {
                return;
            }
            busy.insert(own.map(|own| {
                if info.netns == 0 {
                    own
                } else {
                    Netns(info.netns)
                }
            }));
            let age_ns = now.saturating_sub(info.entered_ns);
            if age_ns < min_age_ns {
                return;
            }
            let Some(t) = tuple(&info.addrs) else {
                return;
            };
            let t = canonical_tuple(t);
            // Namespaces followed: the socket's (0, unknown, is taken as
            // tcptrace's own); else every socket is in the one namespace.
            let netns = own.map(|own| {
                if info.netns == 0 {
                    own
                } else {
                    Netns(info.netns)
                }
            });
            let at = diag
                .binary_search_by(|d| (d.netns, d.tuple).cmp(&(netns, t)))
                .ok();
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
                return;
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
                eof_stack: stacks.get(symbols, &info.eof_stack),
                first_stack: stacks.get(symbols, &info.first_stack),
                netns,
                cgroup_id: (known && info.cgroup != 0).then_some(info.cgroup),
            };
            add(filter, grouper, s);
        })?;
        Ok(unowned)
    }
}
