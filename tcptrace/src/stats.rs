//! Event and loss accounting: the kernel's per-CPU counters, the socket map's
//! occupancy, and userspace's own counts, summarised at exit.

use std::{
    fmt,
    num::NonZeroUsize,
    os::fd::{AsFd as _, AsRawFd as _},
};

use crate::cpulog::ArrayMapping;
use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use tcptrace_common::{
    Counter, LeanSock, NUM_COUNTERS, SockInfo, TcpState,
    config::{SET_STATE_GENERIC, SET_STATE_VARIANTS},
    table::{self, LeanBucket},
};

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub values: [u64; NUM_COUNTERS as usize],
    /// Entries in the socket map when read.
    pub live_sockets: u64,
    /// Of those, sockets in CLOSE_WAIT.
    pub close_wait: u64,
    /// The socket map's size (`--max-sockets`); 0 if unknown.
    pub capacity: u32,
    /// The socket map's kernel memory (`memlock` in its fdinfo), if readable.
    pub memlock_bytes: Option<u64>,
}

/// `memlock:` of a map, from `/proc/self/fdinfo/<fd>`: the kernel memory
/// the map holds (preallocated for hash maps, whether entries are used or not).
#[must_use]
pub fn map_memlock(map: &MapData) -> Option<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    parse_memlock(&info)
}

/// The `memlock:` field of a map's fdinfo.
#[must_use]
pub fn parse_memlock(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Entries of a socket map, and how many are in CLOSE_WAIT. An entry can
/// vanish between key and value reads: it is skipped.
fn count_states<V: aya::Pod>(
    map: &HashMap<&aya::maps::MapData, u64, V>,
    state: impl Fn(&V) -> u32,
) -> (u64, u64) {
    let (mut live, mut close_wait) = (0, 0);
    for (_, v) in map.iter().flatten() {
        live += 1;
        if state(&v) == TcpState::CloseWait as u32 {
            close_wait += 1;
        }
    }
    (live, close_wait)
}

/// Live sockets and those in CLOSE_WAIT in the lean table (`LEAN_TABLE`,
/// `buckets` buckets), read through a read-only shared mapping of the array:
/// one pass over memory instead of a system call per slot. The kernel keeps
/// writing it; each bucket is copied with a volatile read, and a slot caught
/// mid-write fails its seal and is not counted.
fn count_table(data: &MapData, buckets: u32) -> Result<(u64, u64), MapError> {
    let n = usize::try_from(buckets).unwrap_or(0);
    let Some(len) = NonZeroUsize::new(n * size_of::<LeanBucket>()) else {
        return Ok((0, 0));
    };
    let table = ArrayMapping::new(data, len).map_err(|e| SyscallError {
        call: "mmap",
        io_error: std::io::Error::from(e),
    })?;
    let base = table.base::<LeanBucket>();
    let (mut live, mut close_wait) = (0, 0);
    for i in 0..n {
        // SAFETY: bucket i < n lies within the mapping, page-aligned and so
        // aligned for LeanBucket, whose every bit pattern is valid.
        let b = unsafe { base.add(i).read_volatile() };
        let (l, c) = table::count_states(std::slice::from_ref(&b));
        live += l;
        close_wait += c;
    }
    Ok((live, close_wait))
}

impl KernelCounters {
    /// Read the `COUNTERS` array and count the `SOCKS` map's entries.
    ///
    /// Sockets come and go during the count. Inserts are read before it and
    /// deletes after it, so that [`Self::evictions`] never counts a socket
    /// destroyed mid-read as evicted: every entry inserted before the count
    /// is then live in it, deleted, or really evicted.
    pub fn read(ebpf: &Ebpf) -> Result<Self, MapError> {
        let mut out = Self::default();
        let counters = ebpf
            .map("COUNTERS")
            .map(PerCpuArray::<_, u64>::try_from)
            .transpose()?;
        let sum = |arr: &PerCpuArray<_, u64>, i: usize| -> Result<u64, MapError> {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            Ok(arr.get(&i, 0)?.iter().sum())
        };
        if let Some(arr) = &counters {
            for (i, slot) in out.values.iter_mut().enumerate() {
                *slot = sum(arr, i)?;
            }
        }
        // The full socket map, and the lean store (table and map): the one
        // not in use (see loader::SocketStore) is empty and a few dozen
        // entries large. With the lean store in use (a table of more than
        // one bucket), `SOCKS` holds details of some of its sockets (leak
        // mode): counted in memory, not in sockets.
        let lean = ebpf
            .map("LEAN_TABLE")
            .and_then(|m| match m {
                Map::Array(data) => data.info().ok(),
                _ => None,
            })
            .is_some_and(|i| i.max_entries() > 1);
        let (mut full_capacity, mut lean_capacity) = (0, 0);
        for name in ["SOCKS", "LEAN", "LEAN_TABLE"] {
            let Some(map) = ebpf.map(name) else { continue };
            let (Map::LruHashMap(data) | Map::HashMap(data) | Map::Array(data)) = map else {
                continue;
            };
            let entries = data.info().map_or(0, |i| i.max_entries());
            if let Some(b) = map_memlock(data) {
                out.memlock_bytes = Some(out.memlock_bytes.unwrap_or(0) + b);
            }
            let (live, close_wait) = match name {
                "SOCKS" if lean => (0, 0),
                "SOCKS" => {
                    full_capacity = entries;
                    count_states(&HashMap::<_, u64, SockInfo>::try_from(map)?, |e| e.state)
                }
                "LEAN" => {
                    lean_capacity += entries;
                    count_states(&HashMap::<_, u64, LeanSock>::try_from(map)?, |e| e.state)
                }
                _ => {
                    lean_capacity += entries.saturating_mul(table::SLOTS_U32);
                    count_table(data, entries)?
                }
            };
            out.live_sockets += live;
            out.close_wait += close_wait;
        }
        out.capacity = full_capacity.max(lean_capacity);
        if let Some(arr) = &counters {
            let deletes = Counter::SockDeletes as usize;
            out.values[deletes] = sum(arr, deletes)?;
        }
        Ok(out)
    }

    /// The socket map's occupancy, for the exit summary of every mode:
    /// `tcptrace: socket map: 200004 of 262144 entries in use (100000 in
    /// CLOSE_WAIT), 0 evicted, 49.2 MiB of kernel memory (--max-sockets)`.
    #[must_use]
    pub fn socket_map_line(&self) -> String {
        let memory = self.memlock_bytes.map_or_else(String::new, |b| {
            #[expect(clippy::cast_precision_loss, reason = "MiB for people")]
            let mib = b as f64 / f64::from(1u32 << 20);
            format!(", {mib:.1} MiB of kernel memory")
        });
        format!(
            "tcptrace: socket map: {} of {} entries in use ({} in CLOSE_WAIT), {} evicted{memory} (--max-sockets)",
            self.live_sockets,
            self.capacity,
            self.close_wait,
            self.evictions(),
        )
    }

    #[must_use]
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// Entries the LRU map dropped to make room: every insert is either still
    /// live, removed when its socket was destroyed, or evicted.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.get(Counter::SockInserts)
            .saturating_sub(self.get(Counter::SockDeletes))
            .saturating_sub(self.live_sockets)
    }
}

/// Kernel time spent in one of tcptrace's programs, from the kernel's BPF
/// statistics (`sysctl kernel.bpf_stats_enabled=1`; zero counts without it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramCost {
    pub name: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

impl ProgramCost {
    /// Mean nanoseconds per invocation, if it ran.
    #[must_use]
    pub fn ns_per_call(&self) -> Option<u64> {
        self.run_time_ns.checked_div(self.run_count)
    }
}

/// The run counts and run times of every loaded program.
#[must_use]
pub fn program_costs(ebpf: &Ebpf) -> Vec<ProgramCost> {
    ebpf.programs()
        .filter_map(|(name, p)| {
            let info = p.info().ok()?;
            // A mode's variant of inet_sock_set_state goes by the
            // tracepoint's name, as in the benchmarks.
            let name = if SET_STATE_VARIANTS.iter().any(|&(v, _)| v == name) {
                SET_STATE_GENERIC
            } else {
                name
            };
            Some(ProgramCost {
                name: name.to_owned(),
                run_count: info.run_count(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            })
        })
        .collect()
}

/// One summary line of kernel costs, or a hint to enable the statistics.
#[must_use]
pub fn costs_line(costs: &[ProgramCost]) -> String {
    let ran: Vec<String> = costs
        .iter()
        .filter_map(|c| {
            c.ns_per_call()
                .map(|ns| format!("{} {ns} ns x {}", c.name, c.run_count))
        })
        .collect();
    if ran.is_empty() {
        "tcptrace: kernel cost per call: not measured (sysctl kernel.bpf_stats_enabled=1 to see it)"
            .to_owned()
    } else {
        format!("tcptrace: kernel cost per call: {}", ran.join(", "))
    }
}

/// Userspace-side counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCounters {
    pub records: u64,
    pub state_events: u64,
    pub reset_events: u64,
    pub printed: u64,
    pub filtered: u64,
    pub decode_errors: u64,
}

/// The end-of-run summary printed on stderr.
pub struct Summary {
    pub kernel: Option<KernelCounters>,
    pub user: UserCounters,
    pub costs: Vec<ProgramCost>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.user;
        writeln!(
            f,
            "tcptrace: {} events ({} state, {} reset), {} printed, {} filtered out, {} undecodable",
            u.records, u.state_events, u.reset_events, u.printed, u.filtered, u.decode_errors
        )?;
        match &self.kernel {
            Some(k) => write!(
                f,
                "tcptrace: losses: {} ring-buffer full, {} socket-map evictions, {} insert failures, \
                 {} field-read errors; {} transitions of sockets older than the tracer or evicted",
                k.get(Counter::RingbufFull),
                k.evictions(),
                k.get(Counter::SockInsertErrors),
                k.get(Counter::ReadErrors),
                k.get(Counter::SockUnknown),
            ),
            None => write!(f, "tcptrace: kernel counters unavailable"),
        }?;
        if let Some(k) = &self.kernel {
            write!(f, "\n{}", k.socket_map_line())?;
        }
        write!(f, "\n{}", costs_line(&self.costs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_inserts_not_deleted_and_not_live() {
        let mut k = KernelCounters::default();
        k.values[Counter::SockInserts as usize] = 100;
        k.values[Counter::SockDeletes as usize] = 60;
        k.live_sockets = 30;
        assert_eq!(k.evictions(), 10);
        k.live_sockets = 50; // racing reads never underflow
        assert_eq!(k.evictions(), 0);
    }

    #[test]
    fn socket_map_line_says_occupancy_evictions_and_memory() {
        let mut k = KernelCounters {
            live_sockets: 200_004,
            close_wait: 100_000,
            capacity: 262_144,
            memlock_bytes: Some(50 << 20),
            ..KernelCounters::default()
        };
        k.values[Counter::SockInserts as usize] = 200_010;
        k.values[Counter::SockDeletes as usize] = 1;
        assert_eq!(
            k.socket_map_line(),
            "tcptrace: socket map: 200004 of 262144 entries in use (100000 in CLOSE_WAIT), \
             5 evicted, 50.0 MiB of kernel memory (--max-sockets)"
        );
        k.memlock_bytes = None;
        assert!(k.socket_map_line().contains("5 evicted (--max-sockets)"));
    }

    #[test]
    fn memlock_from_fdinfo() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t9\n\
                    key_size:\t8\nvalue_size:\t120\nmax_entries:\t65536\nmap_flags:\t0x0\n\
                    map_extra:\t0x0\nmemlock:\t12345678\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(parse_memlock(info), Some(12_345_678));
        assert_eq!(parse_memlock("map_type:\t9\n"), None);
    }

    #[test]
    fn summary_names_every_loss() {
        let mut k = KernelCounters::default();
        k.values[Counter::RingbufFull as usize] = 3;
        let s = Summary {
            kernel: Some(k),
            user: UserCounters {
                records: 5,
                ..UserCounters::default()
            },
            costs: vec![ProgramCost {
                name: "sock_recv_length".into(),
                run_count: 4,
                run_time_ns: 100,
            }],
        }
        .to_string();
        assert!(s.contains("5 events"), "{s}");
        assert!(s.contains("3 ring-buffer full"), "{s}");
        assert!(s.contains("evictions"), "{s}");
        assert!(s.contains("sock_recv_length 25 ns x 4"), "{s}");
        assert!(s.contains("tcptrace: socket map: 0 of 0 entries"), "{s}");
        let off = costs_line(&[ProgramCost {
            name: "x".into(),
            run_count: 0,
            run_time_ns: 0,
        }]);
        assert!(off.contains("bpf_stats_enabled=1"), "{off}");
    }
}
