//! The TIME_WAIT-related sysctls of tcptrace's network namespace, read
//! from `/proc/sys/net/ipv4`, each on its own.

use std::{fs, io, path::Path};

use crate::model::sysctl::{Reading, Sysctls, parse_port_list, parse_range};

/// The default root of the sysctls tcptrace reads.
pub const ROOT: &str = "/proc/sys/net/ipv4";

/// Read every sysctl under `root` (normally [`ROOT`]).
#[must_use]
pub fn read(root: &Path) -> Sysctls {
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
        let s = read(&dir);
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
        let s = read(Path::new("/nonexistent/tcptrace/sysctl"));
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
        let s = read(&dir);
        assert!(s.port_range.unwrap_err().contains("cannot parse"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_running_namespace_is_readable() {
        let s = read(Path::new(ROOT));
        assert!(s.port_range.is_ok(), "{:?}", s.port_range);
        assert!(s.usable_ports().unwrap() > 0);
    }
}
