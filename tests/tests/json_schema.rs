//! One JSON contract (`docs/json.md`): every object type has a JSON Schema
//! in `docs/schema/` that requires every key and allows no other, and
//! every mode's real output validates against it.
//!
//! Without root: the schemas are valid draft 2020-12 and closed at every
//! level, the stream writer's golden lines and the documented examples
//! validate, and a key removed or added anywhere fails (the negative case).
//! As root: the stream, `--hist`, `--closewait-leaks`, `--timewait` and the
//! three together run over real traffic in a network namespace, and every
//! line they print validates; each run must print every type it is
//! expected to, periodic (`-i`) and final reports both.

mod json_schema {
    pub mod schemas;
}

use std::{collections::BTreeMap, fs, process::Command, time::Duration};

use integration_tests::{
    Lab, LeakyServerBin, ModeRun, ModeTracer, json_objects, lab,
    scenario::{Clients, active_closes, closewait_leak, failed_restart},
    tracer_bin, workspace_root,
};
use json_schema::schemas::{Schemas, TYPES, closed_violations};
use serde_json::Value;

/// How long to wait for a line that should come within a report or two.
const SOON: Duration = Duration::from_secs(15);

#[test]
fn schemas_are_valid_and_closed_at_every_level() {
    let schemas = Schemas::load();
    for kind in TYPES {
        let bad = closed_violations(schemas.schema(kind), kind);
        assert!(bad.is_empty(), "{kind}.json:\n{}", bad.join("\n"));
        assert_eq!(
            schemas.schema(kind)["properties"]["v"]["const"],
            1,
            "{kind}.json pins the schema version"
        );
    }
    // The check finds what it is for.
    let open = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {}}, "required": ["b"]},
            "c": {"type": ["object", "null"]},
        },
        "required": ["a"],
        "additionalProperties": false,
    });
    let found = closed_violations(&open, "t");
    assert_eq!(
        found,
        [
            "t: required [\"a\"], properties [\"a\", \"c\"]",
            "t/properties/a: additionalProperties is not false",
            "t/properties/c: an object without properties",
        ],
        "{found:#?}"
    );
}

/// The negative case, on the stream writer's golden lines (the unit tests
/// pin them byte for byte): each validates, and each with any key of any
/// of its objects removed, or a key added to any of them, fails.
#[test]
fn a_missing_or_an_extra_key_fails() {
    let schemas = Schemas::load();
    let path = workspace_root().join("tcptrace/src/report/event_line/testdata/golden.jsonl");
    let golden = fs::read_to_string(&path).expect("the golden lines");
    let lines: Vec<String> = golden.lines().map(str::to_owned).collect();
    let seen = schemas.check_lines(&lines);
    expect_types(&seen, &["state", "reset"], "the golden lines");
    for v in seen.values().flatten() {
        schemas.assert_rejects_changed_keys(v);
    }
    let state = &seen["state"][0];
    let mut no_dwell = state.clone();
    no_dwell.as_object_mut().map(|o| o.remove("dwell_ns"));
    let errors = schemas.errors(&no_dwell);
    assert!(
        errors.iter().any(|e| e.contains("dwell_ns")),
        "the error names the missing key: {errors:?}"
    );
    let mut extra = state.clone();
    extra["local"]["scope"] = 0.into();
    let errors = schemas.errors(&extra);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("/local") && e.contains("scope")),
        "the error names the added key and where: {errors:?}"
    );
}

/// The JSON examples of the README and of `docs/json.md` are real lines.
#[test]
fn documented_examples_validate() {
    let schemas = Schemas::load();
    let mut n = 0;
    for doc in ["README.md", "docs/json.md"] {
        let text = fs::read_to_string(workspace_root().join(doc)).expect("the doc");
        let mut block = false;
        for line in text.lines() {
            match (block, line.trim_end()) {
                (false, "```json") => block = true,
                (true, "```") => block = false,
                (true, l) => {
                    let v: Value = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("{doc}: not JSON ({e}): {l}"));
                    let errors = schemas.errors(&v);
                    assert!(errors.is_empty(), "{doc}: {l}\n{}", errors.join("\n"));
                    n += 1;
                }
                _ => {}
            }
        }
    }
    assert!(n >= 2, "an example in each doc, {n} found");
}

/// Every type of `want` is in `seen`.
fn expect_types(seen: &BTreeMap<String, Vec<Value>>, want: &[&str], what: &str) {
    for kind in want {
        assert!(
            seen.get(*kind).is_some_and(|v| !v.is_empty()),
            "{what}: no {kind} object among {:?}",
            seen.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
        );
    }
}

/// The run's stdout, every line checked; every type of `want` present,
/// the report types with interval and final reports; the negative case on
/// the first object of each type.
fn check_run(run: &ModeRun, want: &[&str]) -> BTreeMap<String, Vec<Value>> {
    run.assert_clean_exit();
    let schemas = Schemas::load();
    let seen = schemas.check_lines(&run.stdout);
    expect_types(&seen, want, &run.to_string());
    for (kind, objects) in &seen {
        if objects[0].get("report").is_some() {
            for report in ["interval", "final"] {
                assert!(
                    objects.iter().any(|v| v["report"] == report),
                    "no {kind} of an {report} report:\n{run}"
                );
            }
        }
        schemas.assert_rejects_changed_keys(&objects[0]);
    }
    seen
}

/// The stream: state changes and RSTs (a close with `SO_LINGER` {1, 0}).
#[test]
fn the_stream_validates() {
    const ADDR: &str = "127.0.0.1:29951";
    let lab = lab!();
    let tracer = ModeTracer::start_with(Command::new(tracer_bin()), "--json", &["--port", "29951"]);
    let server = lab.server(&[
        "--addr",
        ADDR,
        "--read-request",
        "--reply",
        "--wait-peer-close",
    ]);
    let client = lab.client(&["--addr", ADDR, "--send", "--read-reply", "--linger0"]);
    client.wait_success();
    server.wait_success();
    let done = tracer.wait_until(SOON, |lines| {
        let vs = json_objects(lines);
        let resets = vs.iter().filter(|v| v["type"] == "reset").count();
        let closed = vs
            .iter()
            .any(|v| v["old_state"] == "LISTEN" && v["new_state"] == "CLOSE");
        (resets >= 2 && closed).then_some(())
    });
    let run = tracer.stop();
    assert!(done.is_some(), "both RSTs and the listener's close:\n{run}");
    let seen = check_run(&run, &["state", "reset"]);
    assert!(
        seen["reset"].iter().any(|v| v["direction"] == "sent")
            && seen["reset"].iter().any(|v| v["direction"] == "received"),
        "{run}"
    );
}

/// `--hist --by lport`: histograms split by group, and the timewait line.
#[test]
fn hist_validates() {
    let lab = lab!();
    let tracer = ModeTracer::start(&lab.ns, &["--json", "-i", "1", "--by", "lport"]);
    let ports = active_closes(
        &lab,
        "127.0.0.1:29952",
        5,
        Duration::ZERO,
        Clients::OneByOne,
    );
    assert_eq!(ports.len(), 5);
    let seen = tracer.wait_for_json(SOON, |v| {
        v["type"] == "hist_timewait" && v["live_time_wait"] == 5
    });
    let run = tracer.stop();
    assert!(seen.is_some(), "the clients' TIME_WAITs:\n{run}");
    let seen = check_run(&run, &["hist", "hist_timewait"]);
    assert!(
        seen["hist"]
            .iter()
            .any(|v| v["by"] == "lport" && v["group"] == "29952"),
        "{run}"
    );
}

/// `--closewait-leaks`: a leaking server's group, with its stacks. (The
/// leaky server listens on three ports from its own.)
#[test]
fn closewait_leaks_validate() {
    const PORT: u16 = 29953;
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let server = leaky.start(&lab.ns, PORT, 60);
    let tracer = ModeTracer::start_mode(
        &lab.ns,
        "--closewait-leaks",
        &["--json", "-i", "1", "--min-age", "1s"],
    );
    closewait_leak(&lab, PORT, 2);
    let leaked = tracer.wait_for_json(SOON, |v| {
        v["type"] == "closewait_leak" && v["pid"] == server.pid() && v["count"] == 2
    });
    let run = tracer.stop();
    assert!(leaked.is_some(), "the server's leak:\n{run}");
    let seen = check_run(&run, &["closewait_leak"]);
    assert!(
        seen["closewait_leak"]
            .iter()
            .any(|v| v["eof_stack"].as_array().is_some_and(|s| !s.is_empty())),
        "a group with its stack frames:\n{run}"
    );
}

/// `--timewait`: a restart's failed `bind()`, then a client that runs out
/// of ports (100 of them, no `tcp_tw_reuse`): projected, then caught.
#[test]
fn timewait_validates() {
    let lab = lab!();
    lab.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    lab.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let tracer = ModeTracer::start_mode(&lab.ns, "--timewait", &["--json", "-i", "1"]);
    let (_, _restarted) = failed_restart(&lab, "127.0.0.1:29961", 3);
    let (_server, mut client) = churn(&lab, "127.0.0.1:29962");
    let line = client.wait_line("connect-error");
    assert!(line.starts_with("connect-error 99 "), "{line}");
    let failed = tracer.wait_for_json(SOON, |v| v["type"] == "connect_failure");
    let run = tracer.stop();
    assert!(failed.is_some(), "the failed connect():\n{run}");
    let seen = check_run(
        &run,
        &[
            "bind_failure",
            "connect_failure",
            "projection",
            "timewait_report",
        ],
    );
    assert!(
        seen["connect_failure"][0]["census"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "the destination's census:\n{run}"
    );
}

/// A client that closes first, 300 connections, one every 25 ms, to a
/// server at `addr`. Returns both (not waited for).
fn churn(lab: &Lab, addr: &str) -> (integration_tests::Peer, integration_tests::Peer) {
    let server = lab.server(&[
        "--addr",
        addr,
        "--connections",
        "300",
        "--wait-peer-close",
        "--timeout-ms",
        "30000",
    ]);
    let client = lab.client(&[
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
    (server, client)
}

/// The three analyses in one process: each type as alone.
#[test]
fn the_combination_validates() {
    const LEAK_PORT: u16 = 29971;
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let server = leaky.start(&lab.ns, LEAK_PORT, 60);
    let tracer = ModeTracer::start_mode(
        &lab.ns,
        "--closewait-leaks",
        &[
            "--hist",
            "--timewait",
            "--json",
            "-i",
            "1",
            "--min-age",
            "1s",
        ],
    );
    closewait_leak(&lab, LEAK_PORT, 2);
    let _ = active_closes(
        &lab,
        "127.0.0.1:29975",
        3,
        Duration::ZERO,
        Clients::OneByOne,
    );
    let (_, _restarted) = failed_restart(&lab, "127.0.0.1:29976", 2);
    let all_seen = tracer.wait_until(SOON, |lines| {
        let vs = json_objects(lines);
        let has = |t: &str| vs.iter().any(|v| v["type"] == t);
        let leak = vs
            .iter()
            .any(|v| v["type"] == "closewait_leak" && v["pid"] == server.pid());
        (leak && has("bind_failure") && has("hist_timewait") && has("timewait_report"))
            .then_some(())
    });
    let run = tracer.stop();
    assert!(all_seen.is_some(), "every analysis reported:\n{run}");
    let seen = check_run(
        &run,
        &[
            "hist",
            "hist_timewait",
            "closewait_leak",
            "bind_failure",
            "timewait_report",
        ],
    );
    assert!(
        seen["hist"]
            .iter()
            .all(|v| v["by"].is_null() && v["group"].is_null()),
        "not split: {run}"
    );
}
