//! Decoding the kernel side's raw records (ring buffers, per-CPU logs) into
//! [`Event`]s, with a length check first: no record is read past its end,
//! and anything malformed is a typed [`DecodeError`].

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use tcptrace_common::{
    AF_INET, AF_INET6, DWELL_UNKNOWN, EADDRINUSE, EADDRNOTAVAIL, FailureEvent, Header,
    Owner as RawOwner, OwnerSource, RESET_REASON_NONE, RST_RECEIVED, RST_SENT, RecordKind,
    ResetEvent, SYSCALL_BIND, SYSCALL_CONNECT, StateEvent, StateLine, TcpState, user::Plain,
};

use crate::model::{
    event::{
        DecodeError, Direction, Endpoints, Event, FailedCall, Failure, Owner, Reset, StateChange,
    },
    netns::Netns,
};

/// A header's namespace: 0 is unknown.
fn netns(h: &Header) -> Option<Netns> {
    (h.netns != 0).then_some(Netns(h.netns))
}

/// Copy a `T` out of the front of `buf`, checking its length first.
fn read<T: Plain>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Truncated {
            what,
            need,
            got: buf.len(),
        });
    }
    // SAFETY: `buf` holds at least size_of::<T>() bytes, `T: Plain` accepts any
    // bit pattern, and read_unaligned copes with the ring buffer's 8-byte
    // alignment not matching T's.
    Ok(unsafe { buf.as_ptr().cast::<T>().read_unaligned() })
}

fn state(v: u32) -> Result<TcpState, DecodeError> {
    TcpState::from_u32(v).ok_or(DecodeError::BadState(v))
}

/// Decode a state record, from the ring buffer or a per-CPU log
/// (`crate::kernel::cpulog`).
pub fn decode_state(r: &StateEvent) -> Result<StateChange, DecodeError> {
    Ok(StateChange {
        ts_ns: r.header.ts_ns,
        netns: netns(&r.header),
        skaddr: r.skaddr,
        owner: Owner::from_raw(&r.owner, r.owner_source),
        endpoints: Endpoints::from_raw(&r.addrs)?,
        old: state(r.old_state)?,
        new: state(r.new_state)?,
        dwell: (r.dwell_ns != DWELL_UNKNOWN).then(|| Duration::from_nanos(r.dwell_ns)),
    })
}

/// Decode an IPv4 state record in one line; its owner has no comm yet
/// (the comm cache joins it).
fn decode_state_line(r: &StateLine) -> Result<StateChange, DecodeError> {
    let owner = RawOwner {
        tgid: r.tgid,
        tid: r.tid,
        comm: [0; tcptrace_common::COMM_LEN],
    };
    let v4 = |b: [u8; 4]| IpAddr::V4(Ipv4Addr::from(b));
    Ok(StateChange {
        ts_ns: r.header.ts_ns,
        netns: netns(&r.header),
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
                netns: netns(&r.header),
                skaddr: r.skaddr,
                cookie: r.cookie,
                owner: Owner::from_raw(&r.owner, r.owner_source),
                endpoints: Endpoints::from_raw(&r.addrs)?,
                direction,
                state: TcpState::from_u32(r.state),
                reason: (direction == Direction::Sent && r.reason != RESET_REASON_NONE)
                    .then_some(r.reason),
            }))
        }
        RecordKind::Failure => {
            let r: FailureEvent = read(buf, "failure record")?;
            // `ret` is the kernel's -errno; i32::MIN has no negation and
            // stays as it is, which no errno matches.
            let call = match (r.syscall, r.ret.wrapping_neg()) {
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
                netns: netns(&r.header),
                owner: Owner {
                    pid: r.owner.tgid,
                    tid: r.owner.tid,
                    comm: r.owner.comm_lossy().to_string(),
                    source: OwnerSource::Syscall,
                    cgroup: None,
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
pub fn as_bytes<T: Plain>(v: &T) -> Vec<u8> {
    // SAFETY: `T: Plain` has no padding and no invalid bit patterns; we copy
    // exactly size_of::<T>() bytes from a valid reference.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod props;
#[cfg(test)]
pub(crate) mod tests;
