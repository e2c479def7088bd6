//! Losses: the stream counts every record it loses (with its reader
//! stalled, the kernel's rings fill, and every transition is either printed
//! or counted as lost, none both and none neither); every mode prints the
//! same loss line; and an error mid-run still prints it.
//!
//! Needs root, and the tests share kernel state (tracepoints are global):
//! run with `--test-threads=1`, e.g. `sudo cargo xtask test`, or
//! `cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1`.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use integration_tests::{
    EXIT_TIMEOUT, MISSED_TRANSITIONS, SKIPPED_RUNS, lab, losses, number_before, require_root,
    run_bounded, signal, spawn_tracer_raw, stderr_line, tracer_bin, wait_exit,
};

/// Connections made while tcptrace's stdout is not read. Each one is ten
/// transitions on loopback (client: CLOSE -> SYN_SENT -> ESTABLISHED ->
/// FIN_WAIT1 -> FIN_WAIT2 -> CLOSE; server child: LISTEN -> SYN_RECV ->
/// ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE), 20 000 records: more
/// than a stalled reader holds (a pipe's 64 KiB of JSON lines and one
/// drain's batch) plus the smallest per-CPU rings (256 KiB, 4096 records,
/// each; this box has 2 CPUs).
const CONNECTIONS: u64 = 2000;
const TRANSITIONS_PER_CONNECTION: u64 = 10;

/// A reader that stalls (stdout not read while 2000 connections run) makes
/// the stream lose records in the kernel, and the summary counts each one:
/// printed + ring-buffer full = every transition the connections made,
/// exactly. Fails if losses go uncounted (the sum falls short), are counted
/// twice (it overshoots), or do not happen (the stall did not bite).
#[test]
fn stalled_reader_losses_are_counted_exactly() {
    let lab = lab!();
    let addr = "127.0.0.1:29701";
    let n = CONNECTIONS.to_string();
    // The listener exists before tcptrace: of its transitions, only its
    // close (LISTEN -> CLOSE, when the server exits) is traced.
    let server = lab.server(&[
        "--addr",
        addr,
        "--connections",
        &n,
        "--read-request",
        "--reply",
        "--wait-peer-close",
        "--timeout-ms",
        "60000",
    ]);
    let (mut tracer, stderr) =
        spawn_tracer_raw(&["--json", "--port", "29701", "--ringbuf-kib", "4"]);
    let stdout = tracer.stdout.take().expect("piped stdout");

    let client = lab.client(&[
        "--addr",
        addr,
        "--connections",
        &n,
        "--one-by-one",
        "--send",
        "--read-reply",
    ]);
    client.wait_success();
    server.wait_success();

    // Now read: everything tcptrace still holds comes out, then SIGINT.
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stdout).lines() {
            match l {
                Ok(l) => lines.push(l),
                Err(e) => panic!("reading tcptrace's stdout: {e}"),
            }
        }
        lines
    });
    // Two drain periods and margin for the last records to be printed.
    thread::sleep(Duration::from_millis(500));
    signal(&tracer, libc::SIGINT);
    let status = wait_exit(&mut tracer, "tcptrace", EXIT_TIMEOUT);
    let err = stderr();
    assert!(status.success(), "tcptrace exited {status}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines = reader.join().expect("the reader thread");

    let summary = stderr_line(&err, "tcptrace: ", " events (");
    let losses = stderr_line(&err, "tcptrace: losses: ", " ring-buffer full");
    let lost = number_before(losses, " ring-buffer full");
    let received = number_before(summary, " state,");
    let resets = number_before(summary, " reset)");
    let printed = number_before(summary, " printed");
    assert_eq!(resets, 0, "no connection was reset: {summary}");
    assert_eq!(
        printed,
        lines.len() as u64,
        "the summary's printed count is what came out: {summary}"
    );
    assert_eq!(
        printed, received,
        "every record received was printed: {summary}"
    );
    for l in &lines {
        assert!(
            l.contains("\"type\":\"state\"") && l.contains("29701"),
            "only the test's transitions are traced: {l}"
        );
    }
    assert!(
        lost > 0,
        "the stalled reader should have overflowed the rings: {summary}; {losses}"
    );
    // What was printed, by transition: a sample of what the kernel did,
    // for a failure to show which kind came more or less often.
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    for l in &lines {
        let e = integration_tests::Event::parse(l);
        let (old, new) = e.transition();
        *kinds.entry(format!("{old}->{new}")).or_default() += 1;
    }
    assert_eq!(
        received + lost,
        CONNECTIONS * TRANSITIONS_PER_CONNECTION + 1,
        "printed + lost must be every transition of {CONNECTIONS} connections and the \
         listener's close:\n{summary}\n{losses}\nprinted by transition: {kinds:?}"
    );
}

/// Every mode, and all three analyses together, end a `-d` run with the
/// same loss line: one format, every counter named, zeros included, the
/// programs' skipped runs read from the kernel.
#[test]
fn every_mode_prints_the_same_loss_line() {
    let lab = lab!();
    let modes: [&[&str]; 5] = [
        &[],
        &["--hist"],
        &["--closewait-leaks"],
        &["--timewait"],
        &["--closewait-leaks", "--hist", "--timewait"],
    ];
    let mut labels: Option<Vec<String>> = None;
    for mode in modes {
        let out = run_bounded(
            lab.ns
                .command(&tracer_bin())
                .args(mode)
                .args(["-d", "1", "--port", "29702"]),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode:?}: {}\n{err}", out.status);
        let these: Vec<String> = losses(&err).into_iter().map(|(l, _)| l).collect();
        for want in [
            "ring-buffer full",
            "socket-map evictions",
            "insert failures",
            "field-read errors",
            "undecodable",
            "stack captures failed",
            "dwells not counted (histogram map full)",
            "TIME_WAIT log entries overwritten",
            "map entries unreadable",
            "sock_diag requests failed",
            SKIPPED_RUNS,
            MISSED_TRANSITIONS,
        ] {
            assert!(
                these.iter().any(|l| l == want),
                "{mode:?}: no {want:?}:\n{err}"
            );
        }
        // `losses` reads every count as a number, so no `?` either: every
        // kernel the tests run on (5.12+) prints each program's
        // `recursion_misses`, and tcptrace read them. Whether any run was
        // skipped is up to interrupts (see SKIPPED_RUNS), not checked.
        match &labels {
            None => labels = Some(these),
            Some(first) => assert_eq!(first, &these, "{mode:?}:\n{err}"),
        }
    }
}

/// An error in the middle of a run (stdout is /dev/full: the first write
/// fails with ENOSPC) exits 1 with the error, after the loss line.
#[test]
fn an_error_mid_run_still_prints_the_loss_line() {
    require_root();
    let mut child = Command::new(tracer_bin())
        .args(["--port", "29703", "-d", "10"])
        .stdin(Stdio::null())
        .stdout(
            File::options()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning tcptrace");
    let stderr = child.stderr.take().expect("piped");
    let reader = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = wait_exit(&mut child, "tcptrace", Duration::from_secs(20));
    let err = reader.join().expect("stderr reader");
    assert_eq!(status.code(), Some(1), "{err}");
    let losses_at = err.find("tcptrace: losses: ");
    let error_at = err.find("No space left on device");
    assert!(
        matches!((losses_at, error_at), (Some(l), Some(e)) if l < e),
        "the loss line, then the error:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
