//! Reading the kernel side's counters: the per-CPU event and loss counters,
//! the socket store's occupancy and memory, and each program's run time and
//! skipped runs.

use std::{
    num::NonZeroUsize,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
    programs::ProgramFd,
    sys::SyscallError,
};
use tcptrace_common::{
    Counter, LeanSock, SockInfo, TcpState,
    config::{SET_STATE_GENERIC, SET_STATE_VARIANTS},
    table::{self, LeanBucket},
};

use crate::{
    kernel::{cpulog::ArrayMapping, maps::names},
    model::counters::{KernelCounters, ProgramCost, sum_known},
};

/// `/proc/self/fdinfo/<fd>`: what the kernel says of a BPF object.
fn fdinfo(fd: BorrowedFd<'_>) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()
}

/// A numeric field of an fdinfo, `key` with its colon (`memlock:`).
fn fdinfo_field(fdinfo: &str, key: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// `memlock:` of a map, from its fdinfo: the kernel memory the map holds
/// (preallocated for hash maps, whether entries are used or not).
#[must_use]
pub fn map_memlock(map: &MapData) -> Option<u64> {
    parse_memlock(&fdinfo(map.fd().as_fd())?)
}

/// The `memlock:` field of a map's fdinfo.
#[must_use]
pub fn parse_memlock(fdinfo: &str) -> Option<u64> {
    fdinfo_field(fdinfo, "memlock:")
}

/// `recursion_misses:` of a program, from its fdinfo: the runs the kernel
/// skipped because another BPF program was running on the CPU. aya's
/// `ProgramInfo` does not have it.
#[must_use]
pub fn program_recursion_misses(fd: &ProgramFd) -> Option<u64> {
    parse_recursion_misses(&fdinfo(fd.as_fd())?)
}

/// The `recursion_misses:` field of a program's fdinfo; None before Linux
/// 5.12, which does not print it.
#[must_use]
pub fn parse_recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo_field(fdinfo, "recursion_misses:")
}

/// Entries of a socket map, and how many are in CLOSE_WAIT. An entry can
/// vanish between key and value reads: it is skipped.
fn count_states<V: aya::Pod>(
    map: &HashMap<&aya::maps::MapData, u64, V>,
    state: impl Fn(&V) -> u32,
) -> (u64, u64) {
    let (mut live, mut close_wait) = (0, 0);
    for (_, v) in map.iter().filter_map(super::maps::readable) {
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

/// Read the `COUNTERS` array and count the `SOCKS` map's entries.
///
/// Sockets come and go during the count. Inserts are read before it and
/// deletes after it, so that [`KernelCounters::evictions`] never counts a socket
/// destroyed mid-read as evicted: every entry inserted before the count
/// is then live in it, deleted, or really evicted.
pub fn read(ebpf: &Ebpf) -> Result<KernelCounters, MapError> {
    let mut out = KernelCounters::default();
    let counters = ebpf
        .map(names::COUNTERS)
        .map(PerCpuArray::<_, u64>::try_from)
        .transpose()?;
    let sum = |arr: &PerCpuArray<_, u64>, i: usize| -> Result<u64, MapError> {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        Ok(super::maps::saturating_sum(arr.get(&i, 0)?.iter().copied()))
    };
    if let Some(arr) = &counters {
        for (i, slot) in out.values.iter_mut().enumerate() {
            *slot = sum(arr, i)?;
        }
    }
    // The full socket map, and the lean store (table and map): the one
    // not in use (see `kernel::sizing::SocketStore`) is empty and a few dozen
    // entries large. With the lean store in use (a table of more than
    // one bucket), `SOCKS` holds details of some of its sockets (leak
    // mode): counted in memory, not in sockets.
    let lean = ebpf
        .map(names::LEAN_TABLE)
        .and_then(|m| match m {
            Map::Array(data) => data.info().ok(),
            _ => None,
        })
        .is_some_and(|i| i.max_entries() > 1);
    let (mut full_capacity, mut lean_capacity) = (0, 0);
    for name in [names::SOCKS, names::LEAN, names::LEAN_TABLE] {
        let Some(map) = ebpf.map(name) else { continue };
        let (Map::LruHashMap(data) | Map::HashMap(data) | Map::Array(data)) = map else {
            continue;
        };
        let entries = data.info().map_or(0, |i| i.max_entries());
        if let Some(b) = map_memlock(data) {
            out.memlock_bytes = Some(out.memlock_bytes.unwrap_or(0) + b);
        }
        let (live, close_wait) = match name {
            names::SOCKS if lean => (0, 0),
            names::SOCKS => {
                full_capacity = entries;
                count_states(&HashMap::<_, u64, SockInfo>::try_from(map)?, |e| e.state)
            }
            names::LEAN => {
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
    // Only the attached programs are loaded (`load::attach`): those with
    // a descriptor.
    out.recursion_misses = sum_known(
        (ebpf.programs())
            .filter_map(|(_, p)| p.fd().ok())
            .map(program_recursion_misses),
    );
    if let Some(arr) = &counters {
        let deletes = Counter::SockDeletes as usize;
        out.values[deletes] = sum(arr, deletes)?;
    }
    Ok(out)
}

/// The run counts, run times and skipped runs of every loaded program, by
/// name (the object's map of programs has no order of its own).
#[must_use]
pub fn program_costs(ebpf: &Ebpf) -> Vec<ProgramCost> {
    let mut costs: Vec<ProgramCost> = ebpf
        .programs()
        .filter_map(|(name, p)| {
            let info = p.info().ok()?;
            // Every variant of inet_sock_set_state goes by the
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
                recursion_misses: p.fd().ok().and_then(program_recursion_misses),
            })
        })
        .collect();
    costs.sort_by(|a, b| a.name.cmp(&b.name));
    costs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_from_fdinfo() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t9\n\
                    key_size:\t8\nvalue_size:\t120\nmax_entries:\t65536\nmap_flags:\t0x0\n\
                    map_extra:\t0x0\nmemlock:\t12345678\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(parse_memlock(info), Some(12_345_678));
        assert_eq!(parse_memlock("map_type:\t9\n"), None);
    }

    #[test]
    fn recursion_misses_from_a_program_fdinfo() {
        // Linux 6.x: the last line.
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t5\n\
                    prog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\n\
                    prog_id:\t77\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t3\n\
                    verified_insns:\t512\n";
        assert_eq!(parse_recursion_misses(info), Some(3));
        assert_eq!(parse_recursion_misses("recursion_misses:\t0\n"), Some(0));
        // Linux 5.11 and before print no such line: unknown, not zero.
        let old = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_jited:\t1\n\
                   memlock:\t4096\nprog_id:\t77\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(parse_recursion_misses(old), None);
        assert_eq!(parse_recursion_misses("recursion_misses:\tlots\n"), None);
    }
}
