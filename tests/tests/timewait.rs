//! `tcptrace --timewait`, end to end, as root: real servers and clients in a
//! fresh network namespace each, with tcptrace running in that namespace and
//! limited to it with `--netns` (`timewait_netns.rs` runs it in the host
//! namespace, over several). Each test checks what tcptrace says against
//! what the peers did and what `ss` shows.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    Lab, LeakyServerBin, ModeTracer, lab, run_bounded, scenario::failed_restart, tracer_bin,
};
use serde_json::Value;

/// How long to wait for a JSON line that should come within a poll or two.
const SOON: Duration = Duration::from_secs(10);

fn start(lab: &Lab, port: &str) -> ModeTracer {
    ModeTracer::start_mode(
        &lab.ns,
        "--timewait",
        &["--json", "-i", "1", "--port", port],
    )
}

/// The advice items with this id in a report.
fn advice<'a>(report: &'a Value, id: &str) -> Vec<&'a str> {
    report["advice"]
        .as_array()
        .expect("advice is an array")
        .iter()
        .filter(|a| a["id"] == id)
        .filter_map(|a| a["text"].as_str())
        .collect()
}

fn final_report(lines: &[Value]) -> Value {
    let finals: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "timewait_report" && v["report"] == "final")
        .collect();
    assert_eq!(finals.len(), 1, "exactly one final report in {lines:#?}");
    finals[0].clone()
}

/// Restart scenario: a server without SO_REUSEADDR closes its connections
/// first and exits; a new instance cannot bind the port. tcptrace names the
/// failed bind's pid and port, counts exactly the TIME_WAIT sockets on the
/// port, and advises SO_REUSEADDR.
#[test]
fn restart_failure_is_explained_and_advises_so_reuseaddr() {
    const N: u64 = 5;
    let addr = "127.0.0.1:29601";
    let lab = lab!();
    let tracer = start(&lab, "29601");
    let (server_pid, restarted) = failed_restart(&lab, addr, N);

    let failure = tracer
        .wait_for_json(SOON, |v| v["type"] == "bind_failure")
        .unwrap_or_else(|| panic!("no bind failure reported: {:#?}", tracer.json_lines()));
    assert_eq!(failure["errno"], "EADDRINUSE", "{failure}");
    assert_eq!(failure["pid"], restarted.pid(), "{failure}");
    assert_eq!(
        failure["local"],
        serde_json::json!({"addr": "127.0.0.1", "port": 29601}),
        "{failure}"
    );
    assert_eq!(failure["holders"]["time_wait"], N, "{failure}");
    assert_eq!(
        failure["holders"]["live"].as_array().map(Vec::len),
        Some(0),
        "nothing else holds the port: {failure}"
    );

    let run = tracer.stop();
    run.assert_clean_exit();
    // The entries came through the per-CPU log, none lost (the machine's
    // other traffic may add some).
    let (read, lost) = run.timewait_entries();
    assert!(read >= N, "{N} entries at least: {run}");
    assert_eq!(lost, 0, "{run}");
    let report = final_report(&run.json_lines());
    let so = advice(&report, "so_reuseaddr");
    assert_eq!(so.len(), 1, "{report:#}");
    assert!(so[0].contains("port 29601"), "{}", so[0]);
    assert!(so[0].contains(&format!("{N} TIME_WAIT")), "{}", so[0]);
    assert!(
        so[0].contains(&format!("pid {}", restarted.pid())),
        "{}",
        so[0]
    );
    // Who closed first: the old server, on its port.
    let ports = report["local_ports"].as_array().expect("an array");
    let p = ports
        .iter()
        .find(|p| p["local"]["port"] == 29601)
        .unwrap_or_else(|| panic!("no census for port 29601: {report:#}"));
    assert_eq!(p["time_wait"], N, "{p}");
    assert_eq!(p["closers"][0]["pid"], server_pid, "{p}");
    // Named after it exited: the comm came from the kernel's comm cache,
    // noted at its close(), not from /proc.
    assert_eq!(p["closers"][0]["comm"], "tcptrace-peer", "{p}");
    assert_eq!(p["closers"][0]["count"], N, "{p}");
    let bind = &report["failures"]["bind"][0];
    assert_eq!(bind["pid"], restarted.pid(), "{report:#}");
    assert_eq!(bind["count"], 1, "{report:#}");
}

/// Churn that the client closes first, to one destination: `conns`
/// connections, one every 25 ms. Returns the client (not waited for).
fn churn(lab: &Lab, addr: &str, conns: &str) -> (integration_tests::Peer, integration_tests::Peer) {
    let server = lab.server(&[
        "--addr",
        addr,
        "--connections",
        conns,
        "--wait-peer-close",
        "--timeout-ms",
        "30000",
    ]);
    let client = lab.client(&[
        "--addr",
        addr,
        "--connections",
        conns,
        "--one-by-one",
        "--pace-ms",
        "25",
        "--timeout-ms",
        "30000",
    ]);
    (server, client)
}

/// Exhaustion scenario: 100 ephemeral ports, no `tcp_tw_reuse`, a client that
/// closes first until `connect()` fails. tcptrace reports the EADDRNOTAVAIL
/// with the client's pid, a census of the destination that matches `ss`,
/// and had projected exhaustion before the failure.
#[test]
fn port_exhaustion_is_projected_then_caught() {
    let addr = "127.0.0.1:29611";
    let lab = lab!();
    lab.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    lab.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let tracer = start(&lab, "29611");
    let (_server, mut client) = churn(&lab, addr, "300");
    let line = client.wait_line("connect-error");
    assert!(
        line.starts_with("connect-error 99 "),
        "EADDRNOTAVAIL: {line}"
    );
    let in_ss =
        i64::try_from(lab.ss_count("time-wait", &["dport", "=", ":29611"])).expect("a count");

    let failure = tracer
        .wait_for_json(SOON, |v| v["type"] == "connect_failure")
        .unwrap_or_else(|| panic!("no connect failure reported: {:#?}", tracer.json_lines()));
    assert_eq!(failure["errno"], "EADDRNOTAVAIL", "{failure}");
    assert_eq!(failure["pid"], client.pid(), "{failure}");
    assert_eq!(
        failure["remote"],
        serde_json::json!({"addr": "127.0.0.1", "port": 29611}),
        "{failure}"
    );
    let census = &failure["census"][0];
    let counted = census["time_wait"].as_i64().expect("a count");
    assert!(
        (counted - in_ss).abs() <= 3,
        "census {counted} TIME_WAIT vs ss {in_ss}: {failure}"
    );
    assert_eq!(census["projection"]["usable_ports"], 100, "{failure}");
    assert!(census["projection"]["exhaustion"] == true, "{failure}");
    let projected = census["exhaustion_projected_ts_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("exhaustion never projected: {failure}"));
    let failed = failure["ts_ns"].as_u64().expect("ts_ns");
    assert!(
        projected < failed,
        "projected at {projected}, after the failure at {failed}: {failure}"
    );
    // The projection was announced on its own line, before the failure.
    let lines = tracer.json_lines();
    let announced = lines
        .iter()
        .position(|v| v["type"] == "projection" && v["destination"]["remote"]["port"] == 29611);
    let failed_at = lines.iter().position(|v| v["type"] == "connect_failure");
    assert!(
        announced.is_some() && announced < failed_at,
        "no projection line before the failure: {lines:#?}"
    );

    let run = tracer.stop();
    run.assert_clean_exit();
    let report = final_report(&run.json_lines());
    let dest = &report["destinations"][0];
    assert_eq!(dest["remote"]["addr"], "127.0.0.1", "{report:#}");
    assert_eq!(dest["closers"][0]["pid"], client.pid(), "{report:#}");
    assert_eq!(report["failures"]["connect"][0]["pid"], client.pid());
    for id in ["keepalive", "tcp_tw_reuse", "port_range"] {
        assert_eq!(advice(&report, id).len(), 1, "advice {id}: {report:#}");
    }
    assert!(
        advice(&report, "tcp_tw_reuse")[0].contains("tcp_tw_reuse is 0"),
        "{report:#}"
    );
    assert!(
        advice(&report, "port_range")[0].contains("40000 40099"),
        "{report:#}"
    );
    let text = report.to_string();
    assert!(!text.contains("tcp_tw_recycle=1"), "never suggested");
}

/// The same churn with `tcp_tw_reuse=1` does not exhaust the ports: `connect()`
/// takes TIME_WAIT ports older than `tcp_tw_reuse_delay`, and tcptrace shows
/// those TIME_WAIT sockets killed early by reuse.
#[test]
fn tw_reuse_prevents_exhaustion_and_shows_early_kills() {
    let addr = "127.0.0.1:29612";
    let lab = lab!();
    lab.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    lab.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let tracer = start(&lab, "29612");
    let (server, client) = churn(&lab, addr, "250");
    let lines = client.wait_success();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("connected")).count(),
        250,
        "every connect succeeded"
    );
    server.wait_success();
    // One more poll, so that the last reuses are seen.
    thread::sleep(Duration::from_millis(1500));
    let run = tracer.stop();
    run.assert_clean_exit();
    let report = final_report(&run.json_lines());
    let reused = report["killed_by_reuse"].as_u64().expect("a count");
    // 250 connections through 100 ports: at least 150 took a TIME_WAIT port.
    assert!(reused >= 150, "killed by reuse {reused}: {report:#}");
    assert!(
        report["killed_early"].as_u64() >= Some(reused),
        "{report:#}"
    );
    assert_eq!(
        report["failures"]["connect"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    let dest = &report["destinations"][0];
    assert_eq!(dest["projection"]["tw_reuse"], true, "{report:#}");
    assert_eq!(dest["projection"]["exhaustion"], false, "{report:#}");
    assert_eq!(report["sysctls"]["tcp_tw_reuse"], 1, "{report:#}");
    assert!(advice(&report, "tcp_tw_reuse").is_empty(), "{report:#}");
}

/// A port reused by a connection that stays open: the TIME_WAIT socket it
/// killed vanishes from the polls and its 4-tuple enters no new TIME_WAIT.
/// tcptrace, which streams no record per connect, finds the open connection
/// with an exact sock_diag lookup and counts the kill as reuse; when that
/// connection closes first too, its TIME_WAIT is a new life, not a second
/// kill.
#[test]
fn reuse_by_a_connection_still_open_counts_as_reuse() {
    let addr = "127.0.0.1:29613";
    let bind = "127.0.0.1:29614";
    let lab = lab!();
    let tracer = start(&lab, "29613");
    let (server, closed_at) = lab.timewait_for_reuse(addr, bind);
    tracer
        .wait_for_json(SOON, |v| {
            v["type"] == "timewait_report" && v["entered"] == 1 && v["time_wait"] == 1
        })
        .unwrap_or_else(|| panic!("TIME_WAIT never seen alive: {:#?}", tracer.json_lines()));
    integration_tests::wait_until_reusable(closed_at);
    let mut second = lab.client_from(addr, bind, &["--hold"]);
    assert_eq!(
        lab.ss_count("time-wait", &["sport", "=", ":29614"]),
        0,
        "the kernel reused (killed) the TIME_WAIT socket"
    );
    let report = tracer
        .wait_for_json(SOON, |v| {
            v["type"] == "timewait_report" && v["killed_early"] == 1
        })
        .unwrap_or_else(|| panic!("never killed early: {:#?}", tracer.json_lines()));
    assert_eq!(report["killed_by_reuse"], 1, "{report:#}");
    assert_eq!(report["expired"], 0, "{report:#}");

    second.go();
    let lines = second.wait_success();
    assert!(lines.iter().any(|l| l == "closed"), "{lines:?}");
    server.wait_success();
    lab.wait_ss("time-wait", &["sport", "=", ":29614"], 1);
    thread::sleep(Duration::from_millis(1500));
    let run = tracer.stop();
    run.assert_clean_exit();
    let report = final_report(&run.json_lines());
    assert_eq!(report["entered"], 2, "{report:#}");
    assert_eq!(report["time_wait"], 1, "{report:#}");
    assert_eq!(report["killed_early"], 1, "{report:#}");
    assert_eq!(report["killed_by_reuse"], 1, "{report:#}");
}

/// A namespace whose /proc/sys/net cannot be read (a tmpfs over it, in a
/// private mount namespace): tcptrace says which sysctls it could not read,
/// keeps counting, and exits 0.
#[test]
fn unreadable_sysctls_are_reported_not_fatal() {
    let addr = "127.0.0.1:29621";
    let lab = lab!();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        lab.ns.name(),
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tcptrace-test /proc/sys/net && exec \"$0\" \"$@\"",
    ])
    .arg(tracer_bin());
    let tracer = ModeTracer::start_with(
        cmd,
        "--timewait",
        &lab.ns.scoped(&["--json", "-i", "1", "--port", "29621"]),
    );
    assert!(
        tracer
            .stderr()
            .contains("cannot read net.ipv4.ip_local_port_range"),
        "{}",
        tracer.stderr()
    );
    // One active close by the client: one TIME_WAIT, still counted.
    let server = lab.server(&["--addr", addr, "--wait-peer-close"]);
    lab.client(&["--addr", addr]).wait_success();
    server.wait_success();
    let deadline = Instant::now() + SOON;
    let seen = tracer.wait_for_json(deadline.saturating_duration_since(Instant::now()), |v| {
        v["type"] == "timewait_report" && v["time_wait"] == 1
    });
    assert!(seen.is_some(), "{:#?}", tracer.json_lines());
    let run = tracer.stop();
    run.assert_clean_exit();
    let report = final_report(&run.json_lines());
    let unreadable = report["sysctls"]["unreadable"].to_string();
    assert!(
        unreadable.contains("net.ipv4.ip_local_port_range"),
        "{report:#}"
    );
    assert!(
        report["sysctls"]["ip_local_port_range"].is_null(),
        "{report:#}"
    );
    let dest = &report["destinations"][0];
    assert_eq!(dest["time_wait"], 1, "{report:#}");
    assert!(dest["projection"]["usable_ports"].is_null(), "{report:#}");
}

/// Without --json: the census, the failure line and the advice as text, and
/// a clean exit at the end of --duration.
#[test]
fn text_output_has_the_census_failure_and_advice() {
    let addr = "127.0.0.1:29631";
    let lab = lab!();
    let tracer = ModeTracer::start_mode(
        &lab.ns,
        "--timewait",
        &["-i", "1", "-d", "4", "--port", "29631"],
    );
    let server = lab.server(&[
        "--addr",
        addr,
        "--no-reuseaddr",
        "--read-request",
        "--reply",
    ]);
    let server_pid = server.pid();
    lab.client(&[
        "--addr",
        addr,
        "--send",
        "--read-reply",
        "--wait-peer-close",
    ])
    .wait_success();
    server.wait_success();
    let mut restarted = lab.server(&["--addr", addr, "--no-reuseaddr", "--wait-go"]);
    restarted.go();
    restarted.wait_line("bind-error 98");
    let run = tracer.wait_end(Duration::from_secs(15));
    run.assert_clean_exit();
    let out = run.stdout.join("\n");
    let failure = format!(
        "bind() EADDRINUSE: pid {} (tcptrace-peer) port 29631 on 127.0.0.1: held by 1 TIME_WAIT",
        restarted.pid()
    );
    assert!(out.contains(&failure), "{failure:?} in:\n{out}");
    assert!(out.contains("Final: TIME_WAIT census at "), "{out}");
    assert!(
        out.contains("Server side (this host closed first), by local port:"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("29631")
            && l.contains(&format!("{server_pid} tcptrace-peer (1)"))),
        "the port's row names the old server: {out}"
    );
    assert!(
        out.contains("  - [so_reuseaddr] bind() to port 29631"),
        "{out}"
    );
}

/// Explaining a failed bind costs a `/proc` fd scan and two sock_diag
/// dumps, and any user can fail binds: the explanations are rate-limited
/// (a burst of 16, then 4 a second). 60 failures on 60 ports within a few
/// milliseconds get at most the burst and a few more explained; the rest
/// are counted as unexplained, none lost.
#[test]
fn failure_explanations_are_rate_limited_and_the_rest_counted() {
    const N: u64 = 60;
    let lab = lab!();
    let storm = LeakyServerBin::build_from("bind_storm");
    let tracer = ModeTracer::start_mode(&lab.ns, "--timewait", &["--json", "-i", "1"]);
    let out = run_bounded(
        lab.ns.command(storm.path()).args(["29651", &N.to_string()]),
        SOON,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bind_storm: {said}");
    assert_eq!(
        said.trim(),
        format!("failed {N}"),
        "every second bind fails"
    );
    let pid_failures = |r: &Value| {
        r["failures"]["bind"].as_array().map_or(0, |b| {
            b.iter()
                .filter(|b| {
                    b["local"]["port"]
                        .as_u64()
                        .is_some_and(|p| (29651..29651 + N).contains(&p))
                })
                .count() as u64
        })
    };
    let settled = tracer.wait_for_json(SOON, |v| {
        v["type"] == "timewait_report"
            && pid_failures(v) + v["failures"]["unexplained"].as_u64().unwrap_or(0) >= N
    });
    let run = tracer.stop();
    run.assert_clean_exit();
    let report = settled.unwrap_or_else(|| panic!("no report accounting for {N} failures:\n{run}"));
    let explained = pid_failures(&report);
    let unexplained = report["failures"]["unexplained"].as_u64().unwrap_or(0);
    assert_eq!(explained + unexplained, N, "{report:#}");
    assert!(explained >= 16, "the burst is explained: {report:#}");
    assert!(unexplained > 0, "the rest are only counted: {report:#}");
}

/// Port lists: with `--port` listing eight ports, A among them and C not,
/// the failed restart on A is reported and its TIME_WAIT counted; the same
/// on C, first, is neither (the kernel's filter of failed calls and the
/// userspace filter of the sock_diag census apply one rule).
#[test]
fn a_port_list_keeps_listed_ports_failures_and_census_only() {
    const N: u64 = 2;
    const A: u16 = 29_724;
    const C: u16 = 29_729;
    let lab = lab!();
    let tracer = start(&lab, "29721,29722,29723,29724,29725,29726,29727,29728");
    let (_, skipped) = failed_restart(&lab, &format!("127.0.0.1:{C}"), N);
    let (server, restarted) = failed_restart(&lab, &format!("127.0.0.1:{A}"), N);
    let failure = tracer
        .wait_for_json(SOON, |v| {
            v["type"] == "bind_failure" && v["local"]["port"] == A
        })
        .unwrap_or_else(|| panic!("no failure on port {A}: {:#?}", tracer.json_lines()));
    assert_eq!(failure["pid"], restarted.pid(), "{failure}");
    assert_eq!(failure["holders"]["time_wait"], N, "{failure}");
    let run = tracer.stop();
    run.assert_clean_exit();
    let lines = run.json_lines();
    let failures: Vec<&Value> = (lines.iter())
        .filter(|v| v["type"] == "bind_failure" || v["type"] == "connect_failure")
        .collect();
    assert_eq!(failures.len(), 1, "only A's failure: {failures:#?}");
    let report = final_report(&lines);
    let binds = report["failures"]["bind"].as_array().expect("an array");
    assert!(
        binds.iter().all(|b| b["pid"] != skipped.pid()),
        "C's restart ({}) is not listed: {report:#}",
        skipped.pid()
    );
    let ports = report["local_ports"].as_array().expect("an array");
    let lports: Vec<&Value> = ports.iter().map(|p| &p["local"]["port"]).collect();
    assert_eq!(lports, [A], "only A's TIME_WAIT in the census: {report:#}");
    assert_eq!(ports[0]["time_wait"], N, "{report:#}");
    assert_eq!(ports[0]["closers"][0]["pid"], server, "{report:#}");
}
