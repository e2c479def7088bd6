//! Typed events: what the kernel side reports, once decoded
//! (`crate::model::records` decodes the raw records into these).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use tcptrace_common::{AF_INET, AF_INET6, Addrs, Owner as RawOwner, OwnerSource, TcpState};
use thiserror::Error;

use crate::model::netns::Netns;

/// Why a record could not be decoded. No record is ever read past its end.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than its {need}-byte {what}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown TCP state {0}")]
    BadState(u32),
    #[error("unknown address family {0}")]
    BadFamily(u16),
    #[error("unknown reset direction {0}")]
    BadDirection(u32),
    #[error("unknown failed syscall {call} with errno {errno}")]
    BadFailure { call: u32, errno: i32 },
}

/// The process a socket belongs to, as far as tcptrace knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub source: OwnerSource,
    /// The owner's cgroup v2 id, as the kernel noted it with the owner; None
    /// where it did not (the mode keeps none, or the id was not noted).
    pub cgroup: Option<u64>,
}

impl Owner {
    /// The owner of a raw record, if the kernel side knew it.
    #[must_use]
    pub fn from_raw(o: &RawOwner, source: u32) -> Option<Self> {
        let source = OwnerSource::from_u32(source);
        (o.tgid != 0 && source != OwnerSource::Unknown).then(|| Owner {
            pid: o.tgid,
            tid: o.tid,
            comm: o.comm_lossy().to_string(),
            source,
            cgroup: None,
        })
    }
}

/// Local and remote endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub local: IpAddr,
    pub lport: u16,
    pub remote: IpAddr,
    pub rport: u16,
}

impl Endpoints {
    /// The endpoints of a raw record.
    pub fn from_raw(a: &Addrs) -> Result<Self, DecodeError> {
        let ip = |b: &[u8; 16]| -> Result<IpAddr, DecodeError> {
            match a.family {
                AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
                AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*b))),
                other => Err(DecodeError::BadFamily(other)),
            }
        };
        Ok(Self {
            local: ip(&a.saddr)?,
            lport: a.sport,
            remote: ip(&a.daddr)?,
            rport: a.dport,
        })
    }

    #[must_use]
    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub ts_ns: u64,
    /// The socket's network namespace; None when the kernel could not say.
    pub netns: Option<Netns>,
    pub skaddr: u64,
    pub owner: Option<Owner>,
    pub endpoints: Endpoints,
    pub old: TcpState,
    pub new: TcpState,
    /// Time spent in `old`; `None` when the socket predates the tracer.
    pub dwell: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

impl Direction {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    pub ts_ns: u64,
    /// The socket's network namespace; None for a RST that answered a
    /// segment no socket matched, or when the kernel could not say.
    pub netns: Option<Netns>,
    /// 0 when the RST answered a segment for which no socket exists.
    pub skaddr: u64,
    pub cookie: u64,
    pub owner: Option<Owner>,
    pub endpoints: Endpoints,
    pub direction: Direction,
    /// The socket's state, when the kernel had a socket.
    pub state: Option<TcpState>,
    /// `enum sk_rst_reason` for sent resets; received ones carry none.
    pub reason: Option<u32>,
}

/// Which syscall failed, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedCall {
    /// `bind()` returned EADDRINUSE.
    BindInUse,
    /// `connect()` returned EADDRNOTAVAIL.
    ConnectNoPort,
}

impl FailedCall {
    #[must_use]
    pub fn syscall(self) -> &'static str {
        match self {
            FailedCall::BindInUse => "bind",
            FailedCall::ConnectNoPort => "connect",
        }
    }

    #[must_use]
    pub fn errno(self) -> &'static str {
        match self {
            FailedCall::BindInUse => "EADDRINUSE",
            FailedCall::ConnectNoPort => "EADDRNOTAVAIL",
        }
    }
}

/// A `bind()` or `connect()` that failed for want of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub ts_ns: u64,
    /// The caller's network namespace; None when the kernel could not say.
    pub netns: Option<Netns>,
    /// The caller, from its own syscall (source [`OwnerSource::Syscall`]).
    pub owner: Owner,
    pub call: FailedCall,
    pub fd: u32,
    /// The address and port asked to bind, or the destination; None when
    /// the caller's sockaddr could not be read.
    pub addr: Option<(IpAddr, u16)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    State(StateChange),
    Reset(Reset),
    Failure(Failure),
}

impl Event {
    #[must_use]
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::State(s) => s.ts_ns,
            Event::Reset(r) => r.ts_ns,
            Event::Failure(f) => f.ts_ns,
        }
    }

    /// The network namespace the event happened in, if known.
    #[must_use]
    pub fn netns(&self) -> Option<Netns> {
        match self {
            Event::State(s) => s.netns,
            Event::Reset(r) => r.netns,
            Event::Failure(f) => f.netns,
        }
    }

    #[must_use]
    pub fn owner(&self) -> Option<&Owner> {
        match self {
            Event::State(s) => s.owner.as_ref(),
            Event::Reset(r) => r.owner.as_ref(),
            Event::Failure(f) => Some(&f.owner),
        }
    }

    #[must_use]
    pub fn owner_mut(&mut self) -> Option<&mut Owner> {
        match self {
            Event::State(s) => s.owner.as_mut(),
            Event::Reset(r) => r.owner.as_mut(),
            Event::Failure(f) => Some(&mut f.owner),
        }
    }

    /// The socket's endpoints; a failed syscall has none.
    #[must_use]
    pub fn endpoints(&self) -> Option<&Endpoints> {
        match self {
            Event::State(s) => Some(&s.endpoints),
            Event::Reset(r) => Some(&r.endpoints),
            Event::Failure(_) => None,
        }
    }
}
