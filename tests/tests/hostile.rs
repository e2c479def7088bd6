//! A traced process chooses its comm (`prctl(PR_SET_NAME)`) and its command
//! line: a server named ESC `[2J`, a line break, a quote, a backslash, a CR,
//! a C1 CSI and DEL leaks sockets in `CLOSE_WAIT`, and no output of tcptrace
//! lets one of those characters through raw. The text of the event stream,
//! of `--closewait-leaks` and of `--hist --by comm` (stdout and stderr) has
//! no control character but the line ends, and shows the comm escaped; the
//! `/metrics` page passes `promtool check metrics` and carries the comm as
//! a label value.
//!
//! The three tracers run at once, inside the test's network namespace (the
//! leak report's `sock_diag`, the `/metrics` listener). Needs root, a C
//! compiler (`cc`) and promtool (Debian's `prometheus`), and the tests share
//! kernel state: run with `--test-threads=1`, e.g. `sudo cargo xtask test`.

use std::{
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    LeakyServerBin, Metrics, ModeRun, ModeTracer, lab, promtool_check, tracer_bin,
};

/// The leaky server's port (it listens on the next two too).
const PORT: u16 = 29801;
const METRICS: &str = "127.0.0.1:29809";
/// The comm the server gives itself: 11 bytes of the 15 a comm keeps.
const COMM: &[u8] = b"\x1b[2J\n\"\\\r\xc2\x9b\x7f";
/// [`COMM`] as the text outputs show it.
const SHOWN: &str = r#"\x1b[2J\n"\\\r\u{9b}\x7f"#;
/// Leaked connections.
const N: u32 = 3;
/// How long a test waits for the output it expects.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Poll `tracer`'s stdout for a line with every one of `parts`.
fn wait_line(tracer: &ModeTracer, what: &str, parts: &[&str]) -> String {
    tracer
        .wait_until(TIMEOUT, |lines| {
            lines
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: no line with {parts:?} within {TIMEOUT:?}; stdout:\n{}\nstderr:\n{}",
                tracer.lines().join("\n"),
                tracer.stderr()
            )
        })
}

/// A clean exit, and no control character in what it printed but the line
/// ends (stdout comes as lines).
fn assert_no_raw_control(run: &ModeRun) {
    run.assert_clean_exit();
    for line in &run.stdout {
        assert!(
            !line.chars().any(char::is_control),
            "a raw control character on stdout: {line:?}\n{run}"
        );
    }
    assert!(
        !run.stderr.chars().any(|c| c.is_control() && c != '\n'),
        "a raw control character on stderr: {:?}",
        run.stderr
    );
}

/// `/metrics` once it has the server's ESTABLISHED dwells under its comm;
/// every page scraped passes `promtool check metrics` first.
fn scrape_until_labelled(lab: &integration_tests::Lab, comm: &str) -> Metrics {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let page = lab.http_get(METRICS, "/metrics");
        promtool_check(&page);
        let m = Metrics::parse(&page);
        let labels = [("state", "ESTABLISHED"), ("comm", comm)];
        let count = m.get("tcptrace_state_dwell_seconds_count", &labels);
        if count.is_some_and(|c| (c - f64::from(N)).abs() < 0.5) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no {N} ESTABLISHED dwells with comm {comm:?} in /metrics within {TIMEOUT:?}:\n{}",
            m.text
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_hostile_comm_reaches_no_output_raw() {
    let lab = lab!();
    let server_bin = LeakyServerBin::build();
    let server = server_bin.start_named(&lab.ns, PORT, 60, Some(COMM));
    let pid = server.pid().to_string();
    let port = PORT.to_string();
    // The event stream, as text: `tcptrace --port PORT`.
    let stream = ModeTracer::start_with(lab.ns.command(&tracer_bin()), "--port", &[&port]);
    let leaks = ModeTracer::start_mode(
        &lab.ns,
        "--closewait-leaks",
        &["--min-age", "1s", "-i", "1"],
    );
    let hist = ModeTracer::start(
        &lab.ns,
        &[
            "--by",
            "comm",
            "-i",
            "1",
            "--port",
            &port,
            "--prometheus",
            METRICS,
        ],
    );

    // Each client sends, and closes only once the server has read (its
    // recv names the socket's owner before the FIN arrives): the server's
    // ESTABLISHED dwells are counted under its comm.
    let addr = format!("127.0.0.1:{PORT}");
    for _ in 0..N {
        let c = lab.client(&["--addr", &addr, "--send", "--close-delay-ms", "300"]);
        let lines = c.wait_success();
        assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
    }
    let n = usize::try_from(N).expect("small");
    lab.wait_ss("close-wait", &["sport", "=", &format!(":{PORT}")], n);

    wait_line(
        &stream,
        "the stream",
        &[&format!(" {pid} "), SHOWN, "ESTABLISHED -> CLOSE_WAIT"],
    );
    wait_line(
        &leaks,
        "the leak report",
        &[&format!("pid {pid} ({SHOWN}): {N} sockets in CLOSE_WAIT")],
    );
    wait_line(&leaks, "the leak report's cmdline", &["cmdline: ", SHOWN]);
    wait_line(
        &hist,
        "the histograms",
        &[&format!("ESTABLISHED [comm={SHOWN}]: count {N} ")],
    );

    let comm = String::from_utf8_lossy(COMM);
    let m = scrape_until_labelled(&lab, &comm);
    for h in m.matching("tcptrace_state_dwell_seconds_count", &[]) {
        let labels: Vec<(&str, &str)> = h
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let buckets = m.buckets("tcptrace_state_dwell_seconds", &labels);
        assert_eq!(
            buckets.last(),
            Some(&("+Inf".to_owned(), h.value)),
            "every histogram ends in a +Inf bucket of its count: {labels:?}\n{}",
            m.text
        );
    }

    for run in [stream.stop(), leaks.stop(), hist.stop()] {
        assert_no_raw_control(&run);
    }
    drop(server);
}
