//! The leak report's symbolizer against the processes it symbolizes
//! (`tests/peers/hostile_server.c`): a perf map or a debug-link target that
//! is a FIFO is refused before anything opens it; a leased perf map is
//! refused at once (it is opened without blocking); an open that blocks
//! anyway (a debug-link target that is regular, but whose owner holds a
//! write lease, so every other open waits for the lease to break) costs one
//! `--symbolize-timeout`,
//! after which that process's frames say "timed out"; a well-behaved `-g`
//! leaker in the same run keeps its source lines; and SIGTERM while the
//! symbolizer is blocked ends the run at once, final report included.
//!
//! Needs root, `cc` and `objcopy` (binutils), and the tests share kernel
//! state: run with `--test-threads=1`, e.g. `sudo cargo xtask test`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    Lab, LeakFrame, LeakGroup, LeakReport, LeakTracer, LeakyServerBin, TempDir, lab, run_bounded,
};

/// How long a test waits for the report it expects: the hostile processes
/// cost one `--symbolize-timeout` each, once.
const REPORT_TIMEOUT: Duration = Duration::from_secs(20);
/// What a test gives the symbolizer per process: 1 s, scaled like every
/// wait under emulation, where reading one binary's debug info takes longer.
fn symbolize_timeout() -> String {
    format!(
        "{}s",
        integration_tests::patient(Duration::from_secs(1)).as_secs()
    )
}

/// Connect to `port` `n` times: send, close first (the server leaks).
fn leak(lab: &Lab, port: u16, n: usize) {
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..n {
        let lines = lab.client(&["--addr", &addr, "--send"]).wait_success();
        assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
    }
}

/// Leak reports every second of sockets older than 1 s, in JSON.
fn leak_tracer(lab: &Lab, symbolize_timeout: &str) -> LeakTracer {
    LeakTracer::start(
        &lab.ns,
        &[
            "--json",
            "--min-age",
            "1s",
            "-i",
            "1",
            "--symbolize-timeout",
            symbolize_timeout,
        ],
    )
}

fn run(cmd: &mut Command) {
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of `bin` whose `.gnu_debuglink` names `target` (absolute), which
/// is then replaced by a FIFO when `fifo`.
fn with_debug_link(bin: &Path, dir: &Path, name: &str, fifo: bool) -> (PathBuf, PathBuf) {
    let target = dir.join(format!("{name}.debug"));
    let linked = dir.join(name);
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(bin)
        .arg(&target));
    run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", target.display()))
        .arg(bin)
        .arg(&linked));
    // objcopy records the base name; an absolute name is what a hostile
    // binary would carry, so write the whole path into the section.
    let section = dir.join(format!("{name}.link"));
    let crc = {
        let out = run_bounded(
            Command::new("objcopy")
                .args([
                    "--dump-section",
                    &format!(".gnu_debuglink={}", section.display()),
                ])
                .arg(&linked),
            Duration::from_secs(30),
        );
        assert!(out.status.success());
        let raw = fs::read(&section).expect("dumped section");
        raw[raw.len() - 4..].to_vec()
    };
    let mut data = target.as_os_str().as_encoded_bytes().to_vec();
    data.push(0);
    while !data.len().is_multiple_of(4) {
        data.push(0);
    }
    data.extend_from_slice(&crc);
    fs::write(&section, &data).expect("writing the section");
    run(Command::new("objcopy")
        .args([
            "--update-section",
            &format!(".gnu_debuglink={}", section.display()),
        ])
        .arg(&linked));
    if fifo {
        fs::remove_file(&target).expect("removing the debug file");
        run(Command::new("mkfifo").arg(&target));
    }
    (linked, target)
}

fn frames(g: &LeakGroup) -> Vec<LeakFrame> {
    let mut f = g.first_stack();
    f.extend(g.eof_stack());
    f
}

fn group(r: &LeakReport, pid: u32) -> Option<&LeakGroup> {
    r.of_pid(pid)
        .into_iter()
        .find(|g| !g.first_stack().is_empty())
}

fn has_source_line(g: &LeakGroup) -> bool {
    frames(g).iter().any(|f| {
        f.function.as_deref() == Some("leak_handler")
            && f.file
                .as_deref()
                .is_some_and(|p| p.ends_with("hostile_server.c"))
            && f.line.is_some()
    })
}

fn skipped_because(g: &LeakGroup, why: &str) -> bool {
    frames(g)
        .iter()
        .any(|f| f.skipped.as_deref().is_some_and(|s| s.contains(why)))
}

/// Five leakers in one run: a plain `-g` one, one whose perf map is a FIFO,
/// one whose debug link names a FIFO, and two whose perf map or debug-link
/// target is leased. All are reported within the timeout; only the plain
/// one's frames are all symbolized.
#[test]
fn hostile_symbolizer_inputs_cost_only_their_own_frames() {
    const PORT: u16 = 29601;
    let lab = lab!();
    let bin = LeakyServerBin::build_from("hostile_server");
    let dir = TempDir::new("hostile-debuglink");
    let (fifo_linked, _) = with_debug_link(bin.path(), dir.path(), "fifo_linked", true);
    let (lease_linked, lease_target) =
        with_debug_link(bin.path(), dir.path(), "lease_linked", false);
    let fifo_linked = LeakyServerBin::at(fifo_linked);
    let lease_linked = LeakyServerBin::at(lease_linked);

    let tracer = leak_tracer(&lab, &symbolize_timeout());
    let secs = "60";
    let port = |i: u16| (PORT + i).to_string();
    let plain = bin.start_with(&lab.ns, &[&port(0), secs, "plain"]);
    let perf_fifo = bin.start_with(&lab.ns, &[&port(1), secs, "perf-fifo"]);
    let link_fifo = fifo_linked.start_with(&lab.ns, &[&port(2), secs, "plain"]);
    let perf_lease = bin.start_with(&lab.ns, &[&port(3), secs, "perf-lease"]);
    let target = lease_target.display().to_string();
    let link_lease = lease_linked.start_with(&lab.ns, &[&port(4), secs, "lease", &target]);
    let started = Instant::now();
    for i in 0..5 {
        leak(&lab, PORT + i, 2);
    }
    let pids = [
        plain.pid(),
        perf_fifo.pid(),
        link_fifo.pid(),
        perf_lease.pid(),
        link_lease.pid(),
    ];
    let report = tracer.wait_for_report(REPORT_TIMEOUT, |r| {
        pids.iter().all(|&p| group(r, p).is_some())
    });
    let took = started.elapsed();
    let run = tracer.stop();
    run.assert_clean_exit();
    let report = report.unwrap_or_else(|| {
        panic!(
            "no report with the 5 leakers' stacks within {REPORT_TIMEOUT:?} of the leaks:\n{run}"
        )
    });
    let g = |pid| group(&report, pid).expect("present");
    assert!(
        has_source_line(g(plain.pid())),
        "plain -g leaker keeps file:line: {}",
        g(plain.pid())
    );
    assert!(
        has_source_line(g(perf_fifo.pid()))
            && skipped_because(g(perf_fifo.pid()), "is not a regular file"),
        "perf map FIFO: refused, the rest symbolized: {}",
        g(perf_fifo.pid())
    );
    assert!(
        skipped_because(g(link_fifo.pid()), "is not a regular file")
            && !has_source_line(g(link_fifo.pid())),
        "debug-link FIFO: refused: {}",
        g(link_fifo.pid())
    );
    assert!(
        skipped_because(g(perf_lease.pid()), "is leased") && has_source_line(g(perf_lease.pid())),
        "leased perf map: refused at once (opened without blocking), the rest symbolized: {}",
        g(perf_lease.pid())
    );
    assert!(
        skipped_because(g(link_lease.pid()), "timed out"),
        "leased debug-link target: timed out: {}",
        g(link_lease.pid())
    );
    println!("all five reported {took:?} after the leaks");
}

/// SIGTERM while the symbolizer is blocked in `open()` (a leased debug-link
/// target, with a `--symbolize-timeout` far longer than the test) ends the run
/// within 2 s (times `TCPTRACE_TEST_SLOWDOWN`), with the final report, which marks the blocked process's
/// frames as interrupted.
#[test]
fn sigterm_while_the_symbolizer_is_blocked_ends_the_run_within_2s() {
    const PORT: u16 = 29611;
    let lab = lab!();
    let bin = LeakyServerBin::build_from("hostile_server");
    let dir = TempDir::new("sigterm-debuglink");
    let (linked, target) = with_debug_link(bin.path(), dir.path(), "lease_linked", false);
    let linked = LeakyServerBin::at(linked);
    let tracer = leak_tracer(&lab, "10m");
    let target = target.display().to_string();
    let server = linked.start_with(&lab.ns, &[&PORT.to_string(), "60", "lease", &target]);
    leak(&lab, PORT, 2);
    let worker = blocked_symbolizer(tracer.pid(), Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "the symbolizer never blocked in open():\n{}",
            tracer.stderr()
        )
    });
    let t = Instant::now();
    let run = tracer.terminate(Duration::from_secs(10));
    let took = t.elapsed();
    assert!(
        took < integration_tests::patient(Duration::from_secs(2)),
        "SIGTERM took {took:?} to end the run:\n{run}"
    );
    run.assert_clean_exit();
    let last = run
        .reports()
        .pop()
        .unwrap_or_else(|| panic!("no report:\n{run}"));
    assert!(last.is_final(), "the final report is printed:\n{run}");
    let g =
        group(&last, server.pid()).unwrap_or_else(|| panic!("leaker in the final report:\n{run}"));
    assert!(skipped_because(g, "interrupted"), "{g}");
    assert!(
        !Path::new(&format!("/proc/{worker}")).exists()
            || fs::read_to_string(format!("/proc/{worker}/stat")).is_ok_and(|s| s.contains(") Z")),
        "the blocked symbolizer process {worker} was killed"
    );
}

/// The tracer's symbolizer process once it sits in `openat` for a while.
fn blocked_symbolizer(tracer: u32, timeout: Duration) -> Option<u32> {
    let end = Instant::now() + timeout;
    let mut seen: Option<(u32, Instant)> = None;
    while Instant::now() < end {
        let children = fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
            .unwrap_or_default();
        let blocked = children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .find(|c| {
                fs::read_to_string(format!("/proc/{c}/syscall"))
                    .is_ok_and(|s| s.split_whitespace().next() == Some("257"))
            });
        match (blocked, seen) {
            (Some(c), Some((s, since))) if c == s => {
                if since.elapsed() > Duration::from_millis(500) {
                    return Some(c);
                }
            }
            (Some(c), _) => seen = Some((c, Instant::now())),
            (None, _) => seen = None,
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}
