//! Decoder tests: every record kind, and every way a record can be bad.

use tcptrace_common::COMM_LEN;

use super::*;
use tcptrace_common::Addrs;

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
            netns: 0,
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
            netns: 0,
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

/// A failure record's `ret` is a negative errno; `i32::MIN`, which has no
/// negation, is a typed error like any other unknown errno.
#[test]
fn failure_records_decode_and_an_unnegatable_ret_is_an_error() {
    let raw = |syscall, ret| tcptrace_common::FailureEvent {
        header: Header {
            kind: RecordKind::Failure as u32,
            ..Header::default()
        },
        syscall,
        ret,
        ..tcptrace_common::FailureEvent::default()
    };
    let ok = decode(&as_bytes(&raw(SYSCALL_BIND, -EADDRINUSE)));
    assert!(matches!(
        ok,
        Ok(Event::Failure(Failure {
            call: FailedCall::BindInUse,
            ..
        }))
    ));
    assert_eq!(
        decode(&as_bytes(&raw(SYSCALL_CONNECT, i32::MIN))),
        Err(DecodeError::BadFailure {
            call: SYSCALL_CONNECT,
            errno: i32::MIN
        })
    );
}
