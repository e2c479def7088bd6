//! `--closewait-leaks`: sockets left in `CLOSE_WAIT` by a real leaky program
//! (`tests/peers/leaky_server.c`, compiled by the test), reported by owner
//! and code path; sockets older than tcptrace; short `CLOSE_WAIT`s that are
//! not leaks; leaks that end when their owner exits; bad flags.
//!
//! tcptrace runs inside each test's network namespace (`ip netns exec`):
//! sockets already in `CLOSE_WAIT` at start-up come from `sock_diag`, which
//! only sees tcptrace's own namespace. The tracepoints are global, so groups
//! are picked by the server's pid, or the run is limited with `--port`.
//!
//! Needs root and a C compiler (`cc`), and the tests share kernel state: run
//! with `--test-threads=1`, e.g. `sudo cargo xtask test`, or
//! `cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1`.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    EXIT_TIMEOUT, LEAKY_RECV_BUF, Lab, LeakGroup, LeakReport, LeakTracer, LeakyServerBin, Netns,
    lab, patient, run_bounded, tracer_bin,
};

/// Connections per handler.
const N: u64 = 5;
/// What each client of `leaky_noread_handler` sends: more than its single
/// `recv` takes, so data stays queued whatever the timing. (With a short
/// request sent just before the FIN, the kernel may merge the FIN into the
/// queued data and that one `recv` consumes both: Recv-Q 0.)
const NOREAD_SEND: u64 = 1000;
/// What stays queued per never-read socket: the rest of the data and the FIN.
const NOREAD_UNREAD: u64 = NOREAD_SEND - LEAKY_RECV_BUF + 1;
/// How long a test waits for the report it expects.
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

/// `n` clients, each its own process: connect to `port`, send, close first.
/// `send_bytes`: how much to send (default: the short request line). Returns
/// their pids.
fn clients(lab: &Lab, port: u16, n: u64, send_bytes: Option<u64>) -> Vec<u32> {
    let addr = format!("127.0.0.1:{port}");
    let bytes = send_bytes.map(|b| b.to_string());
    let mut args = vec!["--addr", addr.as_str(), "--send"];
    if let Some(b) = &bytes {
        args.extend(["--send-bytes", b.as_str()]);
    }
    (0..n)
        .map(|_| {
            let c = lab.client(&args);
            let pid = c.pid();
            let lines = c.wait_success();
            assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
            pid
        })
        .collect()
}

/// Recv-Q of each socket in `CLOSE_WAIT` on local `port` in `ns`, per `ss`.
fn close_wait_recv_queues(ns: &Netns, port: u16) -> Vec<u64> {
    let filter = format!("sport = :{port}");
    let out = run_bounded(
        Command::new("ip").args([
            "netns",
            "exec",
            ns.name(),
            "ss",
            "-Htn",
            "state",
            "close-wait",
            &filter,
        ]),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ss: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // With a state filter ss leaves out the State column: Recv-Q comes first.
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|q| q.parse().ok())
                .unwrap_or_else(|| panic!("no Recv-Q in ss line {l:?}"))
        })
        .collect()
}

/// `N` connections to each of the leaky server's leaky handlers (EOF at
/// `port`, unread data at `port + 1`), waited for until all sit in
/// CLOSE_WAIT; the clients' pids.
fn leak_in_both_handlers(lab: &Lab, port: u16) -> Vec<u32> {
    let mut pids = clients(lab, port, N, None);
    pids.extend(clients(lab, port + 1, N, Some(NOREAD_SEND)));
    wait_close_wait(&lab.ns, port, N);
    wait_close_wait(&lab.ns, port + 1, N);
    pids
}

/// Wait (bounded) until `n` sockets on `port` are in `CLOSE_WAIT`; returns
/// their Recv-Qs.
fn wait_close_wait(ns: &Netns, port: u16, n: u64) -> Vec<u64> {
    let n = usize::try_from(n).expect("a small count");
    let mut queues = Vec::new();
    let deadline = Instant::now() + patient(Duration::from_secs(10));
    while Instant::now() < deadline {
        queues = close_wait_recv_queues(ns, port);
        if queues.len() == n {
            return queues;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "expected {n} sockets in CLOSE_WAIT on port {port}, ss shows {}",
        queues.len()
    );
}

/// The index of the first frame of `frames` named `function`.
fn frame_index(frames: &[integration_tests::LeakFrame], function: &str) -> Option<usize> {
    frames
        .iter()
        .position(|f| f.function.as_deref() == Some(function))
}

/// A whole path through the leaky server: `function` (found from the user
/// stack pointer: glibc's `recv` wrapper has no frame), then `main`, in the
/// compiled binary with its source file.
fn assert_handler_path(g: &LeakGroup, frames: &[integration_tests::LeakFrame], function: &str) {
    let i = frame_index(frames, function)
        .unwrap_or_else(|| panic!("no {function} frame in the stack of {g}"));
    let f = &frames[i];
    assert!(
        f.module
            .as_deref()
            .is_some_and(|m| m.ends_with("/leaky_server")),
        "{function} is in the leaky_server binary: {f:?}"
    );
    assert!(
        f.file
            .as_deref()
            .is_some_and(|p| p.ends_with("leaky_server.c"))
            && f.line.is_some(),
        "{function} resolves to leaky_server.c:LINE (built with -g): {f:?}"
    );
    assert!(
        f.recovered,
        "{function} is the caller of the frameless recv wrapper: recovered from the stack \
         pointer: {g}"
    );
    let main = frame_index(frames, "main")
        .unwrap_or_else(|| panic!("no main frame after {function} in {g}"));
    assert!(main > i, "main calls {function}: {g}");
    assert!(i > 0, "recv (libc) is the innermost frame: {g}");
}

/// The leaky server's two groups in `r`: (`leaky_eof_handler`,
/// `leaky_noread_handler`), each exactly as driven.
/// An interval report in which both leaky handlers of `server` have their
/// group of N sockets: what [`assert_two_leak_groups`] then checks.
fn both_groups_settled(r: &LeakReport, server: u32) -> bool {
    let g = r.of_pid(server);
    // Named too: the final report (after the tracer's SIGINT) keeps the
    // frames the last one resolved rather than symbolizing under the stop
    // budget, which emulated kernels overrun.
    let named = |f: &str| g.iter().any(|g| g.functions().iter().any(|n| n == f));
    !r.is_final()
        && g.len() == 2
        && g.iter().all(|g| g.count() == N)
        && named("leaky_eof_handler")
        && named("leaky_noread_handler")
}

fn assert_two_leak_groups(r: &LeakReport, server: u32, port: u16) {
    let groups = r.of_pid(server);
    assert_eq!(
        groups.len(),
        2,
        "two code paths leak, so two groups of pid {server}:\n{r}"
    );
    let has = |g: &LeakGroup, f: &str| g.functions().iter().any(|n| n == f);
    let eof = groups
        .iter()
        .find(|g| has(g, "leaky_eof_handler"))
        .unwrap_or_else(|| panic!("no group names leaky_eof_handler:\n{r}"));
    let noread = groups
        .iter()
        .find(|g| has(g, "leaky_noread_handler"))
        .unwrap_or_else(|| panic!("no group names leaky_noread_handler:\n{r}"));

    for g in [eof, noread] {
        assert_eq!(g.comm(), Some("leaky_server"), "{g}");
        assert!(
            g.cmdline().is_some_and(|c| c.contains("leaky_server")),
            "{g}"
        );
        assert_eq!(g.count(), N, "{g}");
        assert!(
            !g.age_lower_bound(),
            "tcptrace saw these sockets enter CLOSE_WAIT: exact ages: {g}"
        );
        assert!(g.oldest_age_s() < 60.0, "younger than the test itself: {g}");
    }

    // Read to EOF, never closed: nothing left unread.
    assert_eq!(eof.read_eof_not_closed(), N, "{eof}");
    assert_eq!(eof.never_read_to_eof(), 0, "{eof}");
    assert_eq!(eof.unread_bytes(), 0, "EOF read, the FIN consumed: {eof}");
    assert_eq!(
        eof.endpoints(),
        [(format!("127.0.0.1:{port}"), "127.0.0.1".to_owned(), N)],
        "{eof}"
    );
    let eof_stack = eof.eof_stack();
    assert_eq!(
        eof_stack[0].function.as_deref(),
        Some("__recv"),
        "EOF read in recv: {eof}"
    );
    assert_handler_path(eof, &eof_stack, "leaky_eof_handler");
    assert_handler_path(eof, &eof.first_stack(), "leaky_eof_handler");
    assert!(
        frame_index(&eof.first_stack(), "leaky_noread_handler").is_none(),
        "{eof}"
    );

    // One recv, then nothing: data and the FIN stay queued.
    assert_eq!(noread.never_read_to_eof(), N, "{noread}");
    assert_eq!(noread.read_eof_not_closed(), 0, "{noread}");
    assert!(
        noread.eof_stack().is_empty() && !noread.0["eof_stack_truncated"].as_bool().unwrap_or(true),
        "never read EOF, so no EOF stack: {noread}"
    );
    assert!(noread.unread_bytes() >= N, "the FINs at least: {noread}");
    assert_eq!(
        noread.unread_bytes(),
        N * NOREAD_UNREAD,
        "each socket keeps {NOREAD_SEND} - {LEAKY_RECV_BUF} bytes and its FIN: {noread}"
    );
    assert_eq!(
        noread.endpoints(),
        [(format!("127.0.0.1:{}", port + 1), "127.0.0.1".to_owned(), N)],
        "{noread}"
    );
    let first = noread.first_stack();
    assert_eq!(first[0].function.as_deref(), Some("__recv"), "{noread}");
    assert_handler_path(noread, &first, "leaky_noread_handler");
}

/// Test 1: one server leaks in two code paths and closes properly in a third.
/// Each leaky path is a group of its own with the right class, counts,
/// endpoints and stack; the good path and the clients never appear. The
/// text report, from a second tracer watching the same run, names both.
#[test]
fn reports_each_leaky_handler_as_its_own_group() {
    const PORT: u16 = 29401;
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let server = leaky.start(&lab.ns, PORT, 60);
    let pid = server.pid();
    let json = LeakTracer::start(&lab.ns, &["--json", "--min-age", "2s", "-i", "1"]);
    let text = LeakTracer::start(&lab.ns, &["--min-age", "2s", "-i", "1"]);

    let mut client_pids = leak_in_both_handlers(&lab, PORT);
    client_pids.extend(clients(&lab, PORT + 2, N, None));

    let settled = json.wait_for_report(REPORT_TIMEOUT, |r| both_groups_settled(r, pid));
    let run = json.stop();
    // The text tracer's periodic reports symbolize under the full
    // --symbolize-timeout; its final report alone shares the short stop
    // budget, which a loaded machine can overrun (frames "interrupted").
    let handlers = ["leaky_eof_handler", "leaky_noread_handler"];
    text.wait_for_text(REPORT_TIMEOUT, &handlers);
    let text = text.stop();
    run.assert_clean_exit();
    text.assert_clean_exit();
    let settled = settled.unwrap_or_else(|| {
        panic!("no interval report with both groups of {N} within {REPORT_TIMEOUT:?}:\n{run}")
    });
    assert_two_leak_groups(&settled, pid, PORT);
    let last = run
        .reports()
        .pop()
        .unwrap_or_else(|| panic!("no report:\n{run}"));
    assert!(last.is_final(), "the last report is the final one:\n{run}");
    assert_two_leak_groups(&last, pid, PORT);

    for r in run.reports() {
        for g in &r.groups {
            assert!(
                !g.functions().iter().any(|f| f == "good_handler"),
                "good_handler closes its sockets: {g}"
            );
            assert!(
                g.pid().is_none_or(|p| !client_pids.contains(&p)),
                "the clients closed first and never sat in CLOSE_WAIT: {g}"
            );
            if g.pid() == Some(pid) {
                assert!(
                    g.endpoints()
                        .iter()
                        .all(|e| e.0 != format!("127.0.0.1:{}", PORT + 2)),
                    "good_handler's port: {g}"
                );
            }
        }
    }
    let (closed, _) = run.closed_summary();
    assert!(
        closed >= N,
        "good_handler's {N} sockets left CLOSE_WAIT during the run:\n{}",
        run.stderr
    );

    let t = text.text();
    for want in [
        format!("pid {pid} (leaky_server)"),
        "leaky_eof_handler".to_owned(),
        "leaky_noread_handler".to_owned(),
        "read EOF at".to_owned(),
        "first touched at".to_owned(),
    ] {
        assert!(t.contains(&want), "no {want:?} in the text report:\n{t}");
    }
    assert!(!t.contains("good_handler"), "{t}");
    assert!(t.contains("Final report:"), "{t}");
    drop(server);
}

/// `STACKS` has one bucket per entry and refuses a stack whose bucket holds
/// another. With a one-entry `STACKS` every code path after the first
/// collides: they must all reach `STACK_SPILL`, so that both handlers are
/// still named, with no stack lost.
#[test]
fn stacks_that_collide_in_the_stack_map_are_kept() {
    const PORT: u16 = 29441;
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let server = leaky.start(&lab.ns, PORT, 60);
    let pid = server.pid();
    let tracer = LeakTracer::start_env(
        &lab.ns,
        &[("TCPTRACE_STACKS_ENTRIES", "1")],
        &["--json", "--min-age", "2s", "-i", "1"],
    );
    leak_in_both_handlers(&lab, PORT);
    let settled = tracer.wait_for_report(REPORT_TIMEOUT, |r| both_groups_settled(r, pid));
    let run = tracer.stop();
    // Also: "0 stack captures failed".
    run.assert_clean_exit();
    let settled = settled.unwrap_or_else(|| {
        panic!("no interval report with both groups of {N} within {REPORT_TIMEOUT:?}:\n{run}")
    });
    assert_two_leak_groups(&settled, pid, PORT);
    drop(server);
}

/// Test 2: leaks made before tcptrace starts are found through sock_diag in
/// its namespace, with the owner from /proc, an age that is only a lower
/// bound, no stacks, and the class from Recv-Q. A `--port` filter for another
/// port hides them.
#[test]
fn finds_leaks_created_before_it_started() {
    const PORT: u16 = 29411;
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let server = leaky.start(&lab.ns, PORT, 60);
    let pid = server.pid();
    clients(&lab, PORT + 1, 3, Some(NOREAD_SEND));
    let queues = wait_close_wait(&lab.ns, PORT + 1, 3);
    assert_eq!(queues, [NOREAD_UNREAD; 3], "ss Recv-Q");

    let tracer = LeakTracer::start(
        &lab.ns,
        &["--json", "--min-age", "1s", "-i", "1", "-d", "4"],
    );
    let other = PORT + 2;
    let filtered = LeakTracer::start(
        &lab.ns,
        &[
            "--json",
            "--min-age",
            "1s",
            "-i",
            "1",
            "-d",
            "4",
            "--port",
            &other.to_string(),
        ],
    );
    let run = tracer.wait_end(Duration::from_secs(4) + EXIT_TIMEOUT);
    let filtered = filtered.wait_end(Duration::from_secs(4) + EXIT_TIMEOUT);
    run.assert_clean_exit();
    filtered.assert_clean_exit();

    let reports = run.reports();
    let found: Vec<&LeakGroup> = reports.iter().flat_map(|r| r.of_pid(pid)).collect();
    assert!(!found.is_empty(), "no group of pid {pid}:\n{run}");
    for g in &found {
        assert_eq!(g.count(), 3, "{g}");
        assert!(g.age_lower_bound(), "older than tcptrace: {g}");
        assert_eq!(g.never_read_to_eof(), 3, "Recv-Q > 0: {g}");
        assert_eq!(g.read_eof_not_closed(), 0, "{g}");
        assert_eq!(g.unread_bytes(), 3 * NOREAD_UNREAD, "ss says so: {g}");
        assert!(
            g.eof_stack().is_empty() && g.first_stack().is_empty(),
            "no stacks for sockets older than tcptrace: {g}"
        );
        assert_eq!(g.comm(), Some("leaky_server"), "{g}");
        assert!(
            g.cmdline().is_some_and(|c| c.contains("leaky_server")),
            "{g}"
        );
        assert_eq!(
            g.endpoints(),
            [(format!("127.0.0.1:{}", PORT + 1), "127.0.0.1".to_owned(), 3)],
            "{g}"
        );
        // The lower bound is how long tcptrace has watched: at most its run.
        assert!(
            g.oldest_age_s() >= 1.0 && g.oldest_age_s() < 4.0 + 2.0,
            "{g}"
        );
    }
    assert!(
        run.final_groups().iter().any(|g| g.pid() == Some(pid)),
        "still leaking at the end: in the final report:\n{run}"
    );
    assert!(
        filtered.stdout.is_empty(),
        "--port {other} matches none of the leaks:\n{filtered}"
    );
}

/// Test 3: a server that closes one second after EOF is not a leak with
/// `--min-age 5s`: no report names it, and the summary counts one
/// `CLOSE_WAIT` that ended, none after leaking.
#[test]
fn short_close_wait_is_never_reported() {
    const PORT: u16 = 29421;
    let lab = lab!();
    let port = PORT.to_string();
    let tracer = LeakTracer::start(
        &lab.ns,
        &[
            "--json",
            "--min-age",
            "5s",
            "-i",
            "1",
            "-d",
            "8",
            "--port",
            &port,
        ],
    );
    let addr = format!("127.0.0.1:{PORT}");
    let server = lab.server(&[
        "--addr",
        &addr,
        "--wait-peer-close",
        "--close-delay-ms",
        "1000",
    ]);
    let spid = server.pid();
    let client = lab.client(&["--addr", &addr, "--send"]);
    client.wait_success();
    let lines = server.wait_success();
    assert!(
        lines.iter().any(|l| l == "peer-closed"),
        "server: {lines:?}"
    );
    let run = tracer.wait_end(Duration::from_secs(8) + EXIT_TIMEOUT);
    run.assert_clean_exit();
    assert!(
        run.reports().iter().all(|r| r.of_pid(spid).is_empty()),
        "a 1 s CLOSE_WAIT is no leak at --min-age 5s:\n{run}"
    );
    assert!(
        run.stdout.is_empty(),
        "nothing on port {PORT} leaks:\n{run}"
    );
    assert_eq!(
        run.closed_summary(),
        (1, 0),
        "one CLOSE_WAIT ended, none after leaking:\n{run}"
    );
    let (min, _, max) = run.dwell_summary().expect("one dwell");
    assert!(
        min >= Duration::from_secs(1) && max < Duration::from_secs(5),
        "the server closed 1 s after EOF:\n{run}"
    );
}

/// Test 4: leaks end when their owner exits (the kernel closes its fds:
/// `CLOSE_WAIT` -> `LAST_ACK`). Reported while the server lives, absent from
/// the final report, counted as leaks that ended.
#[test]
fn leaks_end_when_the_owner_exits() {
    const PORT: u16 = 29431;
    // The server's lifetime: `leaky_server` counts whole seconds of
    // `time()`, so it lives between `lifetime - 1` and `lifetime` seconds;
    // 4 leaves an interval report at least ~2 s of leaks past --min-age 1s
    // (scaled by TCPTRACE_TEST_SLOWDOWN, under emulation, as the server's
    // own lifetime is).
    const LIFETIME: u32 = 4;
    let lifetime =
        u32::try_from(patient(Duration::from_secs(LIFETIME.into())).as_secs()).expect("small");
    let lab = lab!();
    let leaky = LeakyServerBin::build();
    let port = PORT.to_string();
    let duration = (lifetime + 4).to_string();
    let tracer = LeakTracer::start(
        &lab.ns,
        &[
            "--json",
            "--min-age",
            "1s",
            "-i",
            "1",
            "-d",
            &duration,
            "--port",
            &port,
        ],
    );
    let server = leaky.start(&lab.ns, PORT, LIFETIME);
    let pid = server.pid();
    clients(&lab, PORT, 2, None);
    let seen = tracer.wait_for_report(Duration::from_secs(u64::from(lifetime) + 2), |r| {
        !r.is_final() && r.of_pid(pid).iter().any(|g| g.count() == 2)
    });
    server.wait_success(Duration::from_secs(u64::from(lifetime) + 5));
    let run = tracer.wait_end(Duration::from_secs(u64::from(lifetime) + 4) + EXIT_TIMEOUT);
    run.assert_clean_exit();

    let seen = seen.unwrap_or_else(|| {
        panic!("no interval report showed the 2 leaks while the server lived:\n{run}")
    });
    let g = seen.of_pid(pid);
    assert_eq!(g.len(), 1, "{seen}");
    assert_eq!(g[0].read_eof_not_closed(), 2, "{}", g[0]);
    assert!(
        frame_index(&g[0].eof_stack(), "leaky_eof_handler").is_some(),
        "{}",
        g[0]
    );
    assert!(
        run.final_groups().is_empty(),
        "the owner exited: nothing leaks at the end:\n{run}"
    );
    let last = run.reports().pop().expect("the report seen above");
    assert!(
        !last.is_final() && last.of_pid(pid).len() == 1,
        "the last report with lines is an interval report from while the server lived:\n{run}"
    );
    assert_eq!(
        run.closed_summary(),
        (2, 2),
        "both leaks ended, after leaking longer than 1s:\n{run}"
    );
    let (min, _, _) = run.dwell_summary().expect("two dwells");
    assert!(min >= Duration::from_secs(1), "{run}");
}

/// Test 5: bad values for the leak flags, and a leak flag without the mode,
/// are usage errors (exit 2) that say what is wrong.
#[test]
fn bad_leak_flags_exit_2() {
    let run = |args: &[&str]| {
        let out = run_bounded(
            Command::new(tracer_bin()).args(args),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "tcptrace {args:?}: {err}");
        assert!(
            out.stdout.is_empty(),
            "tcptrace {args:?}: nothing on stdout"
        );
        err
    };
    let err = run(&["--closewait-leaks", "--min-age", "soon"]);
    assert!(err.contains("--min-age"), "{err}");
    let err = run(&["--closewait-leaks", "--interval", "0"]);
    assert!(err.contains("--interval"), "{err}");
    assert!(err.contains("greater than zero"), "{err}");
    let err = run(&["--min-age", "5s"]);
    assert!(err.contains("--closewait-leaks"), "{err}");
}
