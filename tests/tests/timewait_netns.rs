//! `--timewait` and `--hist` across network namespaces, as root: one
//! tcptrace in the host namespace follows the TIME_WAIT of every namespace
//! (each test's own, made fresh), through each namespace's own sock_diag
//! socket, sysctls and netstat. Tuples collide across namespaces
//! (127.0.0.1:PORT exists in each), so every figure must be the one of the
//! namespace it names. Each run is limited with `--port` to stay clear of
//! the machine's other traffic.

use std::{os::unix::fs::MetadataExt as _, process::Command, time::Duration};

use integration_tests::{
    ModeTracer, lab,
    scenario::{Clients, active_closes, failed_restart},
    tracer_bin,
};
use serde_json::Value;

/// How long to wait for a line that should come within a poll or two.
const SOON: Duration = Duration::from_secs(10);

/// tcptrace in the host namespace (this test's), following every one.
fn host_tracer(mode: &str, args: &[&str]) -> ModeTracer {
    ModeTracer::start_with(Command::new(tracer_bin()), mode, args)
}

/// The inode of the host namespace, the one this test runs in.
fn host_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .expect("stat /proc/self/ns/net")
        .ino()
}

/// The lines of `kind` (a JSON `type`) about namespace `inode`.
fn of_netns<'a>(lines: &'a [Value], kind: &str, inode: u64) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == kind && v["netns"] == inode)
        .collect()
}

/// The one final `timewait_report` of namespace `inode`.
fn final_report(lines: &[Value], inode: u64) -> Value {
    let finals: Vec<&Value> = of_netns(lines, "timewait_report", inode)
        .into_iter()
        .filter(|v| v["report"] == "final")
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "one final census of netns {inode} in {lines:#?}"
    );
    finals[0].clone()
}

/// The ids of a report's advice.
fn advice_ids(report: &Value) -> Vec<&str> {
    report["advice"]
        .as_array()
        .expect("advice is an array")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect()
}

/// Test 1: ports run out in namespace B, whose `ip_local_port_range` is 150
/// ports wide with `tcp_tw_reuse=0` (the host's is neither). The failed
/// connect, the census and the advice all come with B's inode and B's
/// sysctls; the host's census has none of it.
#[test]
fn exhaustion_in_a_namespace_is_explained_with_its_own_sysctls() {
    let addr = "127.0.0.1:29811";
    let b = lab!();
    b.sysctl("net.ipv4.ip_local_port_range", "40000 40149");
    b.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let (ns, host) = (b.ns.inode(), host_inode());
    let tracer = host_tracer("--timewait", &["--json", "-i", "1", "--port", "29811"]);
    let _server = b.server(&[
        "--addr",
        addr,
        "--connections",
        "300",
        "--wait-peer-close",
        "--timeout-ms",
        "30000",
    ]);
    let mut client = b.client(&[
        "--addr",
        addr,
        "--connections",
        "300",
        "--one-by-one",
        "--pace-ms",
        "25",
        "--timeout-ms",
        "30000",
    ]);
    let line = client.wait_line("connect-error");
    assert!(
        line.starts_with("connect-error 99 "),
        "EADDRNOTAVAIL: {line}"
    );

    let failure = tracer
        .wait_for_json(SOON, |v| v["type"] == "connect_failure")
        .unwrap_or_else(|| panic!("no connect failure: {:#?}", tracer.json_lines()));
    assert_eq!(failure["netns"], ns, "B's inode: {failure}");
    assert_eq!(failure["pid"], client.pid(), "{failure}");
    let census = &failure["census"][0];
    assert_eq!(
        census["projection"]["usable_ports"], 150,
        "B's range, not the host's: {failure}"
    );
    assert_eq!(census["projection"]["exhaustion"], true, "{failure}");
    let lines = tracer.json_lines();
    let projection = of_netns(&lines, "projection", ns);
    assert!(
        !projection.is_empty(),
        "exhaustion announced for B: {lines:#?}"
    );

    let run = tracer.stop();
    run.assert_clean_exit();
    let lines = run.json_lines();
    let report = final_report(&lines, ns);
    assert_eq!(report["sysctls"]["usable_ports"], 150, "{report:#}");
    assert_eq!(
        report["sysctls"]["ip_local_port_range"],
        serde_json::json!([40000, 40149]),
        "{report:#}"
    );
    assert_eq!(report["sysctls"]["tcp_tw_reuse"], 0, "{report:#}");
    assert_eq!(
        report["failures"]["connect"][0]["pid"],
        client.pid(),
        "{report:#}"
    );
    let ids = advice_ids(&report);
    for id in ["port_range", "tcp_tw_reuse", "keepalive"] {
        assert!(ids.contains(&id), "advice {id} for B: {report:#}");
    }
    let range = report["advice"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == "port_range"))
        .map(|a| a["text"].to_string())
        .unwrap_or_default();
    assert!(range.contains("40000 40149"), "{range}");

    // The host's census: its own sysctls, and nothing of B's.
    let home = final_report(&lines, host);
    assert_ne!(home["sysctls"]["usable_ports"], 150, "{home:#}");
    assert_eq!(
        home["destinations"].as_array().map(Vec::len),
        Some(0),
        "B's destination is B's alone: {home:#}"
    );
    assert!(advice_ids(&home).is_empty(), "{home:#}");
    assert!(
        lines.iter().all(|v| v["netns"] == ns || v["netns"] == host),
        "only B and the host have anything to say: {lines:#?}"
    );
}

/// Test 2: the same restart in namespaces C and D, on the same address:
/// 5 TIME_WAIT on C's port, 2 on D's. Each failed bind gets the exact
/// count of its own namespace, and each census and advice its own.
#[test]
fn restart_failures_count_the_timewait_of_their_own_namespace() {
    let addr = "127.0.0.1:29821";
    let (c, d) = (lab!(), lab!());
    let (c_ns, d_ns) = (c.ns.inode(), d.ns.inode());
    let tracer = host_tracer("--timewait", &["--json", "-i", "1", "--port", "29821"]);
    let (c_server, c_restarted) = failed_restart(&c, addr, 5);
    let (_, d_restarted) = failed_restart(&d, addr, 2);
    let bind_in = |ns: u64| {
        tracer
            .wait_for_json(SOON, |v| v["type"] == "bind_failure" && v["netns"] == ns)
            .unwrap_or_else(|| panic!("no bind failure in {ns}: {:#?}", tracer.json_lines()))
    };
    let (in_c, in_d) = (bind_in(c_ns), bind_in(d_ns));
    assert_eq!(in_c["pid"], c_restarted.pid(), "{in_c}");
    assert_eq!(in_c["holders"]["time_wait"], 5, "C's sockets only: {in_c}");
    assert_eq!(in_d["pid"], d_restarted.pid(), "{in_d}");
    assert_eq!(in_d["holders"]["time_wait"], 2, "D's sockets only: {in_d}");

    let run = tracer.stop();
    run.assert_clean_exit();
    let lines = run.json_lines();
    for (ns, n, restarted) in [(c_ns, 5, &c_restarted), (d_ns, 2, &d_restarted)] {
        let report = final_report(&lines, ns);
        let port = report["local_ports"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["local"]["port"] == 29821))
            .unwrap_or_else(|| panic!("no census of port 29821: {report:#}"));
        assert_eq!(port["time_wait"], n, "{report:#}");
        let so = report["advice"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == "so_reuseaddr"))
            .map_or_else(
                || panic!("no so_reuseaddr advice: {report:#}"),
                |a| a["text"].to_string(),
            );
        assert!(so.contains(&format!("{n} TIME_WAIT")), "{so}");
        assert!(so.contains(&format!("pid {}", restarted.pid())), "{so}");
    }
    let c_report = final_report(&lines, c_ns);
    assert_eq!(
        c_report["local_ports"][0]["closers"][0]["pid"], c_server,
        "{c_report:#}"
    );
}

/// Test 3: `tcp_max_tw_buckets` is 2 in namespace B and 6 clients close
/// first: 4 closes skip TIME_WAIT. `--timewait` and `--hist` count the 4
/// overflows for B, none for the host, and advise on it for B only.
#[test]
fn timewait_overflow_is_counted_for_its_namespace() {
    const CLOSES: usize = 6;
    let b = lab!();
    b.sysctl("net.ipv4.tcp_max_tw_buckets", "2");
    let (ns, host) = (b.ns.inode(), host_inode());
    let tracer = host_tracer(
        "--timewait",
        &["--hist", "--json", "-i", "1", "--port", "29831"],
    );
    let _ = active_closes(
        &b,
        "127.0.0.1:29831",
        CLOSES,
        Duration::ZERO,
        Clients::OneByOne,
    );
    assert_eq!(b.ss_count("time-wait", &["dport", "=", ":29831"]), 2);
    let overflowed = CLOSES as u64 - 2;
    let census = tracer.wait_for_json(SOON, |v| {
        v["type"] == "timewait_report" && v["netns"] == ns && v["overflow"] == overflowed
    });
    // --hist found B idle at its first poll (before the closes): it sees
    // the two TIME_WAIT at B's next turn, within 5 s.
    let share_seen = tracer.wait_for_json(SOON, |v| {
        v["type"] == "hist_timewait"
            && v["namespaces"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|n| n["netns"] == ns && n["overflow"] == overflowed && n["entered"] == 2)
            })
    });
    let run = tracer.stop();
    run.assert_clean_exit();
    assert!(
        census.is_some(),
        "--timewait: {overflowed} overflows in B:\n{run}"
    );
    assert!(
        share_seen.is_some(),
        "--hist: {overflowed} overflows in B:\n{run}"
    );
    let lines = run.json_lines();
    let report = final_report(&lines, ns);
    assert_eq!(report["overflow"], overflowed, "{report:#}");
    assert_eq!(report["never_seen"], overflowed, "{report:#}");
    assert!(
        advice_ids(&report).contains(&"max_tw_buckets"),
        "{report:#}"
    );
    let home = final_report(&lines, host);
    assert_eq!(home["overflow"], 0, "not the host's: {home:#}");
    assert!(!advice_ids(&home).contains(&"max_tw_buckets"), "{home:#}");
    let last = lines
        .iter()
        .rev()
        .find(|v| v["type"] == "hist_timewait")
        .unwrap_or_else(|| panic!("no --hist timewait line:\n{run}"));
    let share = |inode: u64| {
        last["namespaces"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["netns"] == inode))
            .unwrap_or_else(|| panic!("no share of {inode}: {last}"))
            .clone()
    };
    assert_eq!(share(ns)["overflow"], overflowed, "{last}");
    assert_eq!(share(ns)["entered"], 2, "the two created: {last}");
    assert_eq!(share(host)["overflow"], 0, "{last}");
}

/// Test 5: `--netns A` limits `--timewait` and `--hist` to A: the same
/// restart in B (done first, so that its lines would come first) leaves no
/// line, no census and no share of B.
#[test]
fn netns_limits_timewait_and_hist_to_one_namespace() {
    let addr = "127.0.0.1:29841";
    let (a, b) = (lab!(), lab!());
    let (a_ns, b_ns) = (a.ns.inode(), b.ns.inode());
    let tracer = host_tracer(
        "--timewait",
        &[
            "--hist",
            "--json",
            "-i",
            "1",
            "--port",
            "29841",
            "--netns",
            a.ns.name(),
        ],
    );
    let (_, b_restarted) = failed_restart(&b, addr, 2);
    let (_, a_restarted) = failed_restart(&a, addr, 3);
    let failure = tracer
        .wait_for_json(SOON, |v| v["type"] == "bind_failure")
        .unwrap_or_else(|| panic!("no bind failure: {:#?}", tracer.json_lines()));
    assert_eq!(failure["netns"], a_ns, "{failure}");
    assert_eq!(failure["pid"], a_restarted.pid(), "{failure}");
    assert_eq!(failure["holders"]["time_wait"], 3, "{failure}");
    let seen = tracer.wait_for_json(SOON, |v| {
        v["type"] == "hist_timewait" && v["live_time_wait"] == 3
    });
    let run = tracer.stop();
    run.assert_clean_exit();
    assert!(seen.is_some(), "--hist saw A's 3 TIME_WAIT:\n{run}");
    let lines = run.json_lines();
    for v in &lines {
        match v["type"].as_str() {
            Some("bind_failure" | "connect_failure" | "projection" | "timewait_report") => {
                assert_eq!(v["netns"], a_ns, "A's only: {v}");
            }
            Some("hist_timewait") => {
                let shares: Vec<&Value> =
                    v["namespaces"].as_array().into_iter().flatten().collect();
                assert!(
                    shares.len() == 1 && shares[0]["netns"] == a_ns,
                    "A's share only: {v}"
                );
            }
            _ => {}
        }
    }
    assert!(
        !lines
            .iter()
            .any(|v| v["pid"] == b_restarted.pid() || v["netns"] == b_ns),
        "nothing of B: {lines:#?}"
    );
    let report = final_report(&lines, a_ns);
    assert_eq!(
        report["failures"]["bind"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
}
