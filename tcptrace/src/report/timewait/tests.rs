//! Timewait text tests: a comm a traced process chose reaches no line raw.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use serde_json::Value;

use super::*;
use crate::model::{
    event::{FailedCall, Failure, Owner},
    netns::Netns,
    timewait::{
        census::{PortGroup, project},
        lives::Tracker,
    },
};

/// A JSON line as a value, to look into.
fn val(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

/// ESC and a screen clear, a line break that starts a fake line, a quote,
/// a backslash.
const HOSTILE: &str = "\x1b[2J\nFake: \"\\";
/// [`HOSTILE`] as text output shows it.
const SHOWN: &str = "\\x1b[2J\\nFake: \"\\\\";

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

fn sysctls() -> Sysctls {
    Sysctls {
        port_range: Ok((40000, 40099)),
        reserved_ports: Ok(vec![]),
        tw_reuse: Ok(0),
        tw_reuse_delay_ms: None,
        timestamps: Ok(1),
        max_tw_buckets: Ok(262_144),
        fin_timeout_s: Ok(60),
        tw_recycle: None,
    }
}

fn dest() -> DestGroup {
    DestGroup {
        key: (ME, SERVER, 80),
        time_wait: 90,
        fin_wait2: 0,
        live: 0,
        rate_per_s: 40.0,
        closers: vec![(7, HOSTILE.into(), 90)],
        projection: project(&[50.0; 90], 0, 40.0, Some(100), 60.0, false),
        exhaustion_projected_ns: Some(1_000),
    }
}

fn failure(call: FailedCall) -> Failure {
    Failure {
        netns: None,
        ts_ns: 2_000,
        owner: Owner {
            cgroup: None,
            pid: 42,
            tid: 42,
            comm: HOSTILE.into(),
            source: tcptrace_common::OwnerSource::Syscall,
        },
        call,
        fd: 3,
        addr: Some((SERVER, 80)),
    }
}

/// Every line of `text`: no control character, none forged by the comm,
/// and the comm shown escaped.
fn assert_escaped(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(!text.lines().any(|l| l.starts_with("Fake")), "{text}");
    assert!(text.contains(SHOWN), "{text}");
}

#[test]
fn text_lines_escape_the_comms_of_traced_processes() {
    let times = Times(Clock::fixed(1_700_000_000_000_000_000));
    let snap = Snapshot {
        destinations: vec![dest()],
        local_ports: vec![PortGroup {
            lport: 80,
            time_wait: 3,
            fin_wait2: 0,
            rate_per_s: 1.0,
            closers: vec![(9, HOSTILE.into(), 3)],
            listening: true,
        }],
        time_wait: 93,
        fin_wait2: 0,
    };
    let binds = [BindFacts {
        pid: 42,
        comm: HOSTILE.into(),
        port: 80,
        count: 1,
        time_wait: 3,
        listeners: vec![(9, HOSTILE.into())],
    }];
    let connects = [ConnectFacts {
        pid: 43,
        comm: HOSTILE.into(),
        dest: (SERVER, 80),
        count: 2,
    }];
    let advice = [Advice {
        id: "x",
        text: format!("pid 7 ({HOSTILE}) closes first"),
    }];
    let report = CensusReport {
        times,
        now_ns: 3_000,
        final_report: true,
        netns: None,
        foreign: None,
        snap: &snap,
        tracker: &Tracker::default(),
        sysctls: &sysctls(),
        overflow: None,
        binds: &binds,
        connects: &connects,
        advice: &advice,
        failures_unavailable: None,
        forgotten: Forgotten::default(),
    }
    .text();
    assert_escaped(&report);
    assert_eq!(report.matches(SHOWN).count(), 5, "{report}");
    assert_escaped(&times.bind_failure_text(
        &failure(FailedCall::BindInUse),
        None,
        (SERVER, 80),
        (3, 0),
        1,
        &[(9, HOSTILE.into())],
    ));
    assert_escaped(&times.connect_failure_text(
        &failure(FailedCall::ConnectNoPort),
        None,
        (SERVER, 80),
        &[&dest()],
    ));
    assert_escaped(&times.projection_line(&dest(), 3_000, None));
}

/// A namespace other than tcptrace's own: its census starts with a header
/// line that names it (its `/run/netns` name escaped), its failure and
/// projection lines end with `netns=INODE`, and every JSON line carries
/// `netns`; tcptrace's own namespace gets neither header nor suffix.
#[test]
fn foreign_namespaces_are_named_in_text_and_json() {
    const NS: Netns = Netns(4_026_532_001);
    let times = Times(Clock::fixed(1_700_000_000_000_000_000));
    let snap = Snapshot::default();
    let (tracker, sysctls) = (Tracker::default(), sysctls());
    let report = |foreign: Option<(Netns, Option<&'static str>)>| CensusReport {
        times,
        now_ns: 3_000,
        final_report: false,
        netns: Some(NS),
        foreign,
        snap: &snap,
        tracker: &tracker,
        sysctls: &sysctls,
        overflow: Some(2),
        binds: &[],
        connects: &[],
        advice: &[],
        failures_unavailable: None,
        forgotten: Forgotten::default(),
    };
    let text = report(Some((NS, Some(HOSTILE)))).text();
    let first = text.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("Network namespace 4026532001 (/run/netns/{SHOWN}):"),
        "{text}"
    );
    assert_escaped(&text);
    assert!(
        text.lines()
            .nth(1)
            .unwrap_or_default()
            .contains("TIME_WAIT census at"),
        "{text}"
    );
    let own = report(None).text();
    assert!(own.starts_with("TIME_WAIT census at"), "{own}");
    assert_eq!(val(report(None).json())["netns"], 4_026_532_001u64);
    assert_eq!(val(report(None).json())["overflow"], 2);

    let f = failure(FailedCall::BindInUse);
    let line = times.bind_failure_text(&f, Some(NS), (SERVER, 80), (3, 0), 0, &[]);
    assert!(line.ends_with(" netns=4026532001\n"), "{line:?}");
    let line = times.bind_failure_text(&f, None, (SERVER, 80), (3, 0), 0, &[]);
    assert!(!line.contains("netns"), "{line:?}");
    let line = times.projection_line(&dest(), 3_000, Some(NS));
    assert!(line.ends_with(" netns=4026532001\n"), "{line:?}");
    let v = val(times.bind_failure_json(&f, Some(NS), (SERVER, 80), (3, 0), &[], |_| None));
    assert_eq!(v["netns"], 4_026_532_001u64);
    let v = val(times.connect_failure_json(&f, None, (SERVER, 80), &[]));
    assert!(v["netns"].is_null(), "namespaces not followed: {v}");
    assert_eq!(
        val(times.projection_json(&dest(), 3_000, Some(NS)))["netns"],
        4_026_532_001u64
    );
}

/// The keys of `v`, sorted.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// Every line names its type and version first, endpoints are
/// `{addr, port}` objects (null where aggregated) and durations are
/// integer nanoseconds.
#[test]
fn json_lines_follow_the_one_scheme() {
    let times = Times(Clock::fixed(1_700_000_000_000_000_000));
    let d = dest();
    let f = failure(FailedCall::BindInUse);
    let bind = times.bind_failure_json(&f, None, (SERVER, 80), (3, 0), &[], |_| None);
    let line = serde_json::to_string(&bind).unwrap();
    assert!(
        line.starts_with(r#"{"v":1,"type":"bind_failure","#),
        "{line}"
    );
    let v = val(&bind);
    assert_eq!(
        keys(&v),
        [
            "comm", "errno", "fd", "holders", "local", "netns", "pid", "tid", "time", "ts_ns",
            "type", "v"
        ]
    );
    assert_eq!(
        v["local"],
        serde_json::json!({"addr": "10.0.0.5", "port": 80})
    );

    let connect = val(times.connect_failure_json(
        &failure(FailedCall::ConnectNoPort),
        None,
        (SERVER, 80),
        &[&d],
    ));
    assert_eq!(connect["type"], "connect_failure");
    assert_eq!(
        connect["remote"],
        serde_json::json!({"addr": "10.0.0.5", "port": 80})
    );
    let census = &connect["census"][0];
    assert_eq!(
        census["local"],
        serde_json::json!({"addr": "10.0.0.1", "port": null})
    );
    assert_eq!(
        census["remote"],
        serde_json::json!({"addr": "10.0.0.5", "port": 80})
    );
    assert_eq!(census["exhaustion_projected_ts_ns"], 1_000);
    assert!(census["exhaustion_projected_time"].is_string(), "{census}");
    let eta = census["projection"]["eta_ns"].as_u64().expect("an integer");
    let eta_s = d.projection.eta_s.expect("heading for exhaustion");
    let want = Duration::from_secs_f64(eta_s).as_nanos();
    assert!(u128::from(eta).abs_diff(want) <= 1, "{eta} vs {eta_s}");

    let sysctls = sysctls();
    let (snap, tracker) = (Snapshot::default(), Tracker::default());
    let binds = [BindFacts {
        pid: 42,
        comm: "srv".into(),
        port: 80,
        count: 1,
        time_wait: 3,
        listeners: vec![],
    }];
    let report = val(CensusReport {
        times,
        now_ns: 3_000,
        final_report: false,
        netns: None,
        foreign: None,
        snap: &snap,
        tracker: &tracker,
        sysctls: &sysctls,
        overflow: None,
        binds: &binds,
        connects: &[],
        advice: &[],
        failures_unavailable: None,
        forgotten: Forgotten::default(),
    }
    .json());
    assert_eq!(
        (report["v"].as_u64(), report["report"].as_str()),
        (Some(1), Some("interval"))
    );
    assert_eq!(report["sysctls"]["tcp_fin_timeout_ns"], 60_000_000_000_u64);
    assert!(
        report["sysctls"]["tcp_tw_reuse_delay_ns"].is_null(),
        "not on this kernel"
    );
    assert_eq!(
        report["failures"]["bind"][0]["local"],
        serde_json::json!({"addr": null, "port": 80})
    );
}
