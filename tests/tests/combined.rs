//! The analyses composed: `--closewait-leaks --hist --timewait` in one
//! tcptrace over one scenario: a CLOSE_WAIT leak, an active-close churn to
//! one destination, and a restart whose `bind()` fails on `TIME_WAIT`. Each
//! analysis's JSON goes through the parser its own tests use, and must say
//! what it says alone; `/metrics` is scraped from the same process.
//!
//! tcptrace runs inside the test's namespace, limited to it with `--netns`,
//! as in the single-analysis tests.

use std::time::Duration;

use integration_tests::{
    HistReport, Lab, LeakReport, LeakyServerBin, Metrics, ModeRun, ModeTracer, lab,
    scenario::{Clients, active_closes, closewait_leak, failed_restart},
};
use serde_json::Value;

/// Sockets leaked, connections churned, `TIME_WAIT`s left by the old server.
const LEAKS: u64 = 4;
const CHURN: usize = 10;
const RESTART_TW: u64 = 3;
const LEAK_PORT: u16 = 29701;
const CHURN_ADDR: &str = "127.0.0.1:29711";
const RESTART_ADDR: &str = "127.0.0.1:29721";
const SOON: Duration = Duration::from_secs(15);

/// The three analyses, reporting every second.
fn start(lab: &Lab, extra: &[&str]) -> ModeTracer {
    let mut args = vec!["--hist", "--timewait", "-i", "1", "--min-age", "2s"];
    args.extend_from_slice(extra);
    ModeTracer::start_mode(&lab.ns, "--closewait-leaks", &args)
}

/// The lines of `run` whose `type` is one of `types`, as text.
fn of_types(run: &ModeRun, types: &[&str]) -> Vec<String> {
    run.stdout
        .iter()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["type"].as_str().map(|t| types.contains(&t)))
                .unwrap_or(false)
        })
        .cloned()
        .collect()
}

#[test]
fn three_analyses_report_one_scenario_each_as_alone() {
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let server = leaky.start(&lab.ns, LEAK_PORT, 60);
    let tracer = start(&lab, &["--json"]);
    let stderr = tracer.stderr();
    for what in [
        "CLOSE_WAIT leaks",
        "dwell times",
        "TIME_WAIT and port failures",
    ] {
        assert!(
            stderr.contains(what),
            "one ready line names {what}:\n{stderr}"
        );
    }

    closewait_leak(&lab, LEAK_PORT, LEAKS);
    let ports = active_closes(&lab, CHURN_ADDR, CHURN, Duration::ZERO, Clients::OneByOne);
    assert_eq!(ports.len(), CHURN);
    let (_, restarted) = failed_restart(&lab, RESTART_ADDR, RESTART_TW);
    let restarted = restarted.pid();
    let failure = tracer
        .wait_for_json(SOON, |v| v["type"] == "bind_failure")
        .unwrap_or_else(|| panic!("no bind failure: {:#?}", tracer.json_lines()));
    let leaked = tracer.wait_for_json(SOON, |v| {
        v["type"] == "closewait_leak" && v["pid"] == server.pid() && v["count"] == LEAKS
    });
    assert!(
        leaked.is_some(),
        "no leak group: {:#?}",
        tracer.json_lines()
    );
    let churned = tracer.wait_for_json(SOON, |v| {
        v["type"] == "hist_timewait" && v["live_time_wait"] == CHURN as u64 + RESTART_TW
    });
    assert!(churned.is_some(), "{:#?}", tracer.json_lines());
    let run = tracer.stop();
    run.assert_clean_exit();

    // --closewait-leaks: the server's pid, its count, its handler.
    let leak_reports = LeakReport::parse_all(&of_types(&run, &["closewait_leak"]));
    let fin = leak_reports.last().expect("a leak report");
    assert!(fin.is_final(), "the final report comes last");
    let groups = fin.of_pid(server.pid());
    assert_eq!(groups.len(), 1, "one leaking path:\n{fin}");
    let g = groups[0];
    assert_eq!((g.count(), g.comm()), (LEAKS, Some("leaky_server")), "{g}");
    assert!(
        g.functions().iter().any(|f| f == "leaky_eof_handler"),
        "{g}"
    );
    assert!(
        fin.groups.iter().all(|g| g.comm() != Some("tcptrace-peer")),
        "the clients are not blamed:\n{fin}"
    );

    // --hist: every timewait socket of this namespace entered and alive:
    // the TIME_WAITs, and the leak's clients waiting in FIN_WAIT2 for a FIN
    // that never comes. The CLOSE_WAITs that ended are counted.
    let hists = HistReport::parse_all(&of_types(&run, &["hist", "hist_timewait"]));
    let fin = hists.last().expect("a hist report");
    assert!(fin.is_final(), "{fin}");
    let tw_all = CHURN as u64 + RESTART_TW;
    assert_eq!(fin.timewait.entered(), tw_all + LEAKS, "{fin}");
    assert_eq!(fin.timewait.live_time_wait(), tw_all, "{fin}");
    assert_eq!(fin.timewait.live_fin_wait2_orphans(), LEAKS, "{fin}");
    assert!(
        fin.count("CLOSE_WAIT") >= tw_all,
        "the churn's and the old server's peers left CLOSE_WAIT:\n{fin}"
    );

    // --timewait: the failed bind with what held it, the census by
    // destination and by port, the advice.
    assert_eq!(failure["pid"], restarted, "{failure}");
    assert_eq!(failure["holders"]["time_wait"], RESTART_TW, "{failure}");
    let reports = of_types(&run, &["timewait_report"]);
    let report: Value = serde_json::from_str(reports.last().expect("a census")).expect("JSON");
    assert_eq!(report["report"], "final", "{report:#}");
    let dest = report["destinations"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["remote"]["port"] == 29711))
        .unwrap_or_else(|| panic!("no census of {CHURN_ADDR}: {report:#}"));
    assert_eq!(dest["time_wait"], CHURN as u64, "{dest}");
    let port = report["local_ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["local"]["port"] == 29721))
        .unwrap_or_else(|| panic!("no census of port 29721: {report:#}"));
    assert_eq!(port["time_wait"], RESTART_TW, "{port}");
    assert_eq!(
        report["failures"]["bind"][0]["pid"], restarted,
        "{report:#}"
    );
    assert!(
        report["advice"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["id"] == "so_reuseaddr")),
        "{report:#}"
    );
    let (read, lost) = run.timewait_entries();
    assert!(read >= tw_all, "{run}");
    assert_eq!(lost, 0, "{run}");
}

/// The same process serves `/metrics` while its text reports go on: the
/// histogram analysis's figures, scraped from inside the namespace.
#[test]
fn the_combination_serves_metrics_and_text_reports() {
    const METRICS: &str = "127.0.0.1:29739";
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let _server = leaky.start(&lab.ns, LEAK_PORT, 60);
    let tracer = start(&lab, &["--prometheus", METRICS]);
    closewait_leak(&lab, LEAK_PORT, LEAKS);
    let ports = active_closes(&lab, CHURN_ADDR, CHURN, Duration::ZERO, Clients::OneByOne);
    assert_eq!(ports.len(), CHURN);
    let n = CHURN as u64;
    let seen = tracer.wait_until(SOON, |lines| {
        lines
            .iter()
            .any(|l| l.starts_with(&format!("TIME_WAIT now: {n} sockets")))
            .then_some(())
    });
    assert!(seen.is_some(), "{:#?}", tracer.lines());

    let m = Metrics::parse(&lab.http_get(METRICS, "/metrics"));
    let ns = lab.ns.inode().to_string();
    let netns = |k, v| [(k, v), ("netns", ns.as_str())];
    assert_eq!(m.int("tcptrace_sockets", &netns("state", "TIME_WAIT")), n);
    assert_eq!(
        m.int("tcptrace_sockets", &netns("state", "FIN_WAIT2_ORPHAN")),
        LEAKS,
        "the leak's clients wait for a FIN that never comes"
    );
    assert_eq!(
        m.int(
            "tcptrace_timewait_sockets_total",
            &netns("event", "entered")
        ),
        n + LEAKS
    );
    assert_eq!(
        m.int("tcptrace_sockets", &[("state", "CLOSE_WAIT")]),
        LEAKS,
        "the leaked sockets, from the kernel's socket store"
    );
    assert!(
        m.int(
            "tcptrace_state_dwell_seconds_count",
            &[("state", "CLOSE_WAIT")]
        ) >= n,
        "{}",
        m.text
    );

    let run = tracer.stop();
    run.assert_clean_exit();
    let text = run.stdout.join("\n");
    for title in [
        "Final report: CLOSE_WAIT leaks at",
        "Final: Dwell histograms at",
        "Final: TIME_WAIT census at",
    ] {
        assert!(text.contains(title), "{title}:\n{text}");
    }
    assert!(
        run.stderr
            .contains("CLOSE_WAIT sockets closed during the run"),
        "{run}"
    );
}
