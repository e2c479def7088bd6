//! Harness for tcptrace's integration tests: network namespaces, the
//! `tcptrace-peer` processes that drive real sockets, the tracer process and
//! the JSON events it prints.
//!
//! The tests load eBPF programs and create network namespaces, so they need
//! root, and they share kernel state (tracepoints are global): run them one at
//! a time, as `sudo cargo xtask test` does:
//!
//! ```text
//! cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1
//! ```
//!
//! Every test runs its peers in a fresh network namespace on a port of its
//! own and starts tcptrace (in the root namespace) with `--port` set to that
//! port, so that other traffic on the machine never shows up in its events.
//! The `--closewait-leaks` tests ([`LeakTracer`]) run tcptrace inside the
//! test's namespace instead: `sock_diag` finds sockets older than tcptrace
//! only in its own namespace.
//! Every wait in this crate is bounded; a test that cannot run fails loudly.
#![expect(
    clippy::missing_panics_doc,
    reason = "a test harness: panicking with a precise message is how it reports failure"
)]

use std::{
    fmt,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod netns;
pub mod parse;
pub mod peers;
pub mod process;
pub mod scenario;

pub use netns::{Lab, Netns, TW_REUSE_DELAY, wait_until_reusable};
pub use parse::{
    Event, HistBucket, HistLine, HistReport, Labels, LeakFrame, LeakGroup, LeakReport, Metrics,
    Sample, Socket, TimewaitLine, group_sockets, json_objects, number_before, parse_human_duration,
    stderr_line,
};
pub use peers::{LEAKY_RECV_BUF, LeakyServer, LeakyServerBin, Peer};
pub use process::{ChildGuard, TempDir, run_bounded, signal, wait_exit};
use process::{StderrWatch, spawn_ready, spawn_ready_with};

/// What tcptrace prints on stderr once every program is attached.
pub const READY: &str = "tcptrace: tracing";
/// Prefix of the network namespaces this crate creates.
pub const NETNS_PREFIX: &str = "tcptrace-it-";
/// How long tcptrace may take to load and attach.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any process may take to exit once it should.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a peer may take to print its next line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for the events a test expects before stopping the tracer.
pub const EVENTS_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling interval of every bounded wait.
const POLL: Duration = Duration::from_millis(20);

/// Fail (never skip) when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): run sudo cargo xtask test \
         (euid is {euid})"
    );
}

/// The cargo workspace root.
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// The tcptrace binary: `$TCPTRACE_BIN`, else `<workspace>/target/debug/tcptrace`.
#[must_use]
pub fn tracer_bin() -> PathBuf {
    let bin = std::env::var_os("TCPTRACE_BIN").map_or_else(
        || workspace_root().join("target/debug/tcptrace"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "{} does not exist: build it: cargo build -p tcptrace (or run cargo xtask test)",
        bin.display()
    );
    bin
}

/// A running `tcptrace --json` (in the test process's own namespace).
pub struct Tracer(ModeTracer);

impl Tracer {
    /// Start `tcptrace --json ARGS` and wait until it traces. Always pass a
    /// port filter of the test's own.
    #[must_use]
    pub fn start(args: &[&str]) -> Self {
        Self::start_env(&[], args)
    }

    /// [`Tracer::start`] with extra environment variables for tcptrace.
    #[must_use]
    pub fn start_env(env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut cmd = Command::new(tracer_bin());
        cmd.envs(env.iter().copied());
        Self(ModeTracer::start_with(cmd, "--json", args))
    }

    /// The events printed so far.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.0.lines().iter().map(|l| Event::parse(l)).collect()
    }

    /// Poll the events printed so far until `done` holds, at most
    /// [`EVENTS_TIMEOUT`]. Returns whether it did; the assertions that follow
    /// say what is missing.
    pub fn wait_for(&self, done: impl Fn(&[Event]) -> bool) -> bool {
        let met = self.0.wait_until(EVENTS_TIMEOUT, |lines| {
            let events: Vec<Event> = lines.iter().map(|l| Event::parse(l)).collect();
            done(&events).then_some(())
        });
        if met.is_none() {
            eprintln!("note: the expected events did not all arrive within {EVENTS_TIMEOUT:?}");
        }
        met.is_some()
    }

    /// SIGINT, wait for the exit, and return everything it printed.
    #[must_use]
    pub fn stop(self) -> Trace {
        let run = self.0.stop();
        Trace {
            events: run.stdout.iter().map(|l| Event::parse(l)).collect(),
            args: run.args,
            stderr: run.stderr,
            status: run.status,
        }
    }
}

/// Start tcptrace with `args` and stdout piped, wait until it traces, and
/// hand over the child (for tests of how it handles its output) and a
/// function that returns its whole stderr once it has exited.
pub fn spawn_tracer_raw(args: &[&str]) -> (ChildGuard, impl FnOnce() -> String) {
    require_root();
    let (child, watch) = spawn_ready(args, Stdio::piped());
    (ChildGuard(child), move || watch.finish())
}

/// Everything one tcptrace run printed, and how it ended.
pub struct Trace {
    pub args: Vec<String>,
    pub events: Vec<Event>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl Trace {
    /// Exit 0 after a signal, a summary on stderr, no losses, no panic.
    pub fn assert_clean_exit(&self) {
        assert!(
            self.status.success(),
            "tcptrace {:?} exited {}:\n{}",
            self.args,
            self.status,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "tcptrace panicked:\n{}",
            self.stderr
        );
        let summary = stderr_line(&self.stderr, "tcptrace: ", " events (");
        assert!(summary.contains(" 0 undecodable"), "{summary}");
        let losses = stderr_line(&self.stderr, "tcptrace: losses: ", "");
        for none in [
            " 0 ring-buffer full",
            " 0 socket-map evictions",
            " 0 insert failures",
            " 0 field-read errors",
        ] {
            assert!(losses.contains(none), "expected{none} in: {losses}");
        }
    }

    /// `(records, printed, filtered out)` from the summary line
    /// `tcptrace: N events (..), P printed, F filtered out, U undecodable`.
    #[must_use]
    pub fn summary_counts(&self) -> (u64, u64, u64) {
        let line = stderr_line(&self.stderr, "tcptrace: ", " events (");
        (
            number_before(line, " events ("),
            number_before(line, " printed"),
            number_before(line, " filtered out"),
        )
    }

    /// The state events.
    pub fn states(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(|e| e.is_state())
    }

    /// The reset events.
    pub fn resets(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(|e| e.is_reset())
    }

    /// State events grouped into socket lives, in order of first appearance.
    #[must_use]
    pub fn sockets(&self) -> Vec<Socket> {
        group_sockets(self.states())
    }

    /// The one socket life matching `pred`; panics (with every event) if
    /// there is none or more than one.
    #[must_use]
    pub fn socket(&self, what: &str, pred: impl Fn(&Socket) -> bool) -> Socket {
        let mut found: Vec<Socket> = self.sockets().into_iter().filter(|s| pred(s)).collect();
        assert!(
            found.len() == 1,
            "expected exactly one {what} socket, found {}; events:\n{self}",
            found.len()
        );
        found.remove(0)
    }

    /// The one reset event matching `pred`.
    #[must_use]
    pub fn reset(&self, what: &str, pred: impl Fn(&Event) -> bool) -> &Event {
        let found: Vec<&Event> = self.resets().filter(|e| pred(e)).collect();
        assert!(
            found.len() == 1,
            "expected exactly one {what} reset, found {}; events:\n{self}",
            found.len()
        );
        found[0]
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.events {
            writeln!(f, "  {e}")?;
        }
        write!(f, "stderr:\n{}", self.stderr)
    }
}

// ---------------------------------------------------------------------------
// `--closewait-leaks`: the leaky C server, the tracer run in a namespace, and
// its reports.

/// A running `tcptrace --closewait-leaks` inside a test's namespace: sockets
/// already in `CLOSE_WAIT` at start-up are found through `sock_diag`, which
/// only sees tcptrace's own namespace. Killed on drop if still running.
pub struct LeakTracer(ModeTracer);

impl LeakTracer {
    /// `ip netns exec NS tcptrace --closewait-leaks ARGS`, once it traces.
    #[must_use]
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self(ModeTracer::start_mode(ns, "--closewait-leaks", args))
    }

    /// [`LeakTracer::start`] with extra environment variables for tcptrace.
    #[must_use]
    pub fn start_env(ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut cmd = ns.command(&tracer_bin());
        cmd.envs(env.iter().copied());
        Self(ModeTracer::start_with(cmd, "--closewait-leaks", args))
    }

    /// The stdout lines printed so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.0.lines()
    }

    /// The JSON reports printed so far (with `--json`).
    #[must_use]
    pub fn reports(&self) -> Vec<LeakReport> {
        LeakReport::parse_all(&self.lines())
    }

    /// Poll the reports until one satisfies `done`, at most `timeout`;
    /// returns the first that does.
    pub fn wait_for_report(
        &self,
        timeout: Duration,
        done: impl Fn(&LeakReport) -> bool,
    ) -> Option<LeakReport> {
        self.0.wait_until(timeout, |lines| {
            LeakReport::parse_all(lines).into_iter().find(|r| done(r))
        })
    }

    /// SIGINT (the final report), wait for the exit, return everything.
    #[must_use]
    pub fn stop(self) -> LeakRun {
        LeakRun(self.0.stop())
    }

    /// Wait (at most `timeout`) for a run with `-d` to end by itself.
    #[must_use]
    pub fn wait_end(self, timeout: Duration) -> LeakRun {
        LeakRun(self.0.wait_end(timeout))
    }
}

/// Everything one `--closewait-leaks` run printed, and how it ended.
pub struct LeakRun(ModeRun);

impl std::ops::Deref for LeakRun {
    type Target = ModeRun;

    fn deref(&self) -> &ModeRun {
        &self.0
    }
}

/// The start of the summary line of a leak run.
const LEAK_SUMMARY: &str = " CLOSE_WAIT sockets closed during the run, ";
/// The loss line of a clean leak run.
const NO_LEAK_LOSSES: &str = "tcptrace: losses: 0 socket-map evictions, 0 stack captures failed";

impl LeakRun {
    /// The JSON reports (with `--json`).
    #[must_use]
    pub fn reports(&self) -> Vec<LeakReport> {
        LeakReport::parse_all(&self.stdout)
    }

    /// The groups of the final report; empty when it found no leak (such a
    /// report prints no JSON line).
    #[must_use]
    pub fn final_groups(&self) -> Vec<LeakGroup> {
        self.reports()
            .into_iter()
            .filter(|r| r.report == "final")
            .flat_map(|r| r.groups)
            .collect()
    }

    /// All of stdout (text mode).
    #[must_use]
    pub fn text(&self) -> String {
        self.stdout.join("\n")
    }

    /// Exit 0; stderr starts with the ready line and has the summary and a
    /// loss line with no losses; every line is tcptrace's own (no logged
    /// warning or error, no panic).
    pub fn assert_clean_exit(&self) {
        assert!(
            self.status.success(),
            "tcptrace {:?} exited {}:\n{}",
            self.args,
            self.status,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        let clean = lines.first().is_some_and(|l| l.starts_with(READY))
            && lines
                .iter()
                .any(|l| l.starts_with("tcptrace: ") && l.contains(LEAK_SUMMARY))
            && lines.contains(&NO_LEAK_LOSSES)
            && lines.iter().all(|l| l.starts_with("tcptrace: "));
        assert!(
            clean,
            "tcptrace {:?}: expected the ready line, the summary, {NO_LEAK_LOSSES:?} and \
             no other kind of line on stderr, got:\n{}",
            self.args, self.stderr
        );
    }

    /// `(closed, leaked)` from `tcptrace: N CLOSE_WAIT sockets closed during
    /// the run, M of them after leaking longer than ...`.
    #[must_use]
    pub fn closed_summary(&self) -> (u64, u64) {
        let line = self.summary_line();
        let rest = line.trim_start_matches("tcptrace: ");
        let closed = rest
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no closed count in {line:?}"));
        let leaked = rest
            .split_once(LEAK_SUMMARY)
            .and_then(|(_, tail)| tail.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no leaked count in {line:?}"));
        (closed, leaked)
    }

    /// `(min, median, max)` `CLOSE_WAIT` dwell of the sockets closed during
    /// the run; `None` when none was.
    #[must_use]
    pub fn dwell_summary(&self) -> Option<(Duration, Duration, Duration)> {
        let line = self.summary_line();
        let (_, tail) = line.split_once("; CLOSE_WAIT dwell min ")?;
        let parts: Vec<&str> = tail.split(", ").collect();
        let value = |i: usize, label: &str| {
            parts
                .get(i)
                .and_then(|p| p.strip_prefix(label))
                .and_then(parse_human_duration)
                .unwrap_or_else(|| panic!("no {label:?}dwell in {line:?}"))
        };
        Some((value(0, ""), value(1, "median "), value(2, "max ")))
    }

    fn summary_line(&self) -> &str {
        stderr_line(&self.stderr, "tcptrace: ", LEAK_SUMMARY)
    }
}

impl fmt::Display for LeakRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// ---------------------------------------------------------------------------
// `--hist`: the tracer run in a namespace, its JSON reports and its
// Prometheus `/metrics`.

/// A running `tcptrace` in a reporting mode (`--hist`, `--timewait`,
/// `--closewait-leaks`) inside
/// a test's namespace: timewait sockets are polled through `sock_diag`, which
/// only sees tcptrace's own namespace, and a `--prometheus` listener is
/// reachable only from inside it. Killed on drop if still running.
pub struct ModeTracer {
    args: Vec<String>,
    child: Child,
    stderr: Option<StderrWatch>,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<()>>,
}

/// `tcptrace --hist` in a test's namespace.
pub type HistTracer = ModeTracer;
/// Everything one `--hist` run printed.
pub type HistRun = ModeRun;

impl ModeTracer {
    /// `ip netns exec NS tcptrace --hist ARGS`, once it traces.
    #[must_use]
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::start_mode(ns, "--hist", args)
    }

    /// `ip netns exec NS tcptrace MODE ARGS`, once it traces.
    #[must_use]
    pub fn start_mode(ns: &Netns, mode: &str, args: &[&str]) -> Self {
        Self::start_with(ns.command(&tracer_bin()), mode, args)
    }

    /// `CMD MODE ARGS`, where CMD runs tcptrace (e.g. through a wrapper that
    /// changes its environment), once it traces.
    #[must_use]
    pub fn start_with(cmd: Command, mode: &str, args: &[&str]) -> Self {
        require_root();
        let mut all = vec![mode];
        all.extend_from_slice(args);
        let (mut child, stderr) = spawn_ready_with(cmd, &all, Stdio::piped());
        let out = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&lines);
        let stdout = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                shared.lock().expect("not poisoned").push(line);
            }
        });
        Self {
            args: all.iter().map(ToString::to_string).collect(),
            child,
            stderr: Some(stderr),
            lines,
            stdout: Some(stdout),
        }
    }

    /// stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .map(StderrWatch::text)
            .unwrap_or_default()
    }

    /// The stdout lines printed so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("not poisoned").clone()
    }

    /// Poll stdout until `find` finds something in it, at most `timeout`;
    /// `None` then (the caller's assertion says what is missing).
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        find: impl Fn(&[String]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = find(&self.lines.lock().expect("not poisoned")) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// The complete JSON reports printed so far (with `--json --hist`).
    #[must_use]
    pub fn reports(&self) -> Vec<HistReport> {
        HistReport::parse_all(&self.lines.lock().expect("not poisoned"))
    }

    /// Every stdout line that parses as a JSON object, so far (with
    /// `--json`).
    #[must_use]
    pub fn json_lines(&self) -> Vec<Value> {
        json_objects(&self.lines.lock().expect("not poisoned"))
    }

    /// Poll the JSON lines until one satisfies `done`, at most `timeout`.
    pub fn wait_for_json(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Option<Value> {
        self.wait_until(timeout, |lines| {
            json_objects(lines).into_iter().find(|v| done(v))
        })
    }

    /// Poll the reports until one satisfies `done`, at most `timeout`;
    /// returns the first that does, or `None` (the caller's assertion says
    /// what is missing).
    pub fn wait_for_report(
        &self,
        timeout: Duration,
        done: impl Fn(&HistReport) -> bool,
    ) -> Option<HistReport> {
        self.wait_until(timeout, |lines| {
            HistReport::parse_all(lines).into_iter().find(|r| done(r))
        })
    }

    /// The last complete report, if any.
    #[must_use]
    pub fn last_report(&self) -> Option<HistReport> {
        self.reports().pop()
    }

    /// SIGINT (the final report), wait for the exit, return everything.
    #[must_use]
    pub fn stop(self) -> ModeRun {
        signal(&self.child, libc::SIGINT);
        self.finish(EXIT_TIMEOUT)
    }

    /// Wait (at most `timeout`) for a run with `-d` to end by itself.
    #[must_use]
    pub fn wait_end(self, timeout: Duration) -> ModeRun {
        self.finish(timeout)
    }

    fn finish(mut self, timeout: Duration) -> ModeRun {
        let status = wait_exit(&mut self.child, "tcptrace", timeout);
        if let Some(t) = self.stdout.take() {
            let _ = t.join();
        }
        let stderr = self
            .stderr
            .take()
            .map(StderrWatch::finish)
            .unwrap_or_default();
        let stdout = std::mem::take(&mut *self.lines.lock().expect("not poisoned"));
        ModeRun {
            args: std::mem::take(&mut self.args),
            stdout,
            stderr,
            status,
        }
    }
}

impl Drop for ModeTracer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything one report-mode run printed, and how it ended.
pub struct ModeRun {
    pub args: Vec<String>,
    pub stdout: Vec<String>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl ModeRun {
    /// The JSON reports (with `--json --hist`).
    #[must_use]
    pub fn reports(&self) -> Vec<HistReport> {
        HistReport::parse_all(&self.stdout)
    }

    /// Every stdout line that parses as a JSON object (with `--json`).
    #[must_use]
    pub fn json_lines(&self) -> Vec<Value> {
        json_objects(&self.stdout)
    }

    /// The final report: the last one, and the only one marked final.
    #[must_use]
    pub fn final_report(&self) -> HistReport {
        let reports = self.reports();
        let finals = reports.iter().filter(|r| r.is_final()).count();
        assert_eq!(finals, 1, "exactly one final report:\n{self}");
        let last = reports.last().expect("checked above").clone();
        assert!(last.is_final(), "the final report comes last:\n{self}");
        last
    }

    /// Exit 0; stderr has the ready line and only tcptrace's own lines (no
    /// logged warning or error, no panic).
    pub fn assert_clean_exit(&self) {
        assert!(
            self.status.success(),
            "tcptrace {:?} exited {}:\n{self}",
            self.args,
            self.status
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with(READY))
                && lines.iter().all(|l| l.starts_with("tcptrace: "))
                && !self.stderr.contains("panicked"),
            "tcptrace {:?}: expected the ready line and no other kind of line on stderr, \
             got:\n{}",
            self.args,
            self.stderr
        );
    }
}

impl ModeRun {
    /// `(read, lost)` from `--timewait`'s exit line `tcptrace: TIME_WAIT
    /// entries: R read from the per-CPU log, L lost (...)`.
    #[must_use]
    pub fn timewait_entries(&self) -> (u64, u64) {
        let line = self
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("tcptrace: TIME_WAIT entries: "))
            .unwrap_or_else(|| panic!("no TIME_WAIT entries line:\n{self}"));
        (number_before(line, " read"), number_before(line, " lost"))
    }
}

impl fmt::Display for ModeRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tcptrace {:?} ({}); stdout:", self.args, self.status)?;
        for l in &self.stdout {
            writeln!(f, "  {l}")?;
        }
        write!(f, "stderr:\n{}", self.stderr)
    }
}
