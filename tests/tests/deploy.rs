//! `deploy/`: the alert rules pass `promtool check rules` and their own
//! `promtool test rules`; every dashboard query is `PromQL` that promtool
//! accepts; the systemd unit passes `systemd-analyze verify` without a word;
//! the container image copies the binary from where the release build puts
//! it; the unit, the `DaemonSet`, the README, `--help` and the
//! missing-capability error name the same capabilities; and `tcptrace
//! --agent` serves `/metrics` as an unprivileged user holding exactly the
//! unit's capabilities (that test and the error's need root, like every test
//! that loads the eBPF programs). Needs `promtool` (Debian's `prometheus`),
//! `systemd-analyze` (systemd) and `setpriv` (util-linux): a missing one
//! fails the test, with the package to install.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use integration_tests::{
    Metrics, ModeTracer, TempDir,
    deploy::{
        ALERT_TESTS, ALERTS, CONTAINERFILE, DAEMONSET, DASHBOARD, UNIT, alert_exprs, dashboard,
        dashboard_exprs, dashboard_panels, deploy_path, read_deploy, setpriv_caps,
        unit_capabilities, unit_program, unit_with_program,
    },
    need, require_root, run_bounded, tracer_bin, workspace_root,
};

/// How long promtool or systemd-analyze may take.
const TOOL: Duration = Duration::from_mins(1);
/// The agent's `/metrics` in [`agent_serves_metrics_with_only_the_units_capabilities`].
const METRICS: &str = "127.0.0.1:29901";
/// The unprivileged user the agent runs as there (nobody), standing in for
/// the unit's `DynamicUser=`.
const NOBODY: u32 = 65534;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `promtool ARGS` from the workspace root.
fn promtool(args: &[&str]) -> Output {
    need("promtool", "prometheus");
    run_bounded(
        Command::new("promtool")
            .args(args)
            .current_dir(workspace_root()),
        TOOL,
    )
}

/// `promtool check rules FILE` passes and finds `n` rules.
fn assert_rules_check(file: &Path, n: usize) {
    let out = promtool(&["check", "rules", &file.display().to_string()]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.contains(&format!("SUCCESS: {n} rules found")),
        "promtool check rules {}: {} (expected SUCCESS: {n} rules found):\n{said}",
        file.display(),
        out.status
    );
}

/// `promtool check rules` accepts the alert rules, and finds as many as the
/// harness's reader ([`alert_exprs`]), which the Prometheus-server test
/// runs; every alert the deployment promises is there.
#[test]
fn promtool_checks_the_alert_rules() {
    let alerts = alert_exprs();
    assert_rules_check(&deploy_path(ALERTS), alerts.len());
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    for (name, metric) in [
        (
            "TcptraceCloseWaitLeakGrowing",
            "tcptrace_closewait_leaked_sockets",
        ),
        (
            "TcptraceEphemeralPortsExhaustionSoon",
            "tcptrace_timewait_destination_exhaustion_seconds",
        ),
        (
            "TcptraceSocketCallFailed",
            "tcptrace_socket_call_failures_total",
        ),
        ("TcptraceResetStorm", "tcptrace_resets_total"),
        ("TcptraceLostEvents", "tcptrace_lost_events_total"),
    ] {
        let expr = alerts
            .iter()
            .find_map(|(n, e)| (n == name).then_some(e))
            .unwrap_or_else(|| panic!("{ALERTS}: no alert {name} in {names:?}"));
        assert!(expr.contains(metric), "{name} reads {metric}: {expr}");
    }
}

/// `promtool test rules` passes, and its tests cover the leak and the
/// exhaustion alerts both firing and not firing.
#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let file = deploy_path(ALERT_TESTS);
    let out = promtool(&["test", "rules", &file.display().to_string()]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.contains("SUCCESS"),
        "promtool test rules {ALERT_TESTS}: {}:\n{said}",
        out.status
    );
    let tests = read_deploy(ALERT_TESTS);
    for alert in [
        "TcptraceCloseWaitLeakGrowing",
        "TcptraceEphemeralPortsExhaustionSoon",
    ] {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{ALERT_TESTS}: no case where {alert} does not fire"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{ALERT_TESTS}: no case where {alert} fires"
        );
    }
}

/// The dashboard is JSON on a `${datasource}` Prometheus variable, has the
/// panels the deployment promises, and every query (Grafana's variables
/// substituted) is `PromQL` that `promtool check rules` accepts as a
/// recording rule.
#[test]
fn dashboard_queries_are_promql() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "{DASHBOARD}: a datasource variable of type prometheus"
    );
    for p in dashboard_panels(&d) {
        if p["targets"].as_array().is_some_and(|t| !t.is_empty()) {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{DASHBOARD}: panel {} queries the templated datasource",
                p["title"]
            );
        }
    }
    let exprs = dashboard_exprs();
    assert!(!exprs.is_empty(), "{DASHBOARD}: no queries");
    for metric in [
        "tcptrace_state_dwell_seconds_bucket",
        "tcptrace_closewait_leaked_sockets",
        "tcptrace_timewait_destination_sockets",
        "tcptrace_timewait_destination_usable_ports",
        "tcptrace_resets_total",
        "tcptrace_socket_call_failures_total",
        "tcptrace_lost_events_total",
    ] {
        assert!(
            exprs.iter().any(|(_, e)| e.contains(metric)),
            "{DASHBOARD}: no panel reads {metric}"
        );
    }
    assert!(
        dashboard_panels(&d).iter().any(|p| p["type"] == "heatmap"
            && p["targets"][0]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("tcptrace_state_dwell_seconds_bucket"))),
        "{DASHBOARD}: a dwell heatmap"
    );
    let dir = TempDir::new("dashboard");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        assert!(!expr.contains('\n'), "panel {title:?}: one line: {expr}");
        writeln!(
            rules,
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: |\n          {expr}"
        )
        .expect("writing to a String");
    }
    let file = dir.path().join("dashboard-queries.yml");
    fs::write(&file, &rules).expect("writing the queries");
    assert_rules_check(&file, exprs.len());
}

/// The runtime stage copies the binary from where `cargo xtask build
/// --release`, which the build stage runs, puts it:
/// `<workspace>/target/release/tcptrace`, the workspace being the build
/// stage's WORKDIR. The image itself is not built here (no registry).
#[test]
fn containerfile_copies_the_release_binary() {
    let file = read_deploy(CONTAINERFILE);
    let lines: Vec<&str> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let build_stage = lines
        .iter()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.first() == Some(&"FROM")
                && words.len() == 4
                && words[2].eq_ignore_ascii_case("AS"))
            .then(|| words[3].to_owned())
        })
        .unwrap_or_else(|| panic!("{CONTAINERFILE}: no `FROM IMAGE AS STAGE` build stage"));
    let workdir = lines
        .iter()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .unwrap_or_else(|| panic!("{CONTAINERFILE}: the build stage sets no WORKDIR"))
        .trim();
    assert!(
        file.contains("cargo xtask build --release"),
        "{CONTAINERFILE}: the build stage runs cargo xtask build --release"
    );
    assert!(
        !file.contains("CARGO_TARGET_DIR"),
        "{CONTAINERFILE}: CARGO_TARGET_DIR would move the binary"
    );
    let copy = lines
        .iter()
        .find(|l| l.starts_with(&format!("COPY --from={build_stage} ")))
        .unwrap_or_else(|| panic!("{CONTAINERFILE}: no COPY --from={build_stage}"));
    let words: Vec<&str> = copy.split_whitespace().collect();
    assert_eq!(
        words.len(),
        4,
        "{CONTAINERFILE}: COPY --from=STAGE SRC DST: {copy}"
    );
    let expected = Path::new(workdir).join("target/release/tcptrace");
    assert_eq!(
        Path::new(words[2]),
        expected,
        "{CONTAINERFILE}: the release build puts the binary at <WORKDIR>/target/release/tcptrace"
    );
    // Where the README installs it from, as the build prints it.
    assert!(
        read_readme().contains("target/release/tcptrace"),
        "README: the release binary is target/release/tcptrace"
    );
    assert_eq!(
        words[3],
        unit_program(),
        "{CONTAINERFILE}: the binary goes where the unit runs it from"
    );
}

fn read_readme() -> String {
    let path = workspace_root().join("README.md");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The unit's capability set is the one the `DaemonSet` adds, the README's
/// service and setcap examples give, and `--help` names.
#[test]
fn capabilities_are_named_alike_everywhere() {
    let caps = unit_capabilities();
    let bare: Vec<&str> = caps
        .iter()
        .map(|c| {
            c.strip_prefix("CAP_")
                .expect("checked by unit_capabilities")
        })
        .collect();
    let daemonset = read_deploy(DAEMONSET);
    let added = format!("add: [{}]", bare.join(", "));
    assert!(
        daemonset.contains(&added),
        "{DAEMONSET}: the container adds {added} (the unit's set)"
    );
    assert!(
        daemonset.contains("drop: [ALL]"),
        "{DAEMONSET}: and drops every other"
    );
    let readme = read_readme();
    let joined = caps.join(" ");
    for line in [
        format!("AmbientCapabilities={joined}"),
        format!("CapabilityBoundingSet={joined}"),
        format!(
            "setcap {}+ep",
            caps.iter()
                .map(|c| c.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ] {
        assert!(readme.contains(&line), "README: {line}");
    }
    let out = run_bounded(Command::new(tracer_bin()).arg("--help"), TOOL);
    assert!(out.status.success(), "tcptrace --help: {out:?}");
    let help = text(&out.stdout);
    let privileges = help
        .split_once("PRIVILEGES")
        .unwrap_or_else(|| panic!("--help has a PRIVILEGES section:\n{help}"))
        .1
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        privileges.contains(&caps.join(" + ")),
        "--help's PRIVILEGES names {}:\n{privileges}",
        caps.join(" + ")
    );
}

/// `systemd-analyze verify` of the unit, run on the built binary, prints
/// nothing: it exits 0 on unknown keys and bad values too, so silence is
/// what proves every line valid.
#[test]
fn systemd_analyze_verifies_the_unit_silently() {
    need("systemd-analyze", "systemd");
    let dir = TempDir::new("unit");
    let unit = dir.path().join("tcptrace.service");
    fs::write(&unit, unit_with_program(&tracer_bin())).expect("writing the unit");
    let out = run_bounded(
        Command::new("systemd-analyze").arg("verify").arg(&unit),
        TOOL,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && stderr.is_empty() && stdout.is_empty(),
        "systemd-analyze verify {UNIT} ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// `Name:\tvalue` of `/proc/PID/status`.
fn status_field(pid: u32, name: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {name}:\n{status}"))
        .trim()
        .to_owned()
}

/// The unit runs tcptrace as a user of its own (`DynamicUser=yes`) with
/// `NoNewPrivileges=yes` and ambient capabilities; so does this test, with
/// setpriv: user nobody, no groups, no new privileges, and exactly the
/// unit's capabilities as its inheritable, ambient and bounding sets.
/// `tcptrace --agent` starts, serves `/metrics` with
/// `tcptrace_build_info`, prints nothing on stdout, and stops cleanly on
/// SIGTERM (systemd's stop).
#[test]
fn agent_serves_metrics_with_only_the_units_capabilities() {
    need("setpriv", "util-linux");
    let unit = read_deploy(UNIT);
    for setting in ["DynamicUser=yes", "NoNewPrivileges=yes"] {
        assert!(
            unit.lines().any(|l| l.trim() == setting),
            "{UNIT}: this test mimics {setting}"
        );
    }
    let caps = unit_capabilities();
    let set = setpriv_caps(&caps);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
        "--no-new-privs".to_owned(),
        format!("--inh-caps=-all,{set}"),
        format!("--ambient-caps=-all,{set}"),
        format!("--bounding-set=-all,{set}"),
        "--".to_owned(),
    ])
    .arg(tracer_bin());
    let tracer = ModeTracer::start_with(cmd, "--agent", &["--prometheus", METRICS]);
    // setpriv execs tcptrace: the pid is tcptrace's.
    let pid = tracer.pid();
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some(NOBODY.to_string().as_str()),
        "tcptrace runs as nobody"
    );
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let eff = status_field(pid, "CapEff");
    for set in ["CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(status_field(pid, set), eff, "{set} is CapEff");
    }
    let mask = u64::from_str_radix(&eff, 16).expect("CapEff is hex");
    assert_eq!(
        mask.count_ones() as usize,
        caps.len(),
        "CapEff {eff} holds exactly {caps:?}"
    );
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_tcptrace-peer"))
            .args(["scrape", &format!("http://{METRICS}/metrics")]),
        Duration::from_secs(15),
    );
    assert!(
        out.status.success(),
        "GET http://{METRICS}/metrics: {out:?}\ntcptrace stderr:\n{}",
        tracer.stderr()
    );
    let m = Metrics::parse(&text(&out.stdout));
    let info = m.matching("tcptrace_build_info", &[]);
    assert!(
        info.len() == 1 && info[0].value.to_bits() == 1.0_f64.to_bits(),
        "/metrics has tcptrace_build_info 1:\n{}",
        m.text
    );
    let run = tracer.terminate(Duration::from_secs(20));
    run.assert_clean_exit();
    assert!(
        run.stdout.is_empty(),
        "--agent prints nothing on stdout:\n{run}"
    );
}

/// Started without capabilities, tcptrace's error tells how to grant them:
/// the setcap line names the unit's set.
#[test]
fn the_missing_capability_error_names_the_units_set() {
    require_root();
    need("setpriv", "util-linux");
    let out = run_bounded(
        Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".to_owned(),
                "--".to_owned(),
            ])
            .arg(tracer_bin())
            .arg("--agent"),
        TOOL,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let setcap = format!(
        "setcap {}+ep",
        unit_capabilities()
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(err.contains(&setcap), "the error says {setcap}:\n{err}");
}
