//! The exit summary's lines: event counts and losses, the socket store's
//! occupancy and the programs' kernel cost.

use tcptrace_common::Counter;

use crate::model::counters::{KernelCounters, ProgramCost, UserCounters};

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

/// The stream's count of records: `tcptrace: 12 events (12 state, 0
/// reset), 12 printed, 0 filtered out, 0 undecodable`.
#[must_use]
pub fn events_line(u: &UserCounters) -> String {
    format!(
        "tcptrace: {} events ({} state, {} reset), {} printed, {} filtered out, {} undecodable",
        u.records, u.state_events, u.reset_events, u.printed, u.filtered, u.decode_errors
    )
}

/// The kernel side's losses.
#[must_use]
pub fn losses_line(k: &KernelCounters) -> String {
    format!(
        "tcptrace: losses: {} ring-buffer full, {} socket-map evictions, {} insert failures, \
         {} field-read errors; {} transitions of sockets older than the tracer or evicted",
        k.get(Counter::RingbufFull),
        k.evictions(),
        k.get(Counter::SockInsertErrors),
        k.get(Counter::ReadErrors),
        k.get(Counter::SockUnknown),
    )
}

/// `--hist`'s losses: records (resets) the ring refused or that could not
/// be decoded, field reads that failed, and dwells the full `HIST` map
/// (`--by`) could not count.
#[must_use]
pub fn hist_losses_line(k: &KernelCounters, undecodable: u64) -> String {
    format!(
        "tcptrace: --hist losses: {} ring-buffer full, {} field-read errors, {} undecodable, \
         {} dwells not counted (histogram map full)",
        k.get(Counter::RingbufFull),
        k.get(Counter::ReadErrors),
        undecodable,
        k.get(Counter::HistFull),
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
        }];
        let s = [
            events_line(&user),
            losses_line(&k),
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
        }]);
        assert!(off.contains("bpf_stats_enabled=1"), "{off}");
    }

    #[test]
    fn hist_losses_name_the_full_histogram_map() {
        let mut k = KernelCounters::default();
        k.values[Counter::HistFull as usize] = 7;
        k.values[Counter::ReadErrors as usize] = 2;
        assert_eq!(
            hist_losses_line(&k, 3),
            "tcptrace: --hist losses: 0 ring-buffer full, 2 field-read errors, 3 undecodable, \
             7 dwells not counted (histogram map full)"
        );
    }
}
