//! The exit summary's lines: event counts and losses, the socket store's
//! occupancy and the programs' kernel cost.

use tcptrace_common::Counter;

use crate::model::counters::{
    KernelCounters, ProgramCost, RECURSION_MISSES, UserCounters, UserLosses, losses,
};

/// The socket map's occupancy, for the exit summary of every run:
/// `tcptrace: socket map: 200004 of 262144 entries in use (100000 in
/// CLOSE_WAIT), 0 evicted, 49.2 MiB of kernel memory (--max-sockets)`.
#[must_use]
pub fn socket_map_line(k: &KernelCounters) -> String {
    let memory = k.memlock_bytes.map_or_else(String::new, |b| {
        #[expect(clippy::cast_precision_loss, reason = "MiB for people")]
        let mib = b as f64 / f64::from(1u32 << 20);
        format!(", {mib:.1} MiB of kernel memory")
    });
    format!(
        "tcptrace: socket map: {} of {} entries in use ({} in CLOSE_WAIT), {} evicted{memory} (--max-sockets)",
        k.live_sockets,
        k.capacity,
        k.close_wait,
        k.evictions(),
    )
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

/// The loss line's skipped program runs, per program (`-v`):
/// `tcptrace: program runs skipped by the kernel (recursion), per program:
/// inet_sock_set_state 0, tcp_destroy_sock 0`; `?` where the kernel does
/// not say.
#[must_use]
pub fn recursion_misses_line(costs: &[ProgramCost]) -> String {
    let each: Vec<String> = (costs.iter())
        .map(|c| {
            let n = c
                .recursion_misses
                .map_or_else(|| "?".to_owned(), |n| n.to_string());
            format!("{} {n}", c.name)
        })
        .collect();
    format!(
        "tcptrace: {RECURSION_MISSES}, per program: {}",
        each.join(", ")
    )
}

/// The stream's count of records: `tcptrace: 12 events (12 state, 0
/// reset), 12 printed, 0 filtered out, 0 undecodable`.
#[must_use]
pub fn events_line(u: &UserCounters) -> String {
    format!(
        "tcptrace: {} events ({} state, {} reset), {} printed, {} filtered out, {} undecodable",
        u.records, u.state_events, u.reset_events, u.printed, u.filtered, u.decode_errors
    )
}

/// The loss line, the same in every mode and on every exit path: each
/// counter a run may lose data to, kernel and userspace, zero or not, so
/// that "no loss" is something the line says rather than leaves out. `?`
/// when the kernel counters could not be read.
#[must_use]
pub fn losses_line(k: Option<&KernelCounters>, u: &UserLosses) -> String {
    let value = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    let counted: Vec<String> = (losses(k, u).iter())
        .map(|l| format!("{} {}", value(l.value), l.words))
        .collect();
    format!(
        "tcptrace: losses: {}; {} transitions of sockets older than the tracer or evicted",
        counted.join(", "),
        value(k.map(|k| k.get(Counter::SockUnknown))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
            socket_map_line(&k),
            "tcptrace: socket map: 200004 of 262144 entries in use (100000 in CLOSE_WAIT), \
             5 evicted, 50.0 MiB of kernel memory (--max-sockets)"
        );
        k.memlock_bytes = None;
        assert!(socket_map_line(&k).contains("5 evicted (--max-sockets)"));
    }

    #[test]
    fn summary_names_every_loss() {
        let mut k = KernelCounters::default();
        k.values[Counter::RingbufFull as usize] = 3;
        let user = UserCounters {
            records: 5,
            ..UserCounters::default()
        };
        let costs = [ProgramCost {
            name: "sock_recv_length".into(),
            run_count: 4,
            run_time_ns: 100,
            recursion_misses: Some(0),
        }];
        let s = [
            events_line(&user),
            losses_line(Some(&k), &UserLosses::default()),
            socket_map_line(&k),
            costs_line(&costs),
        ]
        .join("\n");
        assert!(s.contains("5 events"), "{s}");
        assert!(s.contains("3 ring-buffer full"), "{s}");
        assert!(s.contains("evictions"), "{s}");
        assert!(s.contains("sock_recv_length 25 ns x 4"), "{s}");
        assert!(s.contains("tcptrace: socket map: 0 of 0 entries"), "{s}");
        let off = costs_line(&[ProgramCost {
            name: "x".into(),
            run_count: 0,
            run_time_ns: 0,
            recursion_misses: None,
        }]);
        assert!(off.contains("bpf_stats_enabled=1"), "{off}");
    }

    #[test]
    fn one_loss_line_names_every_loss_and_unknowns() {
        let mut k = KernelCounters::default();
        k.values[Counter::HistFull as usize] = 7;
        k.values[Counter::ReadErrors as usize] = 2;
        k.values[Counter::StackErrors as usize] = 4;
        k.recursion_misses = Some(9);
        k.values[Counter::TransitionGaps as usize] = 1;
        let u = UserLosses {
            undecodable: 3,
            log_lost: 5,
            map_unreadable: 6,
            sockdiag_failed: 8,
        };
        assert_eq!(
            losses_line(Some(&k), &u),
            "tcptrace: losses: 0 ring-buffer full, 0 socket-map evictions, 0 insert failures, \
             2 field-read errors, 3 undecodable, 4 stack captures failed, 7 dwells not counted \
             (histogram map full), 5 TIME_WAIT log entries overwritten, 6 map entries unreadable, \
             8 sock_diag requests failed, 9 program runs skipped by the kernel (recursion), \
             1 transitions missed (found out of order); \
             0 transitions of sockets older than the tracer or evicted"
        );
        k.recursion_misses = None;
        assert!(
            (losses_line(Some(&k), &u))
                .contains(", ? program runs skipped by the kernel (recursion), "),
            "a kernel that does not say (before 5.12) is unknown, not 0"
        );
        let unknown = losses_line(None, &u);
        assert!(
            unknown.contains("? ring-buffer full, ? socket-map evictions"),
            "{unknown}"
        );
        assert!(unknown.contains("3 undecodable"), "{unknown}");
    }

    #[test]
    fn skipped_runs_per_program() {
        let cost = |name: &str, recursion_misses| ProgramCost {
            name: name.into(),
            run_count: 0,
            run_time_ns: 0,
            recursion_misses,
        };
        assert_eq!(
            recursion_misses_line(&[
                cost("inet_sock_set_state", Some(2)),
                cost("tcp_destroy_sock", Some(0)),
                cost("tcp_recvmsg", None),
            ]),
            "tcptrace: program runs skipped by the kernel (recursion), per program: \
             inet_sock_set_state 2, tcp_destroy_sock 0, tcp_recvmsg ?"
        );
    }
}

/// The network namespaces followed, and those following could not ask.
#[derive(Clone, Copy, Debug, Default)]
pub struct NamespaceCounts {
    pub followed: usize,
    /// Sockets closed because their namespace's last process exited.
    pub closed: u64,
    pub vanished: u64,
    pub unreadable: u64,
    pub left_out: usize,
}

#[must_use]
pub fn namespaces_line(c: &NamespaceCounts) -> String {
    format!(
        "tcptrace: network namespaces: {} followed, {} let go (their last process exited), \
         {} vanished before they could be asked, {} ns/net links unreadable, {} left out \
         (too many)",
        c.followed, c.closed, c.vanished, c.unreadable, c.left_out
    )
}
