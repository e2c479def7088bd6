//! Typed events decoded from ring-buffer records, and the checked decoder.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use tcptrace_common::{
    AF_INET, AF_INET6, Addrs, DWELL_UNKNOWN, EADDRINUSE, EADDRNOTAVAIL, FailureEvent, Header,
    Owner as RawOwner, OwnerSource, RST_RECEIVED, RST_SENT, RecordKind, ResetEvent, SYSCALL_BIND,
    SYSCALL_CONNECT, StateEvent, StateLine, TcpState,
};
use thiserror::Error;

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
}

impl Owner {
    fn from_raw(o: &RawOwner, source: u32) -> Option<Self> {
        let source = OwnerSource::from_u32(source);
        (o.tgid != 0 && source != OwnerSource::Unknown).then(|| Owner {
            pid: o.tgid,
            tid: o.tid,
            comm: o.comm_lossy().to_string(),
            source,
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
    fn from_raw(a: &Addrs) -> Result<Self, DecodeError> {
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

/// Copy a `T` out of the front of `buf`, checking its length first.
fn read<T: aya::Pod>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Truncated {
            what,
            need,
            got: buf.len(),
        });
    }
    // SAFETY: `buf` holds at least size_of::<T>() bytes, `T: Pod` accepts any
    // bit pattern, and read_unaligned copes with the ring buffer's 8-byte
    // alignment not matching T's.
    Ok(unsafe { buf.as_ptr().cast::<T>().read_unaligned() })
}

fn state(v: u32) -> Result<TcpState, DecodeError> {
    TcpState::from_u32(v).ok_or(DecodeError::BadState(v))
}

/// Decode a state record, from the ring buffer or a per-CPU log
/// (`crate::cpulog`).
pub fn decode_state(r: &StateEvent) -> Result<StateChange, DecodeError> {
    Ok(StateChange {
        ts_ns: r.header.ts_ns,
        skaddr: r.skaddr,
        owner: Owner::from_raw(&r.owner, r.owner_source),
        endpoints: Endpoints::from_raw(&r.addrs)?,
        old: state(r.old_state)?,
        new: state(r.new_state)?,
        dwell: (r.dwell_ns != DWELL_UNKNOWN).then(|| Duration::from_nanos(r.dwell_ns)),
    })
}

/// Decode an IPv4 state record in one line; its owner has no comm yet
/// (`crate::cpulog::CommCache::name_owner` joins it).
fn decode_state_line(r: &StateLine) -> Result<StateChange, DecodeError> {
    let owner = RawOwner {
        tgid: r.tgid,
        tid: r.tid,
        comm: [0; tcptrace_common::COMM_LEN],
    };
    let v4 = |b: [u8; 4]| IpAddr::V4(Ipv4Addr::from(b));
    Ok(StateChange {
        ts_ns: r.header.ts_ns,
        skaddr: r.skaddr,
        owner: Owner::from_raw(&owner, u32::from(r.owner_source)),
        endpoints: Endpoints {
            local: v4(r.saddr),
            lport: r.sport,
            remote: v4(r.daddr),
            rport: r.dport,
        },
        old: state(r.old_state.into())?,
        new: state(r.new_state.into())?,
        dwell: (r.dwell_ns != DWELL_UNKNOWN).then(|| Duration::from_nanos(r.dwell_ns)),
    })
}

/// Decode one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let header: Header = read(buf, "header")?;
    let kind = RecordKind::try_from(header.kind).map_err(|e| DecodeError::UnknownKind(e.0))?;
    match kind {
        RecordKind::State => decode_state(&read(buf, "state record")?).map(Event::State),
        RecordKind::StateLine => {
            decode_state_line(&read(buf, "state line record")?).map(Event::State)
        }
        RecordKind::Reset => {
            let r: ResetEvent = read(buf, "reset record")?;
            let direction = match r.direction {
                RST_SENT => Direction::Sent,
                RST_RECEIVED => Direction::Received,
                other => return Err(DecodeError::BadDirection(other)),
            };
            Ok(Event::Reset(Reset {
                ts_ns: r.header.ts_ns,
                skaddr: r.skaddr,
                cookie: r.cookie,
                owner: Owner::from_raw(&r.owner, r.owner_source),
                endpoints: Endpoints::from_raw(&r.addrs)?,
                direction,
                state: TcpState::from_u32(r.state),
                reason: (direction == Direction::Sent).then_some(r.reason),
            }))
        }
        RecordKind::Failure => {
            let r: FailureEvent = read(buf, "failure record")?;
            let call = match (r.syscall, -r.ret) {
                (SYSCALL_BIND, EADDRINUSE) => FailedCall::BindInUse,
                (SYSCALL_CONNECT, EADDRNOTAVAIL) => FailedCall::ConnectNoPort,
                (call, errno) => return Err(DecodeError::BadFailure { call, errno }),
            };
            let addr = match r.family {
                AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                    r.addr[0], r.addr[1], r.addr[2], r.addr[3],
                ))),
                AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(r.addr))),
                _ => None,
            };
            Ok(Event::Failure(Failure {
                ts_ns: r.header.ts_ns,
                owner: Owner {
                    pid: r.owner.tgid,
                    tid: r.owner.tid,
                    comm: r.owner.comm_lossy().to_string(),
                    source: OwnerSource::Syscall,
                },
                call,
                fd: r.fd,
                addr: addr.map(|a| (a, r.port)),
            }))
        }
    }
}

/// Raw record bytes, for tests and benchmarks that feed the decoder.
#[must_use]
pub fn as_bytes<T: aya::Pod>(v: &T) -> Vec<u8> {
    // SAFETY: `T: Pod` has no padding and no invalid bit patterns; we copy
    // exactly size_of::<T>() bytes from a valid reference.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
pub(crate) mod tests {
    use tcptrace_common::COMM_LEN;

    use super::*;

    pub(crate) fn comm(name: &str) -> [u8; COMM_LEN] {
        let mut c = [0u8; COMM_LEN];
        c[..name.len()].copy_from_slice(name.as_bytes());
        c
    }

    pub(crate) fn raw_state(old: TcpState, new: TcpState) -> StateEvent {
        let mut addrs = Addrs {
            family: AF_INET,
            sport: 8080,
            dport: 40000,
            ..Addrs::default()
        };
        addrs.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        addrs.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        StateEvent {
            header: Header {
                kind: RecordKind::State as u32,
                cpu: 0,
                ts_ns: 1_000,
            },
            skaddr: 0xffff_8880_0000_1000,
            dwell_ns: 1_500_000,
            owner: RawOwner {
                tgid: 42,
                tid: 43,
                comm: comm("server"),
            },
            addrs,
            old_state: old as u32,
            new_state: new as u32,
            owner_source: OwnerSource::Io as u32,
            _pad: 0,
        }
    }

    #[test]
    fn decodes_a_state_record() {
        let raw = raw_state(TcpState::Established, TcpState::CloseWait);
        let Event::State(s) = decode(&as_bytes(&raw)).unwrap() else {
            panic!("not a state event")
        };
        assert_eq!(s.old, TcpState::Established);
        assert_eq!(s.new, TcpState::CloseWait);
        assert_eq!(s.dwell, Some(Duration::from_micros(1500)));
        assert_eq!(s.endpoints.local, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(s.endpoints.lport, 8080);
        let owner = s.owner.unwrap();
        assert_eq!(
            (owner.pid, owner.tid, owner.comm.as_str()),
            (42, 43, "server")
        );
    }

    /// An IPv6 transition in a per-CPU state ring comes padded to two
    /// cache lines: it decodes like the bare record.
    #[test]
    fn decodes_a_padded_state_record() {
        let raw = raw_state(TcpState::SynSent, TcpState::Established);
        let padded = tcptrace_common::PaddedStateEvent {
            event: raw,
            _pad: u64::MAX,
        };
        let bytes = as_bytes(&padded);
        assert_eq!(
            bytes.len() + 8,
            128,
            "two cache lines with the ring's header"
        );
        assert_eq!(decode(&bytes), decode(&as_bytes(&raw)));
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn unknown_dwell_and_owner_decode_as_none() {
        let mut raw = raw_state(TcpState::Established, TcpState::CloseWait);
        raw.dwell_ns = DWELL_UNKNOWN;
        raw.owner_source = OwnerSource::Unknown as u32;
        let Event::State(s) = decode(&as_bytes(&raw)).unwrap() else {
            panic!()
        };
        assert_eq!(s.dwell, None);
        assert_eq!(s.owner, None);
    }

    /// The one-line IPv4 record decodes to the same transition as the full
    /// record, without the comm (joined later from the comm cache); a bad
    /// state or a short record is a typed error.
    #[test]
    fn decodes_a_state_line_record() {
        let full = raw_state(TcpState::Established, TcpState::CloseWait);
        let line = StateLine {
            header: Header {
                kind: RecordKind::StateLine as u32,
                ..full.header
            },
            skaddr: full.skaddr,
            dwell_ns: full.dwell_ns,
            tgid: 42,
            tid: 43,
            sport: 8080,
            dport: full.addrs.dport,
            saddr: [127, 0, 0, 1],
            daddr: [
                full.addrs.daddr[0],
                full.addrs.daddr[1],
                full.addrs.daddr[2],
                full.addrs.daddr[3],
            ],
            old_state: TcpState::Established as u8,
            new_state: TcpState::CloseWait as u8,
            owner_source: OwnerSource::Io as u8,
            _pad: 0,
        };
        let Event::State(got) = decode(&as_bytes(&line)).unwrap() else {
            panic!("not a state event")
        };
        let Event::State(want) = decode(&as_bytes(&full)).unwrap() else {
            panic!("not a state event")
        };
        let owner = got.owner.clone().expect("an owner");
        assert_eq!((owner.pid, owner.tid, owner.comm.as_str()), (42, 43, ""));
        assert_eq!(owner.source, OwnerSource::Io);
        assert_eq!(
            StateChange { owner: None, ..got },
            StateChange {
                owner: None,
                ..want
            }
        );

        let bad = StateLine {
            new_state: 13,
            ..line
        };
        assert_eq!(decode(&as_bytes(&bad)), Err(DecodeError::BadState(13)));
        assert_eq!(
            decode(&as_bytes(&line)[..40]),
            Err(DecodeError::Truncated {
                what: "state line record",
                need: 56,
                got: 40
            })
        );
    }

    #[test]
    fn truncated_records_are_typed_errors() {
        let bytes = as_bytes(&raw_state(TcpState::Established, TcpState::FinWait1));
        assert_eq!(
            decode(&bytes[..8]),
            Err(DecodeError::Truncated {
                what: "header",
                need: 16,
                got: 8
            })
        );
        assert_eq!(
            decode(&bytes[..100]),
            Err(DecodeError::Truncated {
                what: "state record",
                need: 112,
                got: 100
            })
        );
        assert!(matches!(
            decode(&[]),
            Err(DecodeError::Truncated { got: 0, .. })
        ));
    }

    #[test]
    fn unknown_kind_state_family_and_direction_are_typed_errors() {
        let mut raw = raw_state(TcpState::Established, TcpState::FinWait1);
        raw.header.kind = 77;
        assert_eq!(decode(&as_bytes(&raw)), Err(DecodeError::UnknownKind(77)));

        let mut raw = raw_state(TcpState::Established, TcpState::FinWait1);
        raw.new_state = 13;
        assert_eq!(decode(&as_bytes(&raw)), Err(DecodeError::BadState(13)));

        let mut raw = raw_state(TcpState::Established, TcpState::FinWait1);
        raw.addrs.family = 1;
        assert_eq!(decode(&as_bytes(&raw)), Err(DecodeError::BadFamily(1)));

        let reset = ResetEvent {
            header: Header {
                kind: RecordKind::Reset as u32,
                ..Header::default()
            },
            addrs: raw_state(TcpState::Close, TcpState::Close).addrs,
            direction: 9,
            ..ResetEvent::default()
        };
        assert_eq!(decode(&as_bytes(&reset)), Err(DecodeError::BadDirection(9)));
    }

    #[test]
    fn decodes_reset_records_of_both_directions() {
        let mut r = ResetEvent {
            header: Header {
                kind: RecordKind::Reset as u32,
                cpu: 1,
                ts_ns: 5,
            },
            addrs: Addrs {
                family: AF_INET6,
                sport: 1,
                dport: 2,
                ..Addrs::default()
            },
            direction: RST_SENT,
            state: 0,
            reason: 1,
            ..ResetEvent::default()
        };
        r.addrs.saddr[15] = 1;
        let Event::Reset(s) = decode(&as_bytes(&r)).unwrap() else {
            panic!()
        };
        assert_eq!(s.direction, Direction::Sent);
        assert_eq!(s.state, None);
        assert_eq!(s.reason, Some(1));
        assert_eq!(s.endpoints.local, IpAddr::V6(Ipv6Addr::LOCALHOST));

        r.direction = RST_RECEIVED;
        r.state = TcpState::Established as u32;
        let Event::Reset(s) = decode(&as_bytes(&r)).unwrap() else {
            panic!()
        };
        assert_eq!(s.direction, Direction::Received);
        assert_eq!(s.state, Some(TcpState::Established));
        assert_eq!(s.reason, None);
    }
}
