//! Advice tests: each item from the measured figures and sysctls that call for it.

use std::net::Ipv4Addr;

use super::*;
use crate::model::timewait::census::{DestGroup, PortGroup, project};

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

fn sysctls(reuse: u32) -> Sysctls {
    Sysctls {
        port_range: Ok((40000, 40099)),
        reserved_ports: Ok(vec![]),
        tw_reuse: Ok(reuse),
        tw_reuse_delay_ms: None,
        timestamps: Ok(1),
        max_tw_buckets: Ok(262_144),
        fin_timeout_s: Ok(60),
        tw_recycle: None,
    }
}

fn dest(rate: f64, tw: u64) -> DestGroup {
    let held = vec![50.0; usize::try_from(tw).unwrap()];
    DestGroup {
        key: (ME, SERVER, 80),
        time_wait: tw,
        fin_wait2: 0,
        live: 0,
        rate_per_s: rate,
        closers: vec![(7, "client".into(), tw)],
        projection: project(&held, 0, rate, Some(100), 60.0, false),
        exhaustion_projected_ns: None,
    }
}

fn run(
    census: &Snapshot,
    sysctls: &Sysctls,
    binds: &[BindFacts],
    connects: &[ConnectFacts],
    overflow: Option<u64>,
) -> Vec<Advice> {
    advise(&Facts {
        census,
        sysctls,
        binds,
        connects,
        overflow,
    })
}

fn bind_failure(time_wait: u64, listeners: Vec<(u32, String)>) -> [BindFacts; 1] {
    [BindFacts {
        pid: 42,
        comm: "server".into(),
        port: 7000,
        count: 1,
        time_wait,
        listeners,
    }]
}

fn ids(a: &[Advice]) -> Vec<&'static str> {
    a.iter().map(|a| a.id).collect()
}

#[test]
fn restart_failure_names_so_reuseaddr_with_the_facts() {
    let census = Snapshot::default();
    let s = sysctls(2);
    let binds = bind_failure(20, vec![]);
    let a = run(&census, &s, &binds, &[], Some(0));
    assert_eq!(ids(&a), vec!["so_reuseaddr"]);
    assert!(a[0].text.contains("port 7000"), "{}", a[0].text);
    assert!(a[0].text.contains("20 TIME_WAIT"), "{}", a[0].text);
    assert!(a[0].text.contains("pid 42"), "{}", a[0].text);
}

#[test]
fn a_live_listener_is_not_a_reuseaddr_problem() {
    let census = Snapshot::default();
    let s = sysctls(2);
    let binds = bind_failure(0, vec![(41, "server".into())]);
    let a = run(&census, &s, &binds, &[], None);
    assert_eq!(ids(&a), vec!["port_in_use"]);
    assert!(a[0].text.contains("pid 41"));
}

#[test]
fn exhaustion_advice_depends_on_the_sysctls() {
    let census = Snapshot {
        destinations: vec![dest(40.0, 90)],
        time_wait: 90,
        ..Snapshot::default()
    };
    let connects = [ConnectFacts {
        pid: 7,
        comm: "client".into(),
        dest: (SERVER, 80),
        count: 3,
    }];
    let s = sysctls(0);
    let a = run(&census, &s, &[], &connects, Some(0));
    assert_eq!(ids(&a), vec!["keepalive", "tcp_tw_reuse", "port_range"]);
    assert!(a[0].text.contains("10.0.0.5:80"), "{}", a[0].text);
    assert!(a[0].text.contains("failed 3 time"), "{}", a[0].text);
    assert!(a[1].text.contains("tcp_tw_reuse is 0"), "{}", a[1].text);
    assert!(a[2].text.contains("40000 40099"), "{}", a[2].text);
    // 2 is loopback only: 10.0.0.5 is not.
    let s = sysctls(2);
    let a = run(&census, &s, &[], &connects, None);
    assert!(a[1].text.contains("loopback only"), "{}", a[1].text);
    // Reuse already applies: not suggested again.
    let s = sysctls(1);
    let a = run(&census, &s, &[], &connects, None);
    assert!(!ids(&a).contains(&"tcp_tw_reuse"));
    for adv in &a {
        assert!(!adv.text.contains("tcp_tw_recycle"), "never suggested");
    }
}

#[test]
fn server_side_time_wait_says_who_closes_first() {
    let census = Snapshot {
        local_ports: vec![PortGroup {
            lport: 8080,
            time_wait: 12,
            fin_wait2: 0,
            rate_per_s: 3.0,
            closers: vec![(9, "httpd".into(), 12)],
            listening: true,
        }],
        time_wait: 12,
        ..Snapshot::default()
    };
    let s = sysctls(2);
    let a = run(&census, &s, &[], &[], None);
    assert_eq!(ids(&a), vec!["client_close_first"]);
    assert!(a[0].text.contains("pid 9 (httpd)"), "{}", a[0].text);
    assert!(a[0].text.contains("keep-alive"), "{}", a[0].text);
    assert!(a[0].text.contains("SO_REUSEADDR"), "{}", a[0].text);
}

#[test]
fn overflow_and_a_recycle_sysctl_are_flagged() {
    let census = Snapshot::default();
    let mut s = sysctls(0);
    s.tw_recycle = Some(1);
    let a = run(&census, &s, &[], &[], Some(5));
    assert_eq!(ids(&a), vec!["tcp_tw_recycle", "max_tw_buckets"]);
    assert!(a[0].text.contains("removed"), "{}", a[0].text);
    assert!(a[1].text.contains("5 connection"), "{}", a[1].text);
    // No overflow, nothing measured: no advice at all.
    let s = sysctls(0);
    let a = run(&census, &s, &[], &[], Some(0));
    assert!(a.is_empty(), "{a:?}");
}
