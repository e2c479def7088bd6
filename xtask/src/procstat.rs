//! What `/proc` and the kernel say about one running process: its CPU time,
//! peak RSS, the run time of the BPF programs it holds and the memory of its
//! socket maps. The bench's stages read their tracer's cost through these.

use std::{collections::BTreeMap, fs};

/// user+sys ticks of a process.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second, for [`cpu_ticks`].
fn ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100)
}

/// user+sys CPU seconds of a process.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    #[expect(clippy::cast_precision_loss, reason = "seconds of CPU")]
    Some(cpu_ticks(pid)? as f64 / ticks_per_s() as f64)
}

/// `VmHWM` of a process in KiB; 0 if unreadable.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// `VmRSS` of a process in KiB; 0 if unreadable.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status`; 0 if unreadable.
fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// tcptrace's programs; the kernel keeps the first 15 characters of a name.
const PROGRAMS: [&str; 8] = [
    "inet_sock_set_state",
    "tcp_destroy_sock",
    "tcp_send_reset",
    "tcp_receive_reset",
    "sock_recv_length",
    "sock_send_length",
    "sys_exit_bind",
    "sys_exit_connect",
];

/// The BPF programs process `pid` holds, by name. The kernel keeps 15
/// characters of a name; tcptrace's programs, and bpftrace's (named after
/// their tracepoint), are completed from [`PROGRAMS`].
fn programs_of(pid: u32) -> Vec<(String, aya::programs::ProgramInfo)> {
    let mut ids = std::collections::BTreeSet::new();
    if let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for fd in fds.flatten() {
            let Ok(info) = fs::read_to_string(fd.path()) else {
                continue;
            };
            if let Some(id) = info
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                ids.insert(id);
            }
        }
    }
    aya::programs::loaded_programs()
        .flatten()
        .filter(|info| ids.contains(&info.id()))
        .map(|info| {
            let short = info.name_as_str().unwrap_or_default();
            let name = PROGRAMS
                .iter()
                .find(|p| !short.is_empty() && p.starts_with(short))
                .map_or_else(|| format!("prog {short}"), |p| (*p).to_owned());
            (name, info)
        })
        .collect()
}

/// Cumulative kernel run time (ns) and invocations of each BPF program that
/// process `pid` holds, by name.
pub fn program_stats(pid: u32) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (name, info) in programs_of(pid) {
        #[expect(clippy::cast_precision_loss, reason = "ns and counts as f64")]
        let (t, n) = (info.run_time().as_nanos() as f64, info.run_count() as f64);
        let e = out.entry(name).or_default();
        e.0 += t;
        e.1 += n;
    }
    out
}

/// The size of each program that process `pid` holds, in bytes of the
/// bytecode the verifier passed (`xlated_prog_len`), by name: two builds
/// whose programs have the same sizes run the same instructions.
pub fn program_sizes(pid: u32) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for (name, info) in programs_of(pid) {
        *out.entry(name).or_default() += info.size_translated().unwrap_or(0);
    }
    out
}

/// `BPF_MAP_TYPE_LRU_HASH`, the socket map's type in fdinfo.
const LRU_HASH: u32 = 9;

/// Sockets the process's socket store holds and its kernel memory
/// (`memlock`), from `/proc/PID/fdinfo`. The memory is that of both LRU hash
/// maps (`SOCKS` and the lean `LEAN`; the one a mode does not use is sized
/// down to a few entries, and leak mode uses both) and of the lean table (a
/// mappable array of 64-byte buckets of two sockets each). The sockets are
/// the table's slots and `LEAN`'s entries in lean mode, else `SOCKS`'s.
pub fn socket_map_memory(pid: u32) -> Option<(u32, u64)> {
    let mut largest: Option<u32> = None;
    let mut lean_entries = 0;
    let mut memory = 0;
    let mut table: Option<u32> = None;
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        // The tracer opens and closes other fds (netlink sockets, /proc
        // files) while we scan: one gone before its readlink is skipped, not
        // the end of the scan (a leak-mode run once reported no map at all).
        let Ok(link) = fs::read_link(fd.path()) else {
            continue;
        };
        if link.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        match parse_map_fdinfo(&info) {
            Some(SocketMap::Lru {
                entries,
                memlock,
                value_size,
            }) => {
                memory += memlock;
                if value_size == LEAN_VALUE {
                    lean_entries = entries;
                }
                if largest.is_none_or(|l| entries > l) {
                    largest = Some(entries);
                }
            }
            // One bucket: the idle table of a mode that does not use it.
            Some(SocketMap::Table(n, b)) if n > 1 => {
                memory += b;
                table = Some(n * 2);
            }
            _ => {}
        }
    }
    let n = largest?;
    Some((table.map_or(n, |slots| slots + lean_entries), memory))
}

/// Value size of the lean LRU map (`LeanSock`).
const LEAN_VALUE: u64 = 24;

/// A socket map found in fdinfo: `(max_entries or slots, memlock)`.
#[derive(Debug, PartialEq, Eq)]
enum SocketMap {
    /// An LRU hash map.
    Lru {
        entries: u32,
        memlock: u64,
        value_size: u64,
    },
    /// The lean table: buckets of two sockets.
    Table(u32, u64),
}

/// An LRU hash map or the lean table in a map's fdinfo; `None` for others.
fn parse_map_fdinfo(info: &str) -> Option<SocketMap> {
    /// `BPF_MAP_TYPE_ARRAY` and `BPF_F_MMAPABLE`.
    const ARRAY: u64 = 2;
    const MMAPABLE: u64 = 0x400;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .and_then(|v| v.parse::<u64>().ok())
    };
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("map_flags:"))
        .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())?;
    let entries = u32::try_from(field("max_entries:")?).ok()?;
    let memlock = field("memlock:")?;
    match field("map_type:")? {
        t if t == u64::from(LRU_HASH) => Some(SocketMap::Lru {
            entries,
            memlock,
            value_size: field("value_size:")?,
        }),
        ARRAY if flags & MMAPABLE != 0 && field("value_size:")? == 64 => {
            Some(SocketMap::Table(entries, memlock))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_socket_maps_in_fdinfo() {
        let lru = "pos:\t0\nflags:\t02000002\nmap_type:\t9\nkey_size:\t8\nvalue_size:\t120\n\
                   max_entries:\t262144\nmap_flags:\t0x0\nmemlock:\t52428800\nmap_id:\t7\n";
        assert_eq!(
            parse_map_fdinfo(lru),
            Some(SocketMap::Lru {
                entries: 262_144,
                memlock: 52_428_800,
                value_size: 120
            })
        );
        let ring = lru.replace("map_type:\t9", "map_type:\t27");
        assert_eq!(parse_map_fdinfo(&ring), None);
        let table = "pos:\t0\nflags:\t02000002\nmap_type:\t2\nkey_size:\t4\nvalue_size:\t64\n\
                     max_entries:\t65536\nmap_flags:\t0x400\nmemlock:\t4202496\nmap_id:\t8\n";
        assert_eq!(
            parse_map_fdinfo(table),
            Some(SocketMap::Table(65_536, 4_202_496))
        );
        let bss = table.replace("value_size:\t64", "value_size:\t4096");
        assert_eq!(parse_map_fdinfo(&bss), None, "another mappable array");
    }
}
