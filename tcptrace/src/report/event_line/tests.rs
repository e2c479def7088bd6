//! Event line tests: the documented keys, the golden JSON lines, and the
//! text columns.

use tcptrace_common::TcpState;

use super::*;
use crate::{
    model::event::{Endpoints, Reset, StateChange},
    model::records::{decode, tests::raw_state},
};

pub(super) fn printer(format: Format) -> Printer {
    Printer::new(
        format,
        Clock::fixed(1_700_000_000_000_000_000),
        ResetReasons::from_pairs(vec![(14, "TCP_STATE".into())]),
    )
}

pub(super) fn state_event() -> Event {
    let raw = raw_state(TcpState::Established, TcpState::CloseWait);
    decode(&crate::model::records::as_bytes(&raw)).unwrap()
}

#[test]
fn json_state_has_the_documented_keys() {
    let mut out = BytesMut::new();
    printer(Format::Json).write(&state_event(), None, &mut out);
    assert!(out.ends_with(b"\n"));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["v"], 1);
    assert_eq!(v["type"], "state");
    assert_eq!(v["pid"], 42);
    assert_eq!(v["comm"], "server");
    assert_eq!(v["owner_source"], "io");
    assert_eq!(v["family"], "ipv4");
    assert_eq!(
        v["local"],
        serde_json::json!({"addr": "127.0.0.1", "port": 8080})
    );
    assert_eq!(
        v["remote"],
        serde_json::json!({"addr": "127.0.0.2", "port": 40000})
    );
    assert_eq!(v["old_state"], "ESTABLISHED");
    assert_eq!(v["new_state"], "CLOSE_WAIT");
    assert_eq!(v["dwell_ns"], 1_500_000);
    assert_eq!(v["time"], "2023-11-14T22:13:20.000001Z");
}

#[test]
fn json_unknown_owner_is_null_not_the_cpu_task() {
    let mut raw = raw_state(TcpState::Established, TcpState::CloseWait);
    raw.owner_source = 0;
    raw.dwell_ns = tcptrace_common::DWELL_UNKNOWN;
    let ev = decode(&crate::model::records::as_bytes(&raw)).unwrap();
    let mut out = BytesMut::new();
    printer(Format::Json).write(&ev, None, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["pid"].is_null());
    assert!(v["comm"].is_null());
    assert!(v["dwell_ns"].is_null());
    assert_eq!(v["owner_source"], "unknown");
}

#[test]
fn json_reset_has_direction_state_and_named_reason() {
    let ev = Event::Reset(Reset {
        netns: None,
        ts_ns: 0,
        skaddr: 0,
        cookie: 0,
        owner: None,
        endpoints: *state_event().endpoints().expect("a state event"),
        direction: crate::model::event::Direction::Sent,
        state: Some(TcpState::Established),
        reason: Some(14),
    });
    let mut out = BytesMut::new();
    printer(Format::Json).write(&ev, None, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["type"], "reset");
    assert_eq!(v["direction"], "sent");
    assert_eq!(v["state"], "ESTABLISHED");
    assert_eq!(v["reason"], "TCP_STATE");
    assert_eq!(v["reason_code"], 14);
}

/// An owner whose comm comes from raw kernel bytes, as `decode` makes it.
fn owner(pid: u32, raw_comm: &[u8], source: tcptrace_common::OwnerSource) -> Owner {
    let mut comm = [0u8; tcptrace_common::COMM_LEN];
    comm[..raw_comm.len()].copy_from_slice(raw_comm);
    let raw = tcptrace_common::Owner {
        tgid: pid,
        tid: pid + 1,
        comm,
    };
    Owner {
        cgroup: None,
        pid,
        tid: pid + 1,
        comm: raw.comm_lossy().to_string(),
        source,
    }
}

fn endpoints(local: &str, lport: u16, remote: &str, rport: u16) -> Endpoints {
    Endpoints {
        local: local.parse().unwrap(),
        lport,
        remote: remote.parse().unwrap(),
        rport,
    }
}

/// One of each shape of JSON line: v4 and v6, both reset directions,
/// known and unknown reasons, unknown owner and dwell, awkward comms.
fn golden_events() -> Vec<Event> {
    use tcptrace_common::OwnerSource as S;
    let v4 = endpoints("10.0.0.1", 8080, "192.168.255.0", 0);
    let v6 = endpoints("2001:db8::1", 65535, "::ffff:10.1.2.3", 443);
    vec![
        Event::State(StateChange {
            netns: None,
            ts_ns: 1_500_000_123,
            skaddr: 0xffff_8880_0000_1000,
            owner: Some(owner(42, b"server", S::Io)),
            endpoints: v4,
            old: TcpState::Established,
            new: TcpState::CloseWait,
            dwell: Some(Duration::from_micros(1_500)),
        }),
        Event::State(StateChange {
            netns: None,
            ts_ns: 0,
            skaddr: 0,
            owner: None,
            endpoints: v6,
            old: TcpState::Close,
            new: TcpState::SynSent,
            dwell: None,
        }),
        Event::State(StateChange {
            netns: None,
            ts_ns: u64::MAX / 4,
            skaddr: u64::MAX,
            owner: Some(owner(u32::MAX - 1, b"a\"b\\c\n\x01\x1f\x7f", S::Syscall)),
            endpoints: endpoints("::", 1, "::1", 2),
            old: TcpState::FinWait1,
            new: TcpState::TimeWait,
            dwell: Some(Duration::ZERO),
        }),
        Event::State(StateChange {
            netns: None,
            ts_ns: 999_999_999,
            skaddr: 0xabc,
            owner: Some(owner(1, b"\xff\xfeok\xc3\xa9\xe2\x82", S::Procfs)),
            endpoints: endpoints("fe80::1:0:0:2", 3, "1:0:0:2::", 4),
            old: TcpState::Listen,
            new: TcpState::NewSynRecv,
            dwell: Some(Duration::from_hours(24)),
        }),
        Event::Reset(Reset {
            netns: None,
            ts_ns: 2_000,
            skaddr: 0x10,
            cookie: 0,
            owner: Some(owner(7, b"\t\x08\x0c\r", S::Io)),
            endpoints: v4,
            direction: crate::model::event::Direction::Sent,
            state: Some(TcpState::Established),
            reason: Some(14),
        }),
        Event::Reset(Reset {
            netns: None,
            ts_ns: 3_000,
            skaddr: 0,
            cookie: 0,
            owner: None,
            endpoints: v6,
            direction: crate::model::event::Direction::Sent,
            state: None,
            reason: Some(99),
        }),
        Event::Reset(Reset {
            netns: None,
            ts_ns: 4_000,
            skaddr: 0xffff_8880_dead_beef,
            cookie: u64::MAX,
            owner: Some(owner(8, b"sixteen-bytes-xx", S::Syscall)),
            endpoints: v4,
            direction: crate::model::event::Direction::Received,
            state: Some(TcpState::LastAck),
            reason: None,
        }),
        Event::Reset(Reset {
            netns: None,
            ts_ns: 5_000,
            skaddr: 1,
            cookie: 12_345,
            owner: Some(owner(9, b"", S::Io)),
            endpoints: v6,
            direction: crate::model::event::Direction::Sent,
            state: Some(TcpState::SynRecv),
            reason: Some(15),
        }),
    ]
}

/// The JSON lines of `golden_events`, byte for byte: the schema is public.
/// The file holds a raw DEL and invalid-UTF-8 replacement characters.
const GOLDEN_JSON: &str = include_str!("testdata/golden.jsonl");

#[test]
fn json_lines_are_byte_for_byte_stable() {
    let p = Printer::new(
        Format::Json,
        Clock::fixed(1_700_000_000_000_000_000),
        ResetReasons::from_pairs(vec![(14, "TCP_STATE".into()), (15, "we\"ird\\".into())]),
    );
    let mut out = BytesMut::new();
    for ev in golden_events() {
        p.write(&ev, None, &mut out);
    }
    let out = String::from_utf8(out.to_vec()).unwrap();
    assert_eq!(out, GOLDEN_JSON);
}

#[test]
fn text_line_shows_owner_endpoints_transition_and_dwell() {
    let mut out = BytesMut::new();
    printer(Format::Text).write(&state_event(), None, &mut out);
    let out = String::from_utf8(out.to_vec()).unwrap();
    assert!(out.starts_with("22:13:20.000001 "), "{out}");
    assert!(out.contains(" 42 "), "{out}");
    assert!(out.contains("server"), "{out}");
    assert!(out.contains("127.0.0.1:8080"), "{out}");
    assert!(out.contains("127.0.0.2:40000"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("ESTABLISHED -> CLOSE_WAIT   1.50ms"),
        "{out}"
    );
}

#[test]
fn cached_second_formats_like_humantime() {
    let p = Printer::new(
        Format::Json,
        Clock::fixed(1_763_740_000_000_000_000),
        ResetReasons::default(),
    );
    // Within one second, across a second, backwards, and micros at both ends.
    for ts in [
        0u64,
        999,
        1_000,
        999_999_000,
        1_000_000_000,
        1_000_000_001,
        5,
        86_400_999_999_999,
    ] {
        let want = humantime::format_rfc3339_micros(p.clock.wall(ts)).to_string();
        assert_eq!(p.time(ts), want, "ts {ts}");
    }
}

/// The comm a hostile process can set with `prctl(PR_SET_NAME)`: ESC and a
/// screen clear, a line break, a quote, a backslash, a C1 CSI (U+009B).
const HOSTILE_COMM: &[u8] = b"\x1b[2J\n\"\\\r\xc2\x9b\x7f";

fn hostile_event() -> Event {
    Event::State(StateChange {
        netns: None,
        ts_ns: 1_000,
        skaddr: 0x10,
        owner: Some(owner(66, HOSTILE_COMM, tcptrace_common::OwnerSource::Io)),
        endpoints: endpoints("10.0.0.1", 8080, "10.0.0.2", 40000),
        old: TcpState::Established,
        new: TcpState::CloseWait,
        dwell: Some(Duration::from_millis(1)),
    })
}

#[test]
fn json_line_of_a_hostile_comm_is_valid_json() {
    let mut out = BytesMut::new();
    printer(Format::Json).write(&hostile_event(), None, &mut out);
    let line = std::str::from_utf8(&out).unwrap();
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    assert!(line.contains(r#""comm":"\u001b[2J\n\"\\\r"#), "{line:?}");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["comm"], "\x1b[2J\n\"\\\r\u{9b}\x7f");
    assert_eq!(v["new_state"], "CLOSE_WAIT");
}

#[test]
fn text_line_of_a_hostile_comm_has_no_control_character() {
    let mut out = BytesMut::new();
    printer(Format::Text).write(&hostile_event(), None, &mut out);
    let line = std::str::from_utf8(&out).unwrap();
    let body = line.strip_suffix('\n').unwrap();
    assert!(!body.chars().any(char::is_control), "{line:?}");
    assert!(
        body.contains(r#" 66      \x1b[2J\n"\\\r\u{9b}\x7f "#),
        "{line:?}"
    );
    assert!(
        body.ends_with("ESTABLISHED -> CLOSE_WAIT   1.00ms"),
        "{line:?}"
    );
}

/// Text lines name the container, else the namespace, of an event outside
/// tcptrace's own namespace, and nothing for its own; JSON always carries
/// both keys.
#[test]
fn foreign_namespaces_get_a_column_of_their_own() {
    let mut raw = raw_state(TcpState::Established, TcpState::CloseWait);
    raw.header.netns = 4_026_532_281;
    let foreign = decode(&crate::model::records::as_bytes(&raw)).unwrap();
    raw.header.netns = 4_026_531_840;
    let own = decode(&crate::model::records::as_bytes(&raw)).unwrap();
    let p = printer(Format::Text).with_own_netns(Some(Netns(4_026_531_840)));
    let line = |ev: &Event, c: Option<&str>| {
        let mut out = BytesMut::new();
        p.write(ev, c, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    };
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert!(
        line(&own, Some(id))
            .trim_end()
            .ends_with("CLOSE_WAIT   1.50ms")
    );
    assert!(
        line(&foreign, None)
            .trim_end()
            .ends_with("CLOSE_WAIT   1.50ms  netns=4026532281")
    );
    assert!(
        line(&foreign, Some(id))
            .trim_end()
            .ends_with("  container=0123456789ab")
    );
    let mut out = BytesMut::new();
    printer(Format::Json).write(&foreign, Some(id), &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["netns"], 4_026_532_281_u64);
    assert_eq!(v["container"], id);
}
