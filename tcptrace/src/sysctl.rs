//! The network sysctls that decide how TIME_WAIT behaves, read from
//! `/proc/sys/net/ipv4` of tcptrace's network namespace (they are per
//! namespace). Each is read on its own: one that cannot be read is reported
//! with its error and the rest still count.

use std::{fs, io, path::Path};

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

/// The default root of the sysctls tcptrace reads.
pub const ROOT: &str = "/proc/sys/net/ipv4";

impl Sysctls {
    /// Read every sysctl under `root` (normally [`ROOT`]).
    #[must_use]
    pub fn read(root: &Path) -> Self {
        let file = |name: &str| -> Reading<String> {
            fs::read_to_string(root.join(name))
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("net.ipv4.{name}: {e}"))
        };
        let num = |name: &str| -> Reading<u64> {
            let text = file(name)?;
            text.parse::<u64>()
                .map_err(|e| format!("net.ipv4.{name}: {e} in {text:?}"))
        };
        let small = |name: &str| -> Reading<u32> {
            let v = num(name)?;
            u32::try_from(v).map_err(|e| format!("net.ipv4.{name}: {e}"))
        };
        let optional = |name: &str| -> Option<Reading<u32>> {
            match fs::metadata(root.join(name)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && root.exists() => None,
                _ => Some(small(name)),
            }
        };
        Sysctls {
            port_range: file("ip_local_port_range").and_then(|t| {
                parse_range(&t)
                    .ok_or_else(|| format!("net.ipv4.ip_local_port_range: cannot parse {t:?}"))
            }),
            reserved_ports: file("ip_local_reserved_ports").and_then(|t| {
                parse_port_list(&t)
                    .ok_or_else(|| format!("net.ipv4.ip_local_reserved_ports: cannot parse {t:?}"))
            }),
            tw_reuse: small("tcp_tw_reuse"),
            tw_reuse_delay_ms: optional("tcp_tw_reuse_delay"),
            timestamps: small("tcp_timestamps"),
            max_tw_buckets: num("tcp_max_tw_buckets"),
            fin_timeout_s: small("tcp_fin_timeout"),
            tw_recycle: small("tcp_tw_recycle").ok(),
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

    /// The sysctls as JSON: numbers, or null when unreadable.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ip_local_port_range": self.port_range.as_ref().ok().map(|(a, b)| [a, b]),
            "ip_local_reserved_ports": self.reserved_ports.as_ref().ok(),
            "usable_ports": self.usable_ports(),
            "tcp_tw_reuse": self.tw_reuse.as_ref().ok(),
            "tcp_tw_reuse_delay_ms": self.tw_reuse_delay_ms.as_ref().and_then(|r| r.as_ref().ok()),
            "tcp_timestamps": self.timestamps.as_ref().ok(),
            "tcp_max_tw_buckets": self.max_tw_buckets.as_ref().ok(),
            "tcp_fin_timeout": self.fin_timeout_s.as_ref().ok(),
            "tcp_tw_recycle": self.tw_recycle,
            "unreadable": self.unreadable(),
        })
    }
}

/// `"32768\t60999"`.
fn parse_range(t: &str) -> Option<(u16, u16)> {
    let mut it = t.split_whitespace().map(str::parse::<u16>);
    let lo = it.next()?.ok()?;
    let hi = it.next()?.ok()?;
    (it.next().is_none() && lo <= hi).then_some((lo, hi))
}

/// `""`, `"8080"` or `"8080,9000-9010"`.
fn parse_port_list(t: &str) -> Option<Vec<(u16, u16)>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tcptrace-sysctl-{}-{}",
            std::process::id(),
            files.len()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (n, v) in files {
            fs::write(dir.join(n), v).unwrap();
        }
        dir
    }

    #[test]
    fn reads_real_values_and_subtracts_reserved_ports() {
        let dir = fake(&[
            ("ip_local_port_range", "40000\t40099\n"),
            ("ip_local_reserved_ports", "40010-40019,50000,39990-40000\n"),
            ("tcp_tw_reuse", "2\n"),
            ("tcp_timestamps", "1\n"),
            ("tcp_max_tw_buckets", "262144\n"),
            ("tcp_fin_timeout", "60\n"),
        ]);
        let s = Sysctls::read(&dir);
        assert_eq!(s.port_range, Ok((40000, 40099)));
        assert_eq!(s.usable_ports(), Some(100 - 10 - 1));
        assert_eq!(s.tw_reuse, Ok(2));
        assert_eq!(s.tw_reuse_delay_ms, None, "absent on this kernel");
        assert_eq!(s.reuse_delay_ms(), 1000);
        assert_eq!(s.tw_recycle, None);
        assert!(s.unreadable().is_empty(), "{:?}", s.unreadable());
        assert_eq!(s.is_ephemeral(40050), Some(true));
        assert_eq!(s.is_ephemeral(8080), Some(false));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unreadable_values_are_named_not_fatal() {
        let s = Sysctls::read(Path::new("/nonexistent/tcptrace/sysctl"));
        assert!(s.port_range.is_err());
        assert_eq!(s.usable_ports(), None);
        assert_eq!(s.is_ephemeral(1), None);
        let errs = s.unreadable();
        assert!(
            errs.iter()
                .any(|e| e.contains("net.ipv4.ip_local_port_range")),
            "{errs:?}"
        );
        // A missing directory is not "this kernel has no such sysctl".
        assert!(s.tw_reuse_delay_ms.is_some());
        let dir = fake(&[("ip_local_port_range", "garbage")]);
        let s = Sysctls::read(&dir);
        assert!(s.port_range.unwrap_err().contains("cannot parse"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_running_namespace_is_readable() {
        let s = Sysctls::read(Path::new(ROOT));
        assert!(s.port_range.is_ok(), "{:?}", s.port_range);
        assert!(s.usable_ports().unwrap() > 0);
    }
}
