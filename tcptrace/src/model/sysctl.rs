//! The network sysctls that decide how TIME_WAIT behaves (they are per
//! network namespace), and what follows from their values. Each is read on
//! its own: one that cannot be read carries its error and the rest count.

/// One sysctl: its value, or why it could not be read.
pub type Reading<T> = Result<T, String>;

/// The TIME_WAIT-related sysctls at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctls {
    /// `ip_local_port_range`: the ephemeral ports `connect()` picks from.
    pub port_range: Reading<(u16, u16)>,
    /// `ip_local_reserved_ports`: ports taken out of that range.
    pub reserved_ports: Reading<Vec<(u16, u16)>>,
    /// `tcp_tw_reuse`: 0 off, 1 on, 2 loopback only (the default).
    pub tw_reuse: Reading<u32>,
    /// `tcp_tw_reuse_delay` in ms (Linux 6.13+; 1000 ms fixed before). None
    /// when this kernel has no such sysctl.
    pub tw_reuse_delay_ms: Option<Reading<u32>>,
    /// `tcp_timestamps`: `tcp_tw_reuse` needs them.
    pub timestamps: Reading<u32>,
    /// `tcp_max_tw_buckets`: the most timewait sockets the namespace keeps.
    pub max_tw_buckets: Reading<u64>,
    /// `tcp_fin_timeout`: how long an orphan waits in FIN_WAIT2, seconds.
    pub fin_timeout_s: Reading<u32>,
    /// `tcp_tw_recycle`: removed in Linux 4.12. Some(value) only on a kernel
    /// that still has it.
    pub tw_recycle: Option<u32>,
}

impl Sysctls {
    /// Every sysctl unread, for `why` (a namespace that could not be
    /// entered).
    #[must_use]
    pub fn unknown(why: &str) -> Self {
        let e = |name: &str| format!("net.ipv4.{name}: {why}");
        Sysctls {
            port_range: Err(e("ip_local_port_range")),
            reserved_ports: Err(e("ip_local_reserved_ports")),
            tw_reuse: Err(e("tcp_tw_reuse")),
            tw_reuse_delay_ms: None,
            timestamps: Err(e("tcp_timestamps")),
            max_tw_buckets: Err(e("tcp_max_tw_buckets")),
            fin_timeout_s: Err(e("tcp_fin_timeout")),
            tw_recycle: None,
        }
    }

    /// Ports `connect()` can use to one destination: the range minus the
    /// reserved ports in it. None when the range is unreadable.
    #[must_use]
    pub fn usable_ports(&self) -> Option<u32> {
        let (lo, hi) = *self.port_range.as_ref().ok()?;
        let size = u32::from(hi.saturating_sub(lo)) + 1;
        let reserved: u32 = self.reserved_ports.as_ref().map_or(0, |list| {
            list.iter()
                .map(|&(a, b)| {
                    let (a, b) = (a.max(lo), b.min(hi));
                    if a > b { 0 } else { u32::from(b - a) + 1 }
                })
                .sum()
        });
        Some(size.saturating_sub(reserved))
    }

    /// Whether `port` is in the ephemeral range (None if unknown).
    #[must_use]
    pub fn is_ephemeral(&self, port: u16) -> Option<bool> {
        let (lo, hi) = *self.port_range.as_ref().ok()?;
        Some((lo..=hi).contains(&port))
    }

    /// The errors of the sysctls that could not be read.
    #[must_use]
    pub fn unreadable(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut add = |e: Option<&String>| {
            if let Some(e) = e {
                v.push(e.clone());
            }
        };
        add(self.port_range.as_ref().err());
        add(self.reserved_ports.as_ref().err());
        add(self.tw_reuse.as_ref().err());
        add(self
            .tw_reuse_delay_ms
            .as_ref()
            .and_then(|r| r.as_ref().err()));
        add(self.timestamps.as_ref().err());
        add(self.max_tw_buckets.as_ref().err());
        add(self.fin_timeout_s.as_ref().err());
        v
    }

    /// The delay before `tcp_tw_reuse` may take a TIME_WAIT port, in ms.
    #[must_use]
    pub fn reuse_delay_ms(&self) -> u32 {
        match &self.tw_reuse_delay_ms {
            Some(Ok(ms)) => *ms,
            // Before 6.13 the delay was a fixed second.
            _ => 1000,
        }
    }
}

/// `"32768\t60999"`.
pub fn parse_range(t: &str) -> Option<(u16, u16)> {
    let mut it = t.split_whitespace().map(str::parse::<u16>);
    let lo = it.next()?.ok()?;
    let hi = it.next()?.ok()?;
    (it.next().is_none() && lo <= hi).then_some((lo, hi))
}

/// `""`, `"8080"` or `"8080,9000-9010"`.
pub fn parse_port_list(t: &str) -> Option<Vec<(u16, u16)>> {
    t.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some((a, b)) = p.split_once('-') {
                Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
            } else {
                let v = p.parse().ok()?;
                Some((v, v))
            }
        })
        .collect()
}
