//! The kernel side's maps by name, and the readers of the aggregates they
//! hold: dwell histograms, transition counts, the per-socket details of
//! leak mode, and (in `stacks`) captured stacks. Every map name userspace
//! uses is here.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapError, PerCpuArray, PerCpuHashMap},
};
use tcptrace_common::{HistBy, HistKey, SockInfo, TcpState, hist};
use thiserror::Error;

mod stacks;

pub use stacks::{Recycled, StackMaps, StackMarks, StackRecycler};

use crate::model::histogram::Hist;

/// Map entries that could not be read while iterating (most often one that
/// was deleted between its key and value reads), since start-up.
static UNREADABLE: AtomicU64 = AtomicU64::new(0);

/// How many map entries could not be read so far; the exit summary counts
/// them.
#[must_use]
pub fn unreadable_entries() -> u64 {
    UNREADABLE.load(Ordering::Relaxed)
}

/// An entry of a map iteration, or None (counted) when it cannot be read.
pub(crate) fn readable<T>(r: Result<T, MapError>) -> Option<T> {
    r.inspect_err(|_| {
        UNREADABLE.fetch_add(1, Ordering::Relaxed);
    })
    .ok()
}

/// Map names, as the eBPF object declares them.
pub mod names {
    /// Resets, failures and the stream's IPv6 records: the shared ring.
    pub const EVENTS: &str = "EVENTS";
    /// The stream's per-CPU state rings (an array of rings).
    pub const STATE_RINGS: &str = "STATE_RINGS";
    /// The name each per-CPU state ring is created with.
    pub const STATE_RING: &str = "STATE_RING";
    /// The per-CPU logs of state records (`--timewait`'s TIME_WAIT entries).
    pub const CPU_LOG: &str = "CPU_LOG";
    /// The comm cache, by thread.
    pub const COMMS: &str = "COMMS";
    /// The full socket map, or leak mode's socket details.
    pub const SOCKS: &str = "SOCKS";
    /// The lean store's table of two-slot buckets.
    pub const LEAN_TABLE: &str = "LEAN_TABLE";
    /// The lean store's LRU map.
    pub const LEAN: &str = "LEAN";
    /// Captured user stacks.
    pub const STACKS: &str = "STACKS";
    /// Stacks whose `STACKS` bucket was taken.
    pub const STACK_SPILL: &str = "STACK_SPILL";
    /// The stack cache: code path key to the `id_plus_one` of its stack.
    pub const STACK_IDS: &str = "STACK_IDS";
    /// Dwell histograms split by a group key.
    pub const HIST: &str = "HIST";
    /// Dwell histograms by state alone.
    pub const HIST_STATE: &str = "HIST_STATE";
    /// Transitions by `old * 16 + new`.
    pub const TRANSITIONS: &str = "TRANSITIONS";
    /// Event and loss counters.
    pub const COUNTERS: &str = "COUNTERS";
}

/// A map reader's failure.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("the eBPF object has no {0} map (build mismatch)")]
    Missing(&'static str),
    #[error("reading {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
}

fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, ReadError> {
    ebpf.map(name).ok_or(ReadError::Missing(name))
}

pub(super) fn err(map: &'static str) -> impl Fn(MapError) -> ReadError {
    move |source| ReadError::Map { map, source }
}

/// The label of a `--by` group key from the kernel.
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
        HistBy::Netns => Some(u32::from_ne_bytes([g[0], g[1], g[2], g[3]]).to_string()),
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

/// A sum of per-CPU counts that saturates: the maps may hold anything, and a
/// debug build panics on overflow.
pub(crate) fn saturating_sum(counts: impl Iterator<Item = u64>) -> u64 {
    counts.fold(0, u64::saturating_add)
}

/// One state's row of the kernel's by-state histograms (`HIST_STATE`),
/// summed over CPUs: the histogram, its maximum included, and the exact
/// minimum. None when the row counted no dwell.
pub fn read_state_row(ebpf: &Ebpf, state: TcpState) -> Result<Option<(Hist, u64)>, ReadError> {
    let rows: PerCpuArray<_, [u64; hist::ROW]> =
        PerCpuArray::try_from(map(ebpf, names::HIST_STATE)?).map_err(err(names::HIST_STATE))?;
    let per_cpu = rows
        .get(&(state as u32), 0)
        .map_err(err(names::HIST_STATE))?;
    let mut h = Hist::default();
    for slot in 0..hist::ROW_MIN_INV {
        let n = saturating_sum(per_cpu.iter().map(|r| r[slot]));
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
    h.add_min(min);
    Ok(Some((h, min)))
}

/// Dwell histograms by (state, group): from `HIST_STATE` by state, else
/// from the `HIST` map split by `by`.
pub fn read_hists(
    ebpf: &Ebpf,
    by: HistBy,
) -> Result<BTreeMap<(TcpState, Option<String>), Hist>, ReadError> {
    let mut out: BTreeMap<(TcpState, Option<String>), Hist> = BTreeMap::new();
    if by == HistBy::State {
        for state in TcpState::ALL {
            if let Some((h, _)) = read_state_row(ebpf, state)? {
                out.insert((state, None), h);
            }
        }
        return Ok(out);
    }
    let hists: PerCpuHashMap<_, HistKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, names::HIST)?).map_err(err(names::HIST))?;
    for (key, values) in hists.iter().filter_map(readable) {
        let Some(state) = TcpState::from_u32(key.state) else {
            continue;
        };
        let h = out.entry((state, group_label(by, &key.group))).or_default();
        if key.slot == hist::MAX_SLOT {
            h.add_bucket(key.slot, values.iter().copied().max().unwrap_or(0));
        } else {
            h.add_bucket(key.slot, saturating_sum(values.iter().copied()));
        }
    }
    // A group whose bucket the full map refused has only its maximum; one
    // whose maximum's key it refused gets its top bucket's upper bound (the
    // loss line counts the refusals).
    out.retain(|_, h| h.count() > 0);
    for h in out.values_mut() {
        if h.max_ns == 0
            && let Some((&top, _)) = h.buckets.last_key_value()
        {
            h.max_ns = hist::upper(top);
        }
    }
    Ok(out)
}

/// Transitions `(old, new, count)` from the kernel's `TRANSITIONS` array.
pub fn read_transitions(ebpf: &Ebpf) -> Result<Vec<(TcpState, TcpState, u64)>, ReadError> {
    let arr: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map(ebpf, names::TRANSITIONS)?).map_err(err(names::TRANSITIONS))?;
    let mut out = Vec::new();
    for old in TcpState::ALL {
        for new in TcpState::ALL {
            let i = (old as u32) * 16 + new as u32;
            let n = saturating_sum(
                arr.get(&i, 0)
                    .map_err(err(names::TRANSITIONS))?
                    .iter()
                    .copied(),
            );
            if n > 0 {
                out.push((old, new, n));
            }
        }
    }
    Ok(out)
}

/// Hand the details of every socket in `SOCKS` (leak mode's CLOSE_WAIT
/// candidates among them) to `visit`, one at a time. An entry can vanish
/// between its key and value reads: it is skipped.
pub fn each_sock_details(ebpf: &Ebpf, mut visit: impl FnMut(&SockInfo)) -> Result<(), ReadError> {
    let socks: BpfHashMap<_, u64, SockInfo> =
        BpfHashMap::try_from(map(ebpf, names::SOCKS)?).map_err(err(names::SOCKS))?;
    for (_, info) in socks.iter().filter_map(readable) {
        visit(&info);
    }
    Ok(())
}
