//! Transition counts and dwell histograms (`--hist`), kept in per-CPU maps
//! so that a transition costs a map update and no record: `TRANSITIONS`,
//! `HIST_STATE` (by state alone) and `HIST` (by state and a group).

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use tcptrace_common::{Counter, HistKey, hist};

use crate::maps::{BPF_NOEXIST, count};

/// Dwell histograms (`--hist`): one counter per (state, bucket, group), per
/// CPU, so high connection rates cost a map update and no ring-buffer record.
#[map]
static HIST: PerCpuHashMap<HistKey, u64> = PerCpuHashMap::with_max_entries(16_384, 0);

/// Dwell histograms by state alone (`--hist` without `--by`): one row of
/// buckets per state, the maximum last. An array index instead of two hash
/// operations per transition. `inet_sock_set_state` updates a row in place.
#[map]
pub(crate) static HIST_STATE: PerCpuArray<[u64; hist::ROW]> = PerCpuArray::with_max_entries(16, 0);

/// Transitions by `old * 16 + new`, every mode.
#[map]
pub(crate) static TRANSITIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(256, 0);

/// Count one dwell in its bucket and raise the group's maximum. A dwell
/// whose bucket key the full map refuses is counted as `HistFull`.
#[inline(always)]
pub(crate) fn hist_add(key: &HistKey, dwell_ns: u64) {
    // A per-CPU hash still has one key for all CPUs: another CPU may create
    // it between our lookup and insert, so a failed insert looks up again.
    if let Some(n) = HIST.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe { *n += 1 };
    } else if HIST.insert(key, 1, BPF_NOEXIST).is_err() {
        match HIST.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(n) => unsafe { *n += 1 },
            None => count(Counter::HistFull),
        }
    }
    let max_key = HistKey {
        slot: hist::MAX_SLOT,
        ..*key
    };
    let mut m = HIST.get_ptr_mut(&max_key);
    if m.is_none() && HIST.insert(&max_key, dwell_ns, BPF_NOEXIST).is_err() {
        m = HIST.get_ptr_mut(&max_key);
    }
    if let Some(m) = m {
        // SAFETY: as above.
        unsafe {
            if *m < dwell_ns {
                *m = dwell_ns;
            }
        }
    }
}
