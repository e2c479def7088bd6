//! What an analysis may use while it runs ([`Cx`]): the loaded object, the
//! output batch, and the host's network namespaces, each with its own
//! sock_diag socket, sysctls and netstat.

use aya::Ebpf;
use bytes::BytesMut;

use crate::{
    host::{
        netns::{Namespaces, NetnsError},
        netstat,
        sockdiag::{Diag, DiagError},
        sysctl,
    },
    model::{netns::Netns, sysctl::Sysctls},
};

pub struct Cx<'a> {
    /// The loaded object, for the map readers of `crate::kernel::maps`.
    pub ebpf: &'a Ebpf,
    /// The batch of standard output the runtime writes after each step.
    pub out: &'a mut BytesMut,
    /// The host's network namespaces. None when records carry no
    /// namespace (no kernel BTF) or they cannot be followed: then
    /// sock_diag, the sysctls and netstat answer for tcptrace's own.
    pub namespaces: Option<&'a mut Namespaces>,
    /// `--netns`: the one namespace traced.
    pub only: Option<Netns>,
}

/// Why a namespace could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Diag(#[from] DiagError),
}

impl AskError {
    /// The namespace went away while it was asked: not worth a warning
    /// (`Namespaces` counts it).
    #[must_use]
    pub fn vanished(&self) -> bool {
        matches!(
            self,
            AskError::Netns(NetnsError::Vanished(_) | NetnsError::Unknown(_))
        )
    }
}

impl Cx<'_> {
    /// The namespaces a poll or report looks into: `--netns`'s, else every
    /// one found; `[None]` (tcptrace's own) when namespaces are not followed.
    #[must_use]
    pub fn traced(&self) -> Vec<Option<Netns>> {
        match (&self.namespaces, self.only) {
            (None, _) => vec![None],
            (Some(_), Some(only)) => vec![Some(only)],
            (Some(n), None) => n.alive().map(Some).collect(),
        }
    }

    /// The namespace an event happened in, as polls and reports name it:
    /// None (tcptrace's own, unlabelled) when namespaces are not followed.
    #[must_use]
    pub fn place(&self, netns: Option<Netns>) -> Option<Netns> {
        let n = self.namespaces.as_ref()?;
        Some(netns.unwrap_or_else(|| n.own()))
    }

    /// The namespace whose reports are always shown: `--netns`'s, else
    /// tcptrace's own; None when namespaces are not followed.
    #[must_use]
    pub fn home(&self) -> Option<Netns> {
        let n = self.namespaces.as_ref()?;
        Some(self.only.unwrap_or_else(|| n.own()))
    }

    /// The namespace as reports name it apart from the others: Some only
    /// when it is not tcptrace's own.
    #[must_use]
    pub fn foreign(&self, netns: Option<Netns>) -> Option<Netns> {
        netns.filter(|ns| Some(*ns) != self.own())
    }

    /// The name of namespace `ns` under `/run/netns`, if it has one.
    #[must_use]
    pub fn netns_name(&self, ns: Netns) -> Option<&str> {
        self.namespaces.as_ref()?.name(ns)
    }

    /// tcptrace's own namespace, when namespaces are followed.
    #[must_use]
    pub fn own(&self) -> Option<Netns> {
        self.namespaces.as_ref().map(|n| n.own())
    }

    /// `f` with the sock_diag socket of namespace `ns` (None: tcptrace's
    /// own, through a socket made here).
    pub fn diag<T>(
        &mut self,
        ns: Option<Netns>,
        f: impl FnOnce(&Diag) -> Result<T, DiagError>,
    ) -> Result<T, AskError> {
        match (ns, self.namespaces.as_deref_mut()) {
            (Some(ns), Some(n)) => Ok(f(n.diag(ns)?)?),
            _ => Ok(f(&Diag::here()?)?),
        }
    }

    /// The TIME_WAIT sysctls of namespace `ns`, read inside it.
    pub fn sysctls(&mut self, ns: Option<Netns>) -> Result<Sysctls, AskError> {
        match (ns, self.namespaces.as_deref_mut()) {
            (Some(ns), Some(n)) => Ok(n.sysctls(ns)?),
            _ => Ok(sysctl::read(std::path::Path::new(sysctl::ROOT))),
        }
    }

    /// `TcpExtTCPTimeWaitOverflow` of namespace `ns`.
    pub fn timewait_overflow(&mut self, ns: Option<Netns>) -> Result<Option<u64>, AskError> {
        match (ns, self.namespaces.as_deref_mut()) {
            (Some(ns), Some(n)) => Ok(n.timewait_overflow(ns)?),
            _ => Ok(netstat::timewait_overflow()),
        }
    }
}
