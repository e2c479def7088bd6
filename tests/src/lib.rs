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
    collections::HashMap,
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
pub mod peers;
pub mod process;
pub mod scenario;

pub use netns::{Lab, Netns, TW_REUSE_DELAY, wait_until_reusable};
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

/// One JSON line of tcptrace, checked against the documented schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Event(pub Value);

const STATES: [&str; 12] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

impl Event {
    /// Parse and validate one line; panics on anything off-schema.
    #[must_use]
    pub fn parse(line: &str) -> Self {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("tcptrace printed a line that is not JSON ({e}): {line}"));
        let ev = Self(v);
        if let Err(why) = ev.validate() {
            panic!("off-schema event ({why}): {line}");
        }
        ev
    }

    fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let has = |k: &str, ok: fn(&Value) -> bool| -> Result<(), String> {
            match obj.get(k) {
                Some(x) if ok(x) => Ok(()),
                Some(x) => Err(format!("{k} = {x}")),
                None => Err(format!("no {k}")),
            }
        };
        let uint_or_null = |x: &Value| x.is_null() || x.is_u64();
        let str_or_null = |x: &Value| x.is_null() || x.is_string();
        let state_or_null =
            |x: &Value| x.is_null() || x.as_str().is_some_and(|s| STATES.contains(&s));
        has("time", |x| {
            x.as_str()
                .is_some_and(|s| s.ends_with('Z') && s.contains('T'))
        })?;
        has("ts_ns", Value::is_u64)?;
        has("pid", uint_or_null)?;
        has("tid", uint_or_null)?;
        has("comm", str_or_null)?;
        has("owner_source", |x| {
            matches!(x.as_str(), Some("syscall" | "io" | "procfs" | "unknown"))
        })?;
        has("family", |x| matches!(x.as_str(), Some("ipv4" | "ipv6")))?;
        has("saddr", Value::is_string)?;
        has("daddr", Value::is_string)?;
        has("sport", |x| x.as_u64().is_some_and(|p| p <= 65535))?;
        has("dport", |x| x.as_u64().is_some_and(|p| p <= 65535))?;
        has("skaddr", |x| {
            x.as_str().is_some_and(|s| s.starts_with("0x"))
        })?;
        // The owner is all or nothing.
        if v["pid"].is_null() != v["comm"].is_null() || v["pid"].is_null() != v["tid"].is_null() {
            return Err("pid, tid and comm must be null together".into());
        }
        if v["pid"].is_null() != (v["owner_source"] == "unknown") {
            return Err("owner_source must be unknown exactly when pid is null".into());
        }
        match v["type"].as_str() {
            Some("state") => {
                has("old_state", |x| {
                    x.as_str().is_some_and(|s| STATES.contains(&s))
                })?;
                has("new_state", |x| {
                    x.as_str().is_some_and(|s| STATES.contains(&s))
                })?;
                has("dwell_ns", uint_or_null)?;
            }
            Some("reset") => {
                has("direction", |x| {
                    matches!(x.as_str(), Some("sent" | "received"))
                })?;
                has("state", state_or_null)?;
                has("reason", str_or_null)?;
                has("reason_code", uint_or_null)?;
                has("sock_cookie", uint_or_null)?;
            }
            _ => return Err(format!("type = {}", v["type"])),
        }
        Ok(())
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0[key].as_str()
    }

    #[must_use]
    pub fn kind(&self) -> &str {
        self.str("type").unwrap_or_default()
    }

    #[must_use]
    pub fn is_state(&self) -> bool {
        self.kind() == "state"
    }

    #[must_use]
    pub fn is_reset(&self) -> bool {
        self.kind() == "reset"
    }

    /// The owner's pid; `None` is JSON null (owner unknown).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.0["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }

    #[must_use]
    pub fn comm(&self) -> Option<&str> {
        self.str("comm")
    }

    #[must_use]
    pub fn owner_source(&self) -> &str {
        self.str("owner_source").unwrap_or_default()
    }

    #[must_use]
    pub fn family(&self) -> &str {
        self.str("family").unwrap_or_default()
    }

    #[must_use]
    pub fn saddr(&self) -> &str {
        self.str("saddr").unwrap_or_default()
    }

    #[must_use]
    pub fn daddr(&self) -> &str {
        self.str("daddr").unwrap_or_default()
    }

    /// The local port.
    #[must_use]
    pub fn sport(&self) -> u16 {
        self.0["sport"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_default()
    }

    /// The remote port.
    #[must_use]
    pub fn dport(&self) -> u16 {
        self.0["dport"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_default()
    }

    #[must_use]
    pub fn skaddr(&self) -> &str {
        self.str("skaddr").unwrap_or_default()
    }

    #[must_use]
    pub fn ts_ns(&self) -> u64 {
        self.0["ts_ns"].as_u64().unwrap_or_default()
    }

    #[must_use]
    pub fn old_state(&self) -> &str {
        self.str("old_state").unwrap_or_default()
    }

    #[must_use]
    pub fn new_state(&self) -> &str {
        self.str("new_state").unwrap_or_default()
    }

    /// `(old, new)` of a state event.
    #[must_use]
    pub fn transition(&self) -> (&str, &str) {
        (self.old_state(), self.new_state())
    }

    /// Time spent in the old state; `None` is JSON null.
    #[must_use]
    pub fn dwell(&self) -> Option<Duration> {
        self.0["dwell_ns"].as_u64().map(Duration::from_nanos)
    }

    /// `sent` or `received` (reset events).
    #[must_use]
    pub fn direction(&self) -> &str {
        self.str("direction").unwrap_or_default()
    }

    /// The socket's state at a reset; `None` is JSON null.
    #[must_use]
    pub fn reset_state(&self) -> Option<&str> {
        self.str("state")
    }

    /// The kernel's reason for a sent reset.
    #[must_use]
    pub fn reason(&self) -> Option<&str> {
        self.str("reason")
    }

    /// Whether either endpoint's port is `port`.
    #[must_use]
    pub fn touches_port(&self, port: u16) -> bool {
        self.sport() == port || self.dport() == port
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pid = self
            .pid()
            .map_or_else(|| "null".to_owned(), |p| p.to_string());
        write!(
            f,
            "{:<5} {} {}:{} -> {}:{} pid={pid} ({}) ",
            self.kind(),
            self.skaddr(),
            self.saddr(),
            self.sport(),
            self.daddr(),
            self.dport(),
            self.owner_source(),
        )?;
        if self.is_state() {
            let dwell = self
                .dwell()
                .map_or_else(|| "null".to_owned(), |d| format!("{d:?}"));
            write!(
                f,
                "{} -> {} dwell={dwell}",
                self.old_state(),
                self.new_state()
            )
        } else {
            write!(
                f,
                "RST {} state={} reason={}",
                self.direction(),
                self.reset_state().unwrap_or("null"),
                self.reason().unwrap_or("null")
            )
        }
    }
}

/// One life of one socket: its state events from its first transition to its
/// `-> CLOSE` (a freed `struct sock` address may be reused by a later socket).
#[derive(Clone, Debug)]
pub struct Socket {
    pub skaddr: String,
    pub events: Vec<Event>,
}

impl Socket {
    /// The `(old, new)` sequence.
    #[must_use]
    pub fn transitions(&self) -> Vec<(&str, &str)> {
        self.events.iter().map(Event::transition).collect()
    }

    /// The owner pid of each transition.
    #[must_use]
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.events.iter().map(Event::pid).collect()
    }

    /// Whether any of its events has this local and remote port. (A
    /// connecting socket's first event, CLOSE -> `SYN_SENT`, has local port 0:
    /// the kernel picks the port after that transition.)
    #[must_use]
    pub fn has_ports(&self, sport: u16, dport: u16) -> bool {
        self.events
            .iter()
            .any(|e| e.sport() == sport && e.dport() == dport)
    }

    /// The event of the transition `old -> new`.
    #[must_use]
    pub fn event(&self, old: &str, new: &str) -> &Event {
        self.events
            .iter()
            .find(|e| e.transition() == (old, new))
            .unwrap_or_else(|| panic!("no {old} -> {new} in\n{self}"))
    }

    pub fn assert_transitions(&self, what: &str, expected: &[(&str, &str)]) {
        assert_eq!(
            self.transitions(),
            expected,
            "the {what} socket's transitions:\n{self}"
        );
    }

    pub fn assert_pids(&self, what: &str, expected: &[Option<u32>]) {
        assert_eq!(
            self.pids(),
            expected,
            "the {what} socket's owner pids:\n{self}"
        );
    }
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.events {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Everything one tcptrace run printed, and how it ended.
pub struct Trace {
    pub args: Vec<String>,
    pub events: Vec<Event>,
    pub stderr: String,
    pub status: ExitStatus,
}

/// The first line of tcptrace's `stderr` that starts with `prefix` and
/// holds `holds` (e.g. the exit summary's `tcptrace: N events (`).
#[must_use]
pub fn stderr_line<'a>(stderr: &'a str, prefix: &str, holds: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with(prefix) && l.contains(holds))
        .unwrap_or_else(|| panic!("no {prefix:?} line with {holds:?} on stderr:\n{stderr}"))
}

/// The number just before the first `word` in a summary `line`, after a
/// space or an opening parenthesis (`N events (S state, R reset)`).
#[must_use]
pub fn number_before(line: &str, word: &str) -> u64 {
    line.split_once(word)
        .and_then(|(head, _)| head.trim_end().rsplit([' ', '(']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {word:?} in {line:?}"))
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

/// Group state events by socket address into lives: a life ends with its
/// `-> CLOSE` transition; the next event at that address starts a new one.
pub fn group_sockets<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<Socket> {
    let mut out: Vec<Socket> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for e in events.filter(|e| e.is_state()) {
        let i = *open.entry(e.skaddr().to_owned()).or_insert_with(|| {
            out.push(Socket {
                skaddr: e.skaddr().to_owned(),
                events: Vec::new(),
            });
            out.len() - 1
        });
        out[i].events.push(e.clone());
        if e.new_state() == "CLOSE" {
            open.remove(e.skaddr());
        }
    }
    out
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

/// Parse tcptrace's `human_duration`: `12ns`, `3.4µs`, `5.67ms`, `8.901s`.
#[must_use]
pub fn parse_human_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = s.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else {
        (s.strip_suffix('s')?, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    Duration::try_from_secs_f64(v * scale).ok()
}

/// One report of a `--json` leak run: its groups (a report with no leak
/// prints nothing, so only reports with groups are seen).
#[derive(Clone, Debug)]
pub struct LeakReport {
    /// `interval` or `final`.
    pub report: String,
    pub report_time: String,
    pub groups: Vec<LeakGroup>,
}

impl LeakReport {
    /// Split JSON lines into reports: consecutive lines with the same
    /// `report` and `report_time` (reports are at least an interval apart).
    /// Panics on any line off the documented schema.
    #[must_use]
    pub fn parse_all(lines: &[String]) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for line in lines {
            let g = LeakGroup::parse(line);
            match out.last_mut() {
                Some(r) if r.report == g.report() && r.report_time == g.report_time() => {
                    r.groups.push(g);
                }
                _ => out.push(Self {
                    report: g.report().to_owned(),
                    report_time: g.report_time().to_owned(),
                    groups: vec![g],
                }),
            }
        }
        out
    }

    #[must_use]
    pub fn is_final(&self) -> bool {
        self.report == "final"
    }

    /// The groups owned by `pid`.
    #[must_use]
    pub fn of_pid(&self, pid: u32) -> Vec<&LeakGroup> {
        self.groups
            .iter()
            .filter(|g| g.pid() == Some(pid))
            .collect()
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} report at {}:", self.report, self.report_time)?;
        for g in &self.groups {
            writeln!(f, "  {g}")?;
        }
        Ok(())
    }
}

/// One frame of a leak group's stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakFrame {
    pub function: Option<String>,
    pub addr: String,
    pub offset: u64,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub recovered: bool,
}

/// `Ok` when `ok(x)`, else an error naming the field and its value.
fn check(what: &str, x: &Value, ok: fn(&Value) -> bool) -> Result<(), String> {
    if ok(x) {
        Ok(())
    } else {
        Err(format!("{what} = {x}"))
    }
}

/// One `closewait_leak` JSON line, checked against the documented schema.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakGroup(pub Value);

/// Every key of a `closewait_leak` line.
const LEAK_KEYS: [&str; 20] = [
    "type",
    "report_time",
    "report",
    "min_age_s",
    "pid",
    "comm",
    "cmdline",
    "cgroup",
    "container_id",
    "count",
    "oldest_age_s",
    "age_lower_bound",
    "ages",
    "classes",
    "unread_bytes",
    "endpoints",
    "eof_stack",
    "eof_stack_truncated",
    "first_stack",
    "first_stack_truncated",
];

impl LeakGroup {
    /// Parse and validate one line; panics on anything off-schema.
    #[must_use]
    pub fn parse(line: &str) -> Self {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("tcptrace printed a line that is not JSON ({e}): {line}"));
        let g = Self(v);
        if let Err(why) = g.validate() {
            panic!("off-schema closewait_leak line ({why}): {line}");
        }
        g
    }

    fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = LEAK_KEYS.to_vec();
        want.sort_unstable();
        if keys != want {
            return Err(format!("keys {keys:?}, documented {want:?}"));
        }
        let str_or_null = |x: &Value| x.is_null() || x.is_string();
        let nonneg = |x: &Value| x.as_f64().is_some_and(|f| f >= 0.0);
        check("type", &v["type"], |x| x == "closewait_leak")?;
        check("report_time", &v["report_time"], |x| {
            x.as_str()
                .is_some_and(|s| s.ends_with('Z') && s.contains('T'))
        })?;
        check("report", &v["report"], |x| {
            matches!(x.as_str(), Some("interval" | "final"))
        })?;
        check("min_age_s", &v["min_age_s"], |x| {
            x.as_f64().is_some_and(|f| f > 0.0)
        })?;
        check("pid", &v["pid"], |x| {
            x.is_null() || x.as_u64().is_some_and(|p| u32::try_from(p).is_ok())
        })?;
        for k in ["comm", "cmdline", "cgroup", "container_id"] {
            check(k, &v[k], str_or_null)?;
        }
        if v["pid"].is_null() != v["comm"].is_null() {
            return Err("pid and comm must be null together".into());
        }
        check("count", &v["count"], |x| x.as_u64().is_some_and(|n| n >= 1))?;
        check("oldest_age_s", &v["oldest_age_s"], nonneg)?;
        check("age_lower_bound", &v["age_lower_bound"], Value::is_boolean)?;
        check("unread_bytes", &v["unread_bytes"], Value::is_u64)?;
        for k in ["min_s", "p50_s", "max_s"] {
            check(k, &v["ages"][k], nonneg)?;
        }
        let (min, p50, max) = self.ages();
        if !(min <= p50 && p50 <= max && (max - self.oldest_age_s()).abs() < 1e-9) {
            return Err(format!(
                "ages out of order: min {min}, p50 {p50}, max {max}, oldest {}",
                self.oldest_age_s()
            ));
        }
        // Reported once older than --min-age (ages are rounded to the ms).
        if min + 0.0005 < self.min_age_s() {
            return Err(format!(
                "a socket of age {min}s is younger than min_age_s {}",
                self.min_age_s()
            ));
        }
        for k in ["never_read_to_eof", "read_eof_not_closed"] {
            check(k, &v["classes"][k], Value::is_u64)?;
        }
        if v["classes"].as_object().map(serde_json::Map::len) != Some(2) {
            return Err(format!("classes = {}", v["classes"]));
        }
        if self.never_read_to_eof() + self.read_eof_not_closed() != self.count() {
            return Err("the classes do not add up to count".into());
        }
        self.validate_lists()
    }

    /// The endpoints and the two stacks.
    fn validate_lists(&self) -> Result<(), String> {
        let v = &self.0;
        let str_or_null = |x: &Value| x.is_null() || x.is_string();
        let uint_or_null = |x: &Value| x.is_null() || x.is_u64();
        let endpoints = v["endpoints"].as_array().ok_or("endpoints not an array")?;
        if endpoints.is_empty() || endpoints.len() > 5 {
            return Err(format!("{} endpoints (1 to 5)", endpoints.len()));
        }
        for e in endpoints {
            check("endpoint.local", &e["local"], |x| {
                x.as_str()
                    .is_some_and(|s| s.parse::<std::net::SocketAddr>().is_ok())
            })?;
            check("endpoint.remote", &e["remote"], |x| {
                x.as_str()
                    .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
            })?;
            check("endpoint.count", &e["count"], |x| {
                x.as_u64().is_some_and(|n| n >= 1)
            })?;
        }
        let listed: u64 = self.endpoints().iter().map(|e| e.2).sum();
        if listed > self.count() || (endpoints.len() < 5 && listed != self.count()) {
            return Err(format!(
                "endpoint counts add up to {listed}, count {}",
                self.count()
            ));
        }
        for (stack, truncated) in [
            ("eof_stack", "eof_stack_truncated"),
            ("first_stack", "first_stack_truncated"),
        ] {
            check(truncated, &v[truncated], Value::is_boolean)?;
            let frames = v[stack]
                .as_array()
                .ok_or_else(|| format!("{stack} not an array"))?;
            if frames.is_empty() && v[truncated] == true {
                return Err(format!("an empty {stack} cannot be truncated"));
            }
            for f in frames {
                if f.as_object().map(serde_json::Map::len) != Some(7) {
                    return Err(format!("{stack} frame {f}"));
                }
                check("function", &f["function"], str_or_null)?;
                check("addr", &f["addr"], |x| {
                    x.as_str().is_some_and(|s| {
                        s.strip_prefix("0x")
                            .is_some_and(|h| u64::from_str_radix(h, 16).is_ok())
                    })
                })?;
                check("offset", &f["offset"], Value::is_u64)?;
                check("module", &f["module"], str_or_null)?;
                check("file", &f["file"], str_or_null)?;
                check("line", &f["line"], uint_or_null)?;
                check("recovered", &f["recovered"], Value::is_boolean)?;
            }
        }
        Ok(())
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0[key].as_str()
    }

    fn uint(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or_default()
    }

    /// `interval` or `final`.
    #[must_use]
    pub fn report(&self) -> &str {
        self.str("report").unwrap_or_default()
    }

    #[must_use]
    pub fn report_time(&self) -> &str {
        self.str("report_time").unwrap_or_default()
    }

    #[must_use]
    pub fn min_age_s(&self) -> f64 {
        self.0["min_age_s"].as_f64().unwrap_or_default()
    }

    /// The owner; `None` is JSON null (no process holds the sockets).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.0["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }

    #[must_use]
    pub fn comm(&self) -> Option<&str> {
        self.str("comm")
    }

    #[must_use]
    pub fn cmdline(&self) -> Option<&str> {
        self.str("cmdline")
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.uint("count")
    }

    #[must_use]
    pub fn oldest_age_s(&self) -> f64 {
        self.0["oldest_age_s"].as_f64().unwrap_or_default()
    }

    /// `(min, p50, max)` ages in seconds.
    #[must_use]
    pub fn ages(&self) -> (f64, f64, f64) {
        let a = |k: &str| self.0["ages"][k].as_f64().unwrap_or_default();
        (a("min_s"), a("p50_s"), a("max_s"))
    }

    #[must_use]
    pub fn age_lower_bound(&self) -> bool {
        self.0["age_lower_bound"] == true
    }

    #[must_use]
    pub fn never_read_to_eof(&self) -> u64 {
        self.0["classes"]["never_read_to_eof"]
            .as_u64()
            .unwrap_or_default()
    }

    #[must_use]
    pub fn read_eof_not_closed(&self) -> u64 {
        self.0["classes"]["read_eof_not_closed"]
            .as_u64()
            .unwrap_or_default()
    }

    #[must_use]
    pub fn unread_bytes(&self) -> u64 {
        self.uint("unread_bytes")
    }

    /// `(local IP:PORT, remote IP, count)`.
    #[must_use]
    pub fn endpoints(&self) -> Vec<(String, String, u64)> {
        self.0["endpoints"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| {
                        (
                            e["local"].as_str().unwrap_or_default().to_owned(),
                            e["remote"].as_str().unwrap_or_default().to_owned(),
                            e["count"].as_u64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn frames(&self, key: &str) -> Vec<LeakFrame> {
        let s = |f: &Value, k: &str| f[k].as_str().map(str::to_owned);
        self.0[key]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| LeakFrame {
                        function: s(f, "function"),
                        addr: s(f, "addr").unwrap_or_default(),
                        offset: f["offset"].as_u64().unwrap_or_default(),
                        module: s(f, "module"),
                        file: s(f, "file"),
                        line: f["line"].as_u64(),
                        recovered: f["recovered"] == true,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Where the owner read EOF, innermost first; empty when it never did.
    #[must_use]
    pub fn eof_stack(&self) -> Vec<LeakFrame> {
        self.frames("eof_stack")
    }

    /// Where the owner first touched the socket, innermost first.
    #[must_use]
    pub fn first_stack(&self) -> Vec<LeakFrame> {
        self.frames("first_stack")
    }

    /// Every function name in either stack.
    #[must_use]
    pub fn functions(&self) -> Vec<String> {
        self.eof_stack()
            .into_iter()
            .chain(self.first_stack())
            .filter_map(|f| f.function)
            .collect()
    }
}

impl fmt::Display for LeakGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(skaddr: &str, old: &str, new: &str, pid: Option<u32>) -> String {
        serde_json::json!({
            "type": "state", "time": "2026-01-01T00:00:00.000001Z", "ts_ns": 1,
            "pid": pid, "tid": pid, "comm": pid.map(|_| "x"),
            "owner_source": if pid.is_some() { "syscall" } else { "unknown" },
            "family": "ipv4", "saddr": "127.0.0.1", "sport": 1, "daddr": "127.0.0.1",
            "dport": 2, "skaddr": skaddr, "old_state": old, "new_state": new, "dwell_ns": null,
        })
        .to_string()
    }

    #[test]
    fn sockets_split_into_lives_at_close() {
        let evs: Vec<Event> = [
            state("0x1", "CLOSE", "SYN_SENT", Some(5)),
            state("0x2", "CLOSE", "LISTEN", Some(6)),
            state("0x1", "SYN_SENT", "CLOSE", Some(5)),
            state("0x1", "CLOSE", "LISTEN", Some(7)),
        ]
        .iter()
        .map(|l| Event::parse(l))
        .collect();
        let socks = group_sockets(evs.iter());
        assert_eq!(socks.len(), 3);
        assert_eq!(
            socks[0].transitions(),
            [("CLOSE", "SYN_SENT"), ("SYN_SENT", "CLOSE")]
        );
        assert_eq!(socks[1].pids(), [Some(6)]);
        assert_eq!(socks[2].skaddr, "0x1");
    }

    #[test]
    #[should_panic(expected = "owner_source must be unknown")]
    fn schema_check_catches_a_half_owner() {
        let mut v: Value = serde_json::from_str(&state("0x1", "CLOSE", "LISTEN", Some(1))).unwrap();
        v["owner_source"] = "unknown".into();
        let _ = Event::parse(&v.to_string());
    }

    #[test]
    fn metrics_parse_labels_escapes_and_inf() {
        let page = "# HELP x_seconds A histogram.\n# TYPE x_seconds histogram\n\
                    x_seconds_bucket{le=\"0.5\",state=\"CLOSE_WAIT\"} 2\n\
                    x_seconds_bucket{le=\"+Inf\",state=\"CLOSE_WAIT\"} 3\n\
                    x_seconds_count{state=\"CLOSE_WAIT\"} 3\n\
                    odd{reason=\"a \\\"q\\\" \\\\ b\"} 1.5\nplain 7\n# EOF\n";
        let m = Metrics::parse(page);
        assert_eq!(m.int("x_seconds_count", &[("state", "CLOSE_WAIT")]), 3);
        assert_eq!(
            m.buckets("x_seconds", &[("state", "CLOSE_WAIT")]),
            [("0.5".to_owned(), 2.0), ("+Inf".to_owned(), 3.0)]
        );
        assert_eq!(m.get("odd", &[("reason", "a \"q\" \\ b")]), Some(1.5));
        assert_eq!(m.int("plain", &[]), 7);
        assert_eq!(
            m.get("x_seconds_count", &[]),
            None,
            "labels must match exactly"
        );
    }

    #[test]
    #[should_panic(expected = "ends with # EOF")]
    fn metrics_without_eof_are_refused() {
        let _ = Metrics::parse("plain 7\n");
    }

    fn hist_line(state: &str, buckets: &[(u64, u64, u64)], max: u64) -> String {
        let count: u64 = buckets.iter().map(|b| b.2).sum();
        let p = (count > 0).then_some(max);
        serde_json::json!({
            "type": "hist", "state": state, "count": count, "p50_ns": p, "p90_ns": p,
            "p99_ns": p, "max_ns": max, "resolution": "... within 6.25% ...",
            "buckets": buckets.iter().map(|(lo, hi, n)| serde_json::json!(
                {"lo_ns": lo, "hi_ns": hi, "count": n})).collect::<Vec<_>>(),
        })
        .to_string()
    }

    fn timewait_line(report: &str) -> String {
        serde_json::json!({
            "type": "timewait", "report": report, "time": "2026-01-01T00:00:00Z",
            "entered": 2, "live_time_wait": 2, "live_fin_wait2_orphans": 0, "expired": 0,
            "killed_early": 0, "overflow": null,
            "predicted_dwell_ns": {"count": 0, "min": null, "max": null},
            "poll_interval_ns": 1_000_000_000u64,
        })
        .to_string()
    }

    #[test]
    fn hist_reports_end_with_their_timewait_line() {
        let lines = [
            hist_line("CLOSE_WAIT", &[(100, 120, 2)], 110),
            hist_line("TIME_WAIT", &[], 0),
            timewait_line("interval"),
            hist_line("CLOSE_WAIT", &[(100, 120, 2), (200, 240, 1)], 210),
            timewait_line("final"),
            hist_line("SYN_SENT", &[(1, 2, 1)], 1),
        ];
        let reports = HistReport::parse_all(&lines);
        assert_eq!(reports.len(), 2, "the incomplete third one is left out");
        assert_eq!(reports[0].count("CLOSE_WAIT"), 2);
        assert_eq!(reports[0].count("TIME_WAIT"), 0);
        assert!(reports[1].is_final());
        assert_eq!(reports[1].count("CLOSE_WAIT"), 3);
        reports[1].hists[0].assert_max_in_last_bucket();
    }

    #[test]
    #[should_panic(expected = "bucket counts add up to 2, count 3")]
    fn hist_schema_checks_the_bucket_sum() {
        let mut v: Value =
            serde_json::from_str(&hist_line("CLOSE_WAIT", &[(100, 120, 2)], 110)).unwrap();
        v["count"] = 3.into();
        let _ = HistReport::parse_all(&[v.to_string(), timewait_line("final")]);
    }
}

// ---------------------------------------------------------------------------
// `--hist`: the tracer run in a namespace, its JSON reports and its
// Prometheus `/metrics`.

/// The states a `hist` line may name: the kernel's, and the two timewait
/// ones tcptrace follows through `sock_diag`.
const HIST_STATES: [&str; 13] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "FIN_WAIT2_ORPHAN",
];

/// One bucket of a `hist` line: `[lo_ns, hi_ns)` holds `count` dwells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistBucket {
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

/// One `{"type":"hist",...}` line, checked against the documented schema.
#[derive(Clone, Debug, PartialEq)]
pub struct HistLine(pub Value);

impl HistLine {
    fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = vec![
            "type",
            "state",
            "count",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "max_ns",
            "buckets",
            "resolution",
        ];
        if obj.contains_key("by") || obj.contains_key("group") {
            want.extend(["by", "group"]);
        }
        want.sort_unstable();
        if keys != want {
            return Err(format!("keys {keys:?}, documented {want:?}"));
        }
        check("state", &v["state"], |x| {
            x.as_str().is_some_and(|s| HIST_STATES.contains(&s))
        })?;
        if obj.contains_key("by") {
            check("by", &v["by"], |x| {
                matches!(x.as_str(), Some("lport" | "rport" | "raddr" | "comm"))
            })?;
            check("group", &v["group"], Value::is_string)?;
        }
        check("count", &v["count"], Value::is_u64)?;
        check("max_ns", &v["max_ns"], Value::is_u64)?;
        check("resolution", &v["resolution"], |x| {
            x.as_str().is_some_and(|s| s.contains("6.25%"))
        })?;
        let count = self.count();
        for k in ["p50_ns", "p90_ns", "p99_ns"] {
            if count == 0 {
                check(k, &v[k], Value::is_null)?;
            } else {
                check(k, &v[k], Value::is_u64)?;
            }
        }
        let buckets = v["buckets"].as_array().ok_or("buckets not an array")?;
        for b in buckets {
            if b.as_object().map(serde_json::Map::len) != Some(3) {
                return Err(format!("bucket {b}"));
            }
            for k in ["lo_ns", "hi_ns", "count"] {
                check(k, &b[k], Value::is_u64)?;
            }
        }
        let bs = self.buckets();
        if bs.iter().any(|b| b.lo_ns >= b.hi_ns || b.count == 0) {
            return Err(format!("empty or inverted bucket in {bs:?}"));
        }
        if bs.windows(2).any(|w| w[0].hi_ns > w[1].lo_ns) {
            return Err(format!("buckets out of order or overlapping: {bs:?}"));
        }
        let sum: u64 = bs.iter().map(|b| b.count).sum();
        if sum != count {
            return Err(format!("bucket counts add up to {sum}, count {count}"));
        }
        if let Some((p50, p90, p99)) = self.percentiles()
            && !(p50 <= p90 && p90 <= p99 && p99 <= self.max_ns())
        {
            return Err(format!(
                "percentiles out of order: p50 {p50}, p90 {p90}, p99 {p99}, max {}",
                self.max_ns()
            ));
        }
        Ok(())
    }

    /// The state (or `TIME_WAIT`, `FIN_WAIT2_ORPHAN`).
    #[must_use]
    pub fn state(&self) -> &str {
        self.0["state"].as_str().unwrap_or_default()
    }

    /// `--by` key and group label, when split.
    #[must_use]
    pub fn by(&self) -> Option<&str> {
        self.0["by"].as_str()
    }

    #[must_use]
    pub fn group(&self) -> Option<&str> {
        self.0["group"].as_str()
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.0["count"].as_u64().unwrap_or_default()
    }

    #[must_use]
    pub fn max_ns(&self) -> u64 {
        self.0["max_ns"].as_u64().unwrap_or_default()
    }

    /// `(p50, p90, p99)` in ns; `None` for an empty histogram.
    #[must_use]
    pub fn percentiles(&self) -> Option<(u64, u64, u64)> {
        let p = |k: &str| self.0[k].as_u64();
        Some((p("p50_ns")?, p("p90_ns")?, p("p99_ns")?))
    }

    #[must_use]
    pub fn p50(&self) -> Option<Duration> {
        self.0["p50_ns"].as_u64().map(Duration::from_nanos)
    }

    #[must_use]
    pub fn buckets(&self) -> Vec<HistBucket> {
        self.0["buckets"]
            .as_array()
            .map(|bs| {
                bs.iter()
                    .map(|b| HistBucket {
                        lo_ns: b["lo_ns"].as_u64().unwrap_or_default(),
                        hi_ns: b["hi_ns"].as_u64().unwrap_or_default(),
                        count: b["count"].as_u64().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The exact maximum lies in the highest non-empty bucket. Only for a
    /// report taken with no traffic running: the kernel counts a dwell in its
    /// bucket just before it raises the maximum.
    pub fn assert_max_in_last_bucket(&self) {
        if let Some(last) = self.buckets().last() {
            assert!(
                last.lo_ns <= self.max_ns() && self.max_ns() < last.hi_ns,
                "max_ns {} is not in the highest bucket {last:?}: {self}",
                self.max_ns()
            );
        } else {
            assert_eq!(self.max_ns(), 0, "an empty histogram has no max: {self}");
        }
    }
}

impl fmt::Display for HistLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The `{"type":"timewait",...}` line that ends each `--hist --json` report.
#[derive(Clone, Debug, PartialEq)]
pub struct TimewaitLine(pub Value);

/// Every key of a `timewait` line.
const TIMEWAIT_KEYS: [&str; 11] = [
    "type",
    "report",
    "time",
    "entered",
    "live_time_wait",
    "live_fin_wait2_orphans",
    "expired",
    "killed_early",
    "overflow",
    "predicted_dwell_ns",
    "poll_interval_ns",
];

impl TimewaitLine {
    fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = TIMEWAIT_KEYS.to_vec();
        want.sort_unstable();
        if keys != want {
            return Err(format!("keys {keys:?}, documented {want:?}"));
        }
        check("report", &v["report"], |x| {
            matches!(x.as_str(), Some("interval" | "final"))
        })?;
        check("time", &v["time"], |x| {
            x.as_str()
                .is_some_and(|s| s.ends_with('Z') && s.contains('T'))
        })?;
        for k in [
            "entered",
            "live_time_wait",
            "live_fin_wait2_orphans",
            "expired",
            "killed_early",
            "poll_interval_ns",
        ] {
            check(k, &v[k], Value::is_u64)?;
        }
        check("overflow", &v["overflow"], |x| x.is_null() || x.is_u64())?;
        let p = &v["predicted_dwell_ns"];
        if p.as_object().map(serde_json::Map::len) != Some(3) {
            return Err(format!("predicted_dwell_ns = {p}"));
        }
        check("predicted_dwell_ns.count", &p["count"], Value::is_u64)?;
        let empty = p["count"] == 0;
        for k in ["min", "max"] {
            if !(p[k].is_u64() || (empty && p[k].is_null())) {
                return Err(format!("predicted_dwell_ns.{k} = {}", p[k]));
            }
        }
        if let (Some(lo), Some(hi)) = (p["min"].as_u64(), p["max"].as_u64())
            && lo > hi
        {
            return Err(format!("predicted min {lo} > max {hi}"));
        }
        Ok(())
    }

    fn uint(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or_default()
    }

    /// `interval` or `final`.
    #[must_use]
    pub fn report(&self) -> &str {
        self.0["report"].as_str().unwrap_or_default()
    }

    #[must_use]
    pub fn entered(&self) -> u64 {
        self.uint("entered")
    }

    #[must_use]
    pub fn live_time_wait(&self) -> u64 {
        self.uint("live_time_wait")
    }

    #[must_use]
    pub fn live_fin_wait2_orphans(&self) -> u64 {
        self.uint("live_fin_wait2_orphans")
    }

    #[must_use]
    pub fn expired(&self) -> u64 {
        self.uint("expired")
    }

    #[must_use]
    pub fn killed_early(&self) -> u64 {
        self.uint("killed_early")
    }

    /// `(count, min, max)` of the predicted TIME_WAIT dwells.
    #[must_use]
    pub fn predicted(&self) -> (u64, Option<Duration>, Option<Duration>) {
        let p = &self.0["predicted_dwell_ns"];
        let d = |k: &str| p[k].as_u64().map(Duration::from_nanos);
        (p["count"].as_u64().unwrap_or_default(), d("min"), d("max"))
    }
}

impl fmt::Display for TimewaitLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One `--hist --json` report: its `hist` lines, then its `timewait` line.
#[derive(Clone, Debug)]
pub struct HistReport {
    pub hists: Vec<HistLine>,
    pub timewait: TimewaitLine,
}

impl HistReport {
    /// Split JSON lines into reports (each ends with its `timewait` line); a
    /// trailing incomplete report is left out. Panics on any line off the
    /// documented schema.
    #[must_use]
    pub fn parse_all(lines: &[String]) -> Vec<Self> {
        let mut out = Vec::new();
        let mut hists = Vec::new();
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("tcptrace printed a line that is not JSON ({e}): {line}")
            });
            match v["type"].as_str() {
                Some("hist") => {
                    let h = HistLine(v);
                    if let Err(why) = h.validate() {
                        panic!("off-schema hist line ({why}): {line}");
                    }
                    hists.push(h);
                }
                Some("timewait") => {
                    let t = TimewaitLine(v);
                    if let Err(why) = t.validate() {
                        panic!("off-schema timewait line ({why}): {line}");
                    }
                    out.push(Self {
                        hists: std::mem::take(&mut hists),
                        timewait: t,
                    });
                }
                _ => panic!("a --hist --json line of unknown type: {line}"),
            }
        }
        out
    }

    #[must_use]
    pub fn is_final(&self) -> bool {
        self.timewait.report() == "final"
    }

    /// The one histogram of `state` with no group; panics if there are
    /// several.
    #[must_use]
    pub fn hist(&self, state: &str) -> Option<&HistLine> {
        let found: Vec<&HistLine> = self
            .hists
            .iter()
            .filter(|h| h.state() == state && h.group().is_none())
            .collect();
        assert!(found.len() <= 1, "several {state} histograms:\n{self}");
        found.first().copied()
    }

    /// The count of `state` (0 when it has no histogram: nothing left it).
    #[must_use]
    pub fn count(&self, state: &str) -> u64 {
        self.hist(state).map_or(0, HistLine::count)
    }

    /// The histograms of `state`, by group label.
    #[must_use]
    pub fn groups(&self, state: &str) -> HashMap<String, &HistLine> {
        let mut out = HashMap::new();
        for h in self.hists.iter().filter(|h| h.state() == state) {
            if let Some(g) = h.group() {
                let dup = out.insert(g.to_owned(), h);
                assert!(
                    dup.is_none(),
                    "two {state} histograms for group {g}:\n{self}"
                );
            }
        }
        out
    }
}

impl fmt::Display for HistReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for h in &self.hists {
            let p50 = h.p50().map_or_else(|| "-".to_owned(), |d| format!("{d:?}"));
            writeln!(
                f,
                "  {} {}{}: count {} p50 {p50} max {:?}",
                h.state(),
                h.by().unwrap_or(""),
                h.group().map(|g| format!("={g}")).unwrap_or_default(),
                h.count(),
                Duration::from_nanos(h.max_ns())
            )?;
        }
        write!(f, "  {}", self.timewait)
    }
}

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

/// A sample's labels, `(name, value)` in page order.
pub type Labels = Vec<(String, String)>;

/// One sample of a Prometheus text exposition: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A parsed `/metrics` page (the Prometheus text format, as prometheus-client
/// writes it).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

/// Parse `{k="v",...}` (with `\\`, `\"` and `\n` escapes) from the start of
/// `s`; returns the labels and the rest after `}`.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (key, r) = rest.split_once("=\"").ok_or("no =\" after a label name")?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &r[end + 1..];
    }
}

impl Metrics {
    /// Parse a page; panics (with the page) on a malformed line or a page
    /// that does not end with `# EOF`.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.last().copied(),
            Some("# EOF"),
            "an OpenMetrics page ends with # EOF:\n{text}"
        );
        for line in lines {
            if line.starts_with('#') {
                continue;
            }
            let parsed = (|| -> Result<Sample, String> {
                let name_end = line.find(['{', ' ']).ok_or("no value")?;
                let name = &line[..name_end];
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                {
                    return Err(format!("bad metric name {name:?}"));
                }
                let (labels, rest) = if line[name_end..].starts_with('{') {
                    parse_labels(&line[name_end..])?
                } else {
                    (Vec::new(), &line[name_end..])
                };
                // `value [timestamp]`: tcptrace's samples carry no timestamp.
                let mut fields = rest.split_whitespace();
                let value = fields.next().ok_or("no value")?;
                if fields.next().is_some() {
                    return Err("more than a value".into());
                }
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
                };
                Ok(Sample {
                    name: name.to_owned(),
                    labels,
                    value,
                })
            })();
            match parsed {
                Ok(s) => samples.push(s),
                Err(why) => panic!("malformed metrics line ({why}): {line:?}\n{text}"),
            }
        }
        Self {
            samples,
            text: text.to_owned(),
        }
    }

    /// The samples of `name` whose labels include every one of `labels`.
    #[must_use]
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect()
    }

    /// The value of the one sample named `name` with exactly `labels`;
    /// `None` when there is none, a panic when there are several.
    #[must_use]
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .matching(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert!(
            found.len() <= 1,
            "several samples {name}{labels:?}:\n{}",
            self.text
        );
        found.first().map(|s| s.value)
    }

    /// [`Metrics::get`], as an integer; panics (with the page) when absent or
    /// not a whole number.
    #[must_use]
    pub fn int(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self
            .get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text));
        assert!(
            v >= 0.0 && v.fract() == 0.0 && v < 9e15,
            "{name}{labels:?} = {v}, not a count"
        );
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked: a whole number from 0 to 9e15"
        )]
        let n = v as u64;
        n
    }

    /// The `_bucket` samples of histogram `name` whose labels include
    /// `labels`, as `(le, cumulative count)` in page order.
    #[must_use]
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
        self.matching(&format!("{name}_bucket"), labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len() + 1)
            .map(|s| {
                let le = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map_or_else(|| panic!("a bucket without le: {s:?}"), |(_, v)| v.clone());
                (le, s.value)
            })
            .collect()
    }
}

/// The lines that parse as JSON objects.
#[must_use]
pub fn json_objects(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}
