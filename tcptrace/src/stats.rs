//! Event and loss accounting: the kernel's per-CPU counters, the socket map's
//! occupancy, and userspace's own counts, summarised at exit.

use std::fmt;

use aya::{
    Ebpf,
    maps::{HashMap, MapError, PerCpuArray},
};
use tcptrace_common::{Counter, NUM_COUNTERS, SockInfo};

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub values: [u64; NUM_COUNTERS as usize],
    /// Entries in the socket map when read.
    pub live_sockets: u64,
}

impl KernelCounters {
    /// Read the `COUNTERS` array and count the `SOCKS` map's entries.
    pub fn read(ebpf: &Ebpf) -> Result<Self, MapError> {
        let mut out = Self::default();
        if let Some(map) = ebpf.map("COUNTERS") {
            let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
            for (i, slot) in out.values.iter_mut().enumerate() {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                *slot = arr.get(&i, 0)?.iter().sum();
            }
        }
        if let Some(map) = ebpf.map("SOCKS") {
            let socks: HashMap<_, u64, SockInfo> = HashMap::try_from(map)?;
            out.live_sockets = socks.keys().flatten().count() as u64;
        }
        Ok(out)
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
        let off = costs_line(&[ProgramCost {
            name: "x".into(),
            run_count: 0,
            run_time_ns: 0,
        }]);
        assert!(off.contains("bpf_stats_enabled=1"), "{off}");
    }
}
