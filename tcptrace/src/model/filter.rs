//! Filters. Family and ports are applied in the kernel (cheapest, before any
//! map work) and to what sock_diag finds; pid, comm and state need the owner
//! and the decoded event, so they are applied to events and reports, as are
//! `--container` and `--cgroup`, which need the owner's cgroup path: their
//! values are checked here ([`container_prefix`], [`cgroup_prefix`]) and
//! matched here ([`container_matches`], [`cgroup_matches`]).

use tcptrace_common::{
    TcpState,
    config::{FAMILY_V4, FAMILY_V6},
    ports::PortLists,
};
use thiserror::Error;

use crate::model::event::Event;

/// The userspace half of the filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comm: Option<String>,
    pub states: Vec<TcpState>,
}

impl Filter {
    /// Whether `ev` passes. Events whose owner is unknown never match a pid or
    /// comm filter: tcptrace does not guess owners.
    #[must_use]
    pub fn matches(&self, ev: &Event) -> bool {
        if !self.pids.is_empty() && !ev.owner().is_some_and(|o| self.pids.contains(&o.pid)) {
            return false;
        }
        if let Some(comm) = &self.comm
            && ev.owner().is_none_or(|o| &o.comm != comm)
        {
            return false;
        }
        if self.states.is_empty() {
            return true;
        }
        match ev {
            Event::State(s) => self.states.contains(&s.old) || self.states.contains(&s.new),
            Event::Reset(r) => r.state.is_some_and(|st| self.states.contains(&st)),
            Event::Failure(_) => false,
        }
    }
}

/// The family and port filters. Empty port lists mean "any".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortFilter {
    /// `FAMILY_V4 | FAMILY_V6` bits.
    pub families: u32,
    /// `--port`, `--lport`, `--rport`.
    pub ports: PortLists,
}

impl Default for PortFilter {
    fn default() -> Self {
        Self {
            families: FAMILY_V4 | FAMILY_V6,
            ports: PortLists::ANY,
        }
    }
}

impl PortFilter {
    /// The `families` bits for `-4`/`-6`: one family, or both.
    #[must_use]
    pub fn families(ipv4: bool, ipv6: bool) -> u32 {
        match (ipv4, ipv6) {
            (true, false) => FAMILY_V4,
            (false, true) => FAMILY_V6,
            _ => FAMILY_V4 | FAMILY_V6,
        }
    }

    /// Whether a socket of `family` (`AF_INET`/`AF_INET6`) with these ports
    /// passes: the rule the kernel side applies.
    #[must_use]
    pub fn accepts(&self, family: u16, lport: u16, rport: u16) -> bool {
        let p = &self.ports;
        tcptrace_common::config::accepts(
            self.families,
            &p.port,
            &p.lport,
            &p.rport,
            family,
            lport,
            rport,
        )
    }
}

/// Why a `--container` or `--cgroup` value is refused. Clap quotes the
/// value before the message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error(
        "an empty container id would match every container: give the first digits of \
         its id (`docker ps` shows 12)"
    )]
    EmptyContainer,
    #[error(
        "a path, not a container id: give the first digits of the id (`docker ps` \
         shows 12), or use --cgroup PATH for a cgroup"
    )]
    ContainerPath,
    #[error(
        "not a container id: hex digits (docker, containerd, CRI-O, podman) or a \
         systemd-nspawn machine name (letters, digits, '-', '_', '.')"
    )]
    ContainerChars,
    #[error(
        "an empty cgroup path: give one as /proc/PID/cgroup shows it after \"0::\" \
         (e.g. /system.slice)"
    )]
    EmptyCgroup,
    #[error(
        "a relative path: a cgroup path starts with '/', as /proc/PID/cgroup shows it \
         after \"0::\" (e.g. /system.slice)"
    )]
    RelativeCgroup,
    #[error(
        "starts with the cgroup2 mount point: give the path below it, as \
         /proc/PID/cgroup shows it (/system.slice, not /sys/fs/cgroup/system.slice)"
    )]
    CgroupMount,
    #[error("a '.' or '..' component, which no cgroup path has")]
    CgroupDots,
}

/// A `--container` value as [`container_matches`] takes it: the first
/// characters of a container id, without the `runtime://` that Kubernetes
/// puts before it (`containerd://ID` in a pod's `containerID`). Empty
/// prefixes (which would match every container) and paths are refused.
pub fn container_prefix(s: &str) -> Result<String, ScopeError> {
    let id = s.split_once("://").map_or(s, |(_, id)| id);
    if id.is_empty() {
        return Err(ScopeError::EmptyContainer);
    }
    if id.contains('/') {
        return Err(ScopeError::ContainerPath);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ScopeError::ContainerChars);
    }
    Ok(id.to_owned())
}

/// Whether container `id` (64 hex digits, or a machine name) starts with
/// `prefix`, ASCII case ignored: `ABC` and `abc` both match `abc123...`.
#[must_use]
pub fn container_matches(prefix: &str, id: &str) -> bool {
    id.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// A `--cgroup` value as [`cgroup_matches`] takes it: an absolute cgroup v2
/// path below the mount point, as `/proc/PID/cgroup` shows it after `0::`,
/// with repeated and trailing slashes dropped (`/` stays `/`: every cgroup).
pub fn cgroup_prefix(s: &str) -> Result<String, ScopeError> {
    if s.is_empty() {
        return Err(ScopeError::EmptyCgroup);
    }
    if !s.starts_with('/') {
        return Err(ScopeError::RelativeCgroup);
    }
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
    if parts.starts_with(&["sys", "fs", "cgroup"]) {
        return Err(ScopeError::CgroupMount);
    }
    if parts.iter().any(|p| matches!(*p, "." | "..")) {
        return Err(ScopeError::CgroupDots);
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Whether cgroup `path` is `prefix` or below it, on whole components:
/// `/system.slice` matches `/system.slice` and `/system.slice/docker-ID.scope`,
/// not `/system.slicer`; `/` matches every path.
#[must_use]
pub fn cgroup_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix.trim_end_matches('/'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests;
