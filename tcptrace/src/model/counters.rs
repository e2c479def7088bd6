//! What the run counted: the kernel side's event and loss counters with the
//! socket store's occupancy, the programs' kernel cost, and userspace's own
//! counts of records.

use tcptrace_common::{Counter, NUM_COUNTERS};

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
    /// Runs of the attached programs that the kernel skipped because another
    /// BPF program was running on the CPU (`recursion_misses` in their
    /// fdinfo), summed over the programs; None when the kernel does not say
    /// (before Linux 5.12).
    pub recursion_misses: Option<u64>,
}

impl KernelCounters {
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
/// statistics (`sysctl kernel.bpf_stats_enabled=1`; zero counts without it),
/// and the runs the kernel skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramCost {
    pub name: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    /// Runs skipped because another BPF program was running on the CPU
    /// (`recursion_misses`, counted whatever `bpf_stats_enabled` says);
    /// None when the kernel does not say.
    pub recursion_misses: Option<u64>,
}

impl ProgramCost {
    /// Mean nanoseconds per invocation, if it ran.
    #[must_use]
    pub fn ns_per_call(&self) -> Option<u64> {
        self.run_time_ns.checked_div(self.run_count)
    }
}

/// The sum of per-program counts, unknown if any program's is: a sum that
/// left a program out would understate the loss.
#[must_use]
pub fn sum_known(counts: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    (counts.into_iter()).try_fold(0u64, |sum, n| Some(sum.saturating_add(n?)))
}

/// The loss line's words for [`KernelCounters::recursion_misses`].
pub const RECURSION_MISSES: &str = "program runs skipped by the kernel (recursion)";

/// The loss line's words for [`Counter::TransitionGaps`]: what the socket
/// store found missed, on every kernel, including those that do not count
/// their skipped runs (before 6.7).
pub const TRANSITION_GAPS: &str = "transitions missed (found out of order)";

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

/// Losses counted in userspace, for the exit summary's loss line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserLosses {
    /// Records that could not be decoded.
    pub undecodable: u64,
    /// Per-CPU log records overwritten before they were read.
    pub log_lost: u64,
    /// Map entries that could not be read while iterating a map.
    pub map_unreadable: u64,
    /// sock_diag requests that failed.
    pub sockdiag_failed: u64,
}

/// One counter of the loss line: its `/metrics` reason, its words in the
/// exit summary, and its value (None when the kernel counters were
/// unreadable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    pub reason: &'static str,
    pub words: &'static str,
    pub value: Option<u64>,
}

/// Every counter a run may lose data to, kernel and userspace, in the loss
/// line's order: the exit summary and `/metrics` both read this list, so
/// that neither can leave one out.
#[must_use]
pub fn losses(k: Option<&KernelCounters>, u: &UserLosses) -> [Loss; 12] {
    let kernel = |c: Counter| k.map(|k| k.get(c));
    let loss = |reason, words, value| Loss {
        reason,
        words,
        value,
    };
    [
        loss(
            "ringbuf_full",
            "ring-buffer full",
            kernel(Counter::RingbufFull),
        ),
        loss(
            "socket_map_eviction",
            "socket-map evictions",
            k.map(KernelCounters::evictions),
        ),
        loss(
            "socket_map_insert_failure",
            "insert failures",
            kernel(Counter::SockInsertErrors),
        ),
        loss(
            "field_read_error",
            "field-read errors",
            kernel(Counter::ReadErrors),
        ),
        loss("undecodable", "undecodable", Some(u.undecodable)),
        loss(
            "stack_capture_failed",
            "stack captures failed",
            kernel(Counter::StackErrors),
        ),
        loss(
            "histogram_map_full",
            "dwells not counted (histogram map full)",
            kernel(Counter::HistFull),
        ),
        loss(
            "timewait_log_overwritten",
            "TIME_WAIT log entries overwritten",
            Some(u.log_lost),
        ),
        loss(
            "map_entry_unreadable",
            "map entries unreadable",
            Some(u.map_unreadable),
        ),
        loss(
            "sockdiag_request_failed",
            "sock_diag requests failed",
            Some(u.sockdiag_failed),
        ),
        loss(
            "program_recursion_miss",
            RECURSION_MISSES,
            k.and_then(|k| k.recursion_misses),
        ),
        loss(
            "transition_gap",
            TRANSITION_GAPS,
            kernel(Counter::TransitionGaps),
        ),
    ]
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
    fn a_sum_over_programs_is_unknown_if_one_program_is() {
        assert_eq!(sum_known([Some(2), Some(0), Some(5)]), Some(7));
        assert_eq!(sum_known([Some(2), None, Some(5)]), None);
        assert_eq!(sum_known([Some(u64::MAX), Some(1)]), Some(u64::MAX));
        assert_eq!(sum_known([]), Some(0));
    }

    #[test]
    fn recursion_misses_are_a_loss_unknown_when_the_kernel_does_not_say() {
        let find = |k: Option<&KernelCounters>| {
            losses(k, &UserLosses::default())
                .into_iter()
                .find(|l| l.reason == "program_recursion_miss")
                .map(|l| l.value)
        };
        let mut k = KernelCounters {
            recursion_misses: Some(4),
            ..KernelCounters::default()
        };
        assert_eq!(find(Some(&k)), Some(Some(4)));
        k.recursion_misses = None;
        assert_eq!(find(Some(&k)), Some(None));
        assert_eq!(find(None), Some(None));
    }
}
