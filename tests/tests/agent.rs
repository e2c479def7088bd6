//! `--agent`: every analysis in one quiet process, scraped by a real
//! Prometheus server (Debian's `prometheus`) while a namespace runs a
//! CLOSE_WAIT leak, a TIME_WAIT churn to one destination and a failed
//! restart; the answers come through `PromQL`. Also: `--top` bounds the
//! destination series, a hostile comm cannot break the exposition, and
//! nothing reaches stdout. The shipped alert rules (deploy/prometheus) are
//! loaded into that Prometheus, and every alert and dashboard expression
//! is run against the agent's series.
//!
//! The agent runs inside the test's namespace, limited to it with
//! `--netns`, and Prometheus beside it, so that the scrape stays on the
//! namespace's loopback.

use std::time::Duration;

use integration_tests::{
    Lab, LeakyServerBin, MISSED_TRANSITIONS_REASON, Metrics, ModeTracer, PromServer,
    SKIPPED_RUNS_REASON, deploy, lab, promtool_check,
    scenario::{Clients, active_closes, closewait_leak, failed_restart},
};

const AGENT: &str = "127.0.0.1:29809";
const PROM: &str = "127.0.0.1:29890";
const LEAK_PORT: u16 = 29801;
const CHURN_PORT: u16 = 29811;
const RESTART_ADDR: &str = "127.0.0.1:29821";
const LEAKS: u64 = 3;
const CHURN: usize = 12;
const SOON: Duration = Duration::from_secs(30);

/// `tcptrace --agent`, leak reports every second.
fn agent(lab: &Lab, extra: &[&str]) -> ModeTracer {
    let mut args = vec!["-i", "1", "--min-age", "2s", "--prometheus", AGENT];
    args.extend_from_slice(extra);
    ModeTracer::start_mode(&lab.ns, "--agent", &args)
}

#[test]
fn a_prometheus_server_scrapes_the_agent() {
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let _server = leaky.start(&lab.ns, LEAK_PORT, 90);
    let tracer = agent(&lab, &[]);
    let stderr = tracer.stderr();
    for what in [
        "CLOSE_WAIT leaks",
        "dwell times",
        "TIME_WAIT and port failures",
        &format!("http://{AGENT}/metrics"),
    ] {
        assert!(stderr.contains(what), "{what} missing:\n{stderr}");
    }
    let rules = deploy::deploy_path("prometheus/tcptrace-alerts.yml");
    let prom = PromServer::start(&lab.ns, PROM, AGENT, &[rules.as_path()]);

    closewait_leak(&lab, LEAK_PORT, LEAKS);
    let churn_addr = format!("127.0.0.1:{CHURN_PORT}");
    let ports = active_closes(&lab, &churn_addr, CHURN, Duration::ZERO, Clients::OneByOne);
    assert_eq!(ports.len(), CHURN);
    let _ = failed_restart(&lab, RESTART_ADDR, 2);

    let ns = lab.ns.inode().to_string();
    let leaked = prom.wait_values(
        &format!("tcptrace_closewait_leaked_sockets{{comm=\"leaky_server\",netns=\"{ns}\"}}"),
        SOON,
        |v| v == [3.0],
    );
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let want = [LEAKS as f64];
    assert_eq!(leaked, want, "the leak gauge of the leaking process");
    let oldest = prom.wait_values(
        "tcptrace_closewait_oldest_leak_seconds{comm=\"leaky_server\"}",
        SOON,
        |v| v.iter().any(|s| *s >= 2.0),
    );
    assert!(oldest.iter().any(|s| *s >= 2.0), "{oldest:?}");
    let dest = prom.wait_values(
        &format!(
            "tcptrace_timewait_destination_sockets{{destination=\"{churn_addr}\",netns=\"{ns}\"}}"
        ),
        SOON,
        |v| v.len() == 1 && v[0] >= 1.0,
    );
    assert_eq!(dest.len(), 1, "the destination's TIME_WAIT series");
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let churned = CHURN as f64;
    assert!(dest[0] <= churned, "{dest:?}");
    let usable = prom.wait_values(
        &format!("tcptrace_timewait_destination_usable_ports{{destination=\"{churn_addr}\"}}"),
        SOON,
        |v| v.first().is_some_and(|u| *u > 0.0),
    );
    assert!(usable.first().is_some_and(|u| *u > 0.0), "{usable:?}");
    let failed = prom.wait_values(
        "tcptrace_socket_call_failures_total{call=\"bind\",errno=\"EADDRINUSE\",target=\"29821\"}",
        SOON,
        |v| v.iter().any(|n| *n > 0.0),
    );
    assert!(failed.iter().any(|n| *n > 0.0), "{failed:?}");
    let build = prom.wait_values("tcptrace_build_info", SOON, |v| v == [1.0]);
    assert_eq!(build, [1.0]);
    // The churn's server side and the old server's peers left CLOSE_WAIT:
    // its dwell buckets give a quantile.
    let q = prom.wait_values(
        "histogram_quantile(0.9, sum by (le) (tcptrace_state_dwell_seconds_bucket{state=\"CLOSE_WAIT\"}))",
        SOON,
        |v| v.first().is_some_and(|q| q.is_finite()),
    );
    assert!(
        q.first().is_some_and(|q| q.is_finite() && *q > 0.0),
        "{q:?}"
    );
    // Every loss but the programs' skipped runs and the transitions they
    // cost, which interrupts cause (see integration_tests::SKIPPED_RUNS).
    let skips = format!("{SKIPPED_RUNS_REASON}|{MISSED_TRANSITIONS_REASON}");
    let lost = prom.wait_values(
        &format!("sum(tcptrace_lost_events_total{{reason!~\"{skips}\"}})"),
        SOON,
        |v| !v.is_empty(),
    );
    assert_eq!(lost, [0.0], "nothing lost");

    // The shipped alert rules and dashboard run on these series: every
    // expression answers, and the failed bind fires its alert.
    let exprs = deploy::alert_exprs()
        .into_iter()
        .chain(deploy::dashboard_exprs());
    let failed: Vec<String> = exprs
        .filter_map(|(what, e)| prom.query(&e).err().map(|err| format!("{what}: {err}")))
        .collect();
    assert!(
        failed.is_empty(),
        "expressions Prometheus refused: {failed:#?}"
    );
    let firing = prom.wait_values(
        "ALERTS{alertname=\"TcptraceSocketCallFailed\",alertstate=\"firing\",call=\"bind\"}",
        SOON,
        |v| !v.is_empty(),
    );
    assert_eq!(firing, [1.0], "the failed bind's alert fires");

    let run = tracer.stop();
    run.assert_clean_exit();
    assert!(
        run.stdout.is_empty(),
        "the agent prints nothing: {:?}",
        run.stdout
    );
}

/// 2,000 destination ports make at most `--top` + 1 destination series,
/// and `other` holds the rest.
#[test]
fn destinations_beyond_top_are_summed_as_other() {
    const TOP: usize = 5;
    const PORTS: u16 = 2_000;
    let lab = lab!();
    let tracer = agent(&lab, &["--top", &TOP.to_string()]);
    lab.fanout("127.0.0.1", 30_000, PORTS);
    let deadline = std::time::Instant::now() + SOON;
    let m = loop {
        let m = Metrics::parse(&lab.http_get(AGENT, "/metrics"));
        let total: f64 = (m
            .matching("tcptrace_timewait_destination_sockets", &[])
            .iter())
        .map(|s| s.value)
        .sum();
        if total >= f64::from(PORTS) || std::time::Instant::now() >= deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let series = m.matching("tcptrace_timewait_destination_sockets", &[]);
    assert_eq!(series.len(), TOP + 1, "{}", m.text);
    let other = m.int(
        "tcptrace_timewait_destination_sockets",
        &[("destination", "other")],
    );
    assert_eq!(
        other + TOP as u64,
        u64::from(PORTS),
        "each named destination holds one, `other` the rest:\n{}",
        m.text
    );
    for name in [
        "tcptrace_timewait_destination_entries_per_second",
        "tcptrace_timewait_destination_usable_ports",
    ] {
        assert!(
            m.matching(name, &[]).len() <= TOP + 1,
            "{name}:\n{}",
            m.text
        );
    }
    tracer.stop().assert_clean_exit();
}

/// A process whose comm holds a quote, a backslash and a newline leaks
/// sockets: the leak gauge carries the comm, escaped, and promtool parses
/// the page.
#[test]
fn a_hostile_comm_on_the_leak_gauge_keeps_the_exposition_valid() {
    const COMM: &[u8] = b"le\"ak\\y\nsrv";
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let _server = leaky.start_named(&lab.ns, LEAK_PORT, 60, Some(COMM));
    let tracer = agent(&lab, &[]);
    closewait_leak(&lab, LEAK_PORT, LEAKS);
    let comm = String::from_utf8_lossy(COMM).into_owned();
    let deadline = std::time::Instant::now() + SOON;
    let (page, m) = loop {
        let page = lab.http_get(AGENT, "/metrics");
        let m = Metrics::parse(&page);
        // The sockets pass --min-age one by one: wait for all of them.
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let all = LEAKS as f64;
        let found = m
            .matching("tcptrace_closewait_leaked_sockets", &[("comm", &comm)])
            .iter()
            .any(|g| (g.value - all).abs() < 0.5);
        if found || std::time::Instant::now() >= deadline {
            break (page, m);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    promtool_check(&page);
    let gauge = m.matching("tcptrace_closewait_leaked_sockets", &[("comm", &comm)]);
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let want = LEAKS as f64;
    assert!(
        gauge.len() == 1 && (gauge[0].value - want).abs() < 0.5,
        "one gauge of {LEAKS} for the hostile comm:\n{page}"
    );
    assert!(
        !page.lines().any(|l| l.starts_with("srv")),
        "a newline in a comm cannot start a line:\n{page}"
    );
    tracer.stop().assert_clean_exit();
}

/// Bad uses are start-up errors that say what to do.
#[test]
fn bad_prometheus_uses_are_clear_errors() {
    let lab = lab!();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = busy.local_addr().expect("bound").port().to_string();
    for (args, says) in [
        (vec!["--prometheus", "9464"], "--agent"),
        (vec!["--agent", "--prometheus", "nowhere"], "nowhere"),
        (vec!["--agent", "--prometheus", &port], "cannot listen"),
        (vec!["--agent", "--json"], "--json"),
        (vec!["--hist", "--top", "3"], "--top"),
    ] {
        let out = integration_tests::run_bounded(
            std::process::Command::new(integration_tests::tracer_bin()).args(&args),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    drop(lab);
}
