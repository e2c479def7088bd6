//! Filters. Family and ports are applied in the kernel (cheapest, before any
//! map work) and to what sock_diag finds; pid, comm and state need the owner
//! and the decoded event, so they are applied to events and reports.

use tcptrace_common::{
    TcpState,
    config::{FAMILY_V4, FAMILY_V6},
};

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

/// The family and port filters. Zero ports mean "any".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortFilter {
    /// `FAMILY_V4 | FAMILY_V6` bits.
    pub families: u32,
    /// Either endpoint's port must match.
    pub port: u16,
    /// The local port must match.
    pub lport: u16,
    /// The remote port must match.
    pub rport: u16,
}

impl Default for PortFilter {
    fn default() -> Self {
        Self {
            families: FAMILY_V4 | FAMILY_V6,
            port: 0,
            lport: 0,
            rport: 0,
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
        tcptrace_common::config::accepts(
            self.families,
            self.port,
            self.lport,
            self.rport,
            family,
            lport,
            rport,
        )
    }
}
