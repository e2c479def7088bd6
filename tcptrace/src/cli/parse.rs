//! Value parsers of the flags, with errors that say what is expected.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use clap::{CommandFactory as _, error::ErrorKind};
use tcptrace_common::{
    HistBy, TcpState,
    ports::{MAX_PORTS, PortList, TooManyPorts},
};

use super::MAX_SOCKETS_RANGE;
use crate::model::{
    filter::{cgroup_prefix, container_prefix},
    netns::NetnsSpec,
    plan::GroupLabel,
};

/// The longest `--duration`, `--interval` or `--min-age`: ten years (in
/// humantime's years of 365.25 days, so `10y` is accepted). Far beyond any run, and far
/// within what a timer deadline (now plus the duration) can hold: tokio
/// caps its own timers at 30 years.
pub const MAX_DURATION: Duration = Duration::from_hours(10 * 8766);

/// `30` (seconds) or a humantime duration such as `30s`, `1m30s`, `500ms`,
/// greater than zero and at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = if let Ok(secs) = s.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        humantime::parse_duration(s).map_err(|e| format!("{e} (try 30, 30s or 5m)"))?
    };
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "must be at most 10 years ({} seconds)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// A TCP state name, case-insensitive, as the kernel spells it (with or
/// without the `TCP_` prefix: `CLOSE_WAIT`, `tcp_fin_wait2`) or as `ss`
/// does (`close-wait`, `fin-wait-2`, `syn-recv`).
pub fn parse_state(s: &str) -> Result<TcpState, String> {
    let up = s.trim().to_ascii_uppercase().replace('-', "_");
    let name = up.strip_prefix("TCP_").unwrap_or(&up);
    // ss writes FIN-WAIT-2 where the kernel writes FIN_WAIT2.
    let name = name.replace("WAIT_1", "WAIT1").replace("WAIT_2", "WAIT2");
    TcpState::ALL
        .into_iter()
        .find(|st| st.name() == name)
        .ok_or_else(|| {
            let names: Vec<_> = TcpState::ALL.iter().map(|s| s.name()).collect();
            format!(
                "unknown TCP state; expected one of {} (or as ss writes them: close-wait, \
                 fin-wait-2, ...)",
                names.join(", ")
            )
        })
}

/// A `--by` value: the kernel's group key, and how reports name a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct By {
    pub key: HistBy,
    pub label: GroupLabel,
}

/// `lport`, `rport`, `raddr`, `comm`, `netns` or `container` (network
/// namespaces, named by their containers).
pub fn parse_by(s: &str) -> Result<By, String> {
    let (key, label) = match s {
        "lport" => (HistBy::LocalPort, GroupLabel::Key),
        "rport" => (HistBy::RemotePort, GroupLabel::Key),
        "raddr" => (HistBy::RemoteAddr, GroupLabel::Key),
        "comm" => (HistBy::Comm, GroupLabel::Key),
        "netns" => (HistBy::Netns, GroupLabel::Key),
        "container" => (HistBy::Netns, GroupLabel::Container),
        _ => {
            return Err("expected one of lport, rport, raddr, comm, netns, container".to_owned());
        }
    };
    Ok(By { key, label })
}

/// `--netns`: `NAME` (under /run/netns), `pid:PID` or `inode:INODE`.
pub fn parse_netns(s: &str) -> Result<NetnsSpec, String> {
    s.parse::<NetnsSpec>().map_err(|e| e.to_string())
}

/// `--container`: the first characters of a container id.
pub fn parse_container(s: &str) -> Result<String, String> {
    container_prefix(s).map_err(|e| e.to_string())
}

/// `--cgroup`: an absolute cgroup v2 path, as /proc/PID/cgroup shows it.
pub fn parse_cgroup(s: &str) -> Result<String, String> {
    cgroup_prefix(s).map_err(|e| e.to_string())
}

/// `ADDR:PORT`, `[V6]:PORT`, or a bare `PORT` on loopback.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    s.parse()
        .map_err(|_| "expected ADDR:PORT (e.g. 127.0.0.1:9464) or a port".to_owned())
}

/// One entry of `--port`, `--lport` or `--rport`: a port from 1 to 65535.
pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    const EXPECTED: &str = "ports from 1 to 65535, comma-separated (80,443) or repeated";
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("an empty port: expected {EXPECTED}"));
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a port number: expected {EXPECTED}"));
    }
    t.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("out of range: expected {EXPECTED}"))
}

/// `--max-sockets`: a plain count within [`MAX_SOCKETS_RANGE`].
pub(super) fn parse_max_sockets(s: &str) -> Result<u32, String> {
    let (lo, hi) = (*MAX_SOCKETS_RANGE.start(), *MAX_SOCKETS_RANGE.end());
    let bounds = || format!("must be a number of sockets from {lo} to {hi}");
    let v: u64 = s.trim().parse().map_err(|e| format!("{e}; {}", bounds()))?;
    u32::try_from(v)
        .ok()
        .filter(|v| MAX_SOCKETS_RANGE.contains(v))
        .ok_or_else(bounds)
}

/// `--top`: 1 to 1000 series of a kind.
pub(super) fn parse_top(s: &str) -> Result<usize, String> {
    let v: usize =
        (s.trim().parse()).map_err(|e| format!("{e}; must be a number from 1 to 1000"))?;
    if (1..=1000).contains(&v) {
        Ok(v)
    } else {
        Err("must be a number from 1 to 1000".to_owned())
    }
}

pub(super) fn parse_ringbuf_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if v < 4 || !v.is_power_of_two() || v > 1 << 20 {
        return Err("must be a power of two from 4 to 1048576".to_owned());
    }
    Ok(v)
}

/// The list of `flag`'s ports, or the usage error for more than
/// [`MAX_PORTS`] different ones.
pub(super) fn port_list(flag: &str, ports: &[u16]) -> Result<PortList, clap::Error> {
    PortList::new(ports).map_err(|TooManyPorts| {
        let mut distinct = ports.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        super::Cli::command().error(
            ErrorKind::TooManyValues,
            format!(
                "{flag} takes at most {MAX_PORTS} different ports, {} given: the kernel \
                 compares each socket's port with every entry. Filter on fewer ports, or \
                 run a second tcptrace for the others",
                distinct.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::{Parser as _, error::ErrorKind};

    use super::*;
    use crate::cli::Cli;

    /// Durations too long for a timer deadline are usage errors, not panics.
    #[test]
    fn durations_are_bounded_at_ten_years() {
        assert_eq!(parse_duration("10y"), Ok(MAX_DURATION));
        for too_long in ["18446744073709551615", "11y", "315576001"] {
            let err = parse_duration(too_long).unwrap_err();
            assert!(err.contains("at most 10 years"), "{too_long}: {err}");
        }
        for flag in [&["-d"][..], &["-i"], &["--closewait-leaks", "--min-age"]] {
            let args: Vec<&str> = flag
                .iter()
                .copied()
                .chain(["18446744073709551615"])
                .collect();
            let err =
                Cli::try_parse_from(std::iter::once("tcptrace").chain(args.clone())).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}");
        }
    }
}
