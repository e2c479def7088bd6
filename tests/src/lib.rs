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
//! Every wait in this crate is bounded; a test that cannot run fails loudly.
#![expect(
    clippy::missing_panics_doc,
    reason = "a test harness: panicking with a precise message is how it reports failure"
)]

use std::{
    collections::HashMap,
    fmt,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicU32, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod scenario;

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

/// Wait for `child` to exit, at most `timeout`; kill it and panic otherwise.
pub fn wait_exit(child: &mut Child, what: &str, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} (pid {}) did not exit within {timeout:?}",
                    child.id()
                );
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// Read a pipe to its end in a thread.
fn slurp<R: Read + Send + 'static>(mut r: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Run a command to completion with a time limit, capturing its output.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let out = slurp(child.stdout.take().expect("piped"));
    let err = slurp(child.stderr.take().expect("piped"));
    let status = wait_exit(&mut child, &what, timeout);
    Output {
        status,
        stdout: out.join().expect("reader thread").into_bytes(),
        stderr: err.join().expect("reader thread").into_bytes(),
    }
}

fn ip(args: &[&str]) -> Output {
    run_bounded(Command::new("ip").args(args), Duration::from_secs(10))
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Delete namespaces left behind by earlier runs that crashed (their creating
/// process is gone).
fn remove_stale_namespaces() {
    let out = ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A network namespace with `lo` up (127.0.0.1 and `::1`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    #[must_use]
    pub fn new() -> Self {
        static CLEANUP: Once = Once::new();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        CLEANUP.call_once(remove_stale_namespaces);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}{}-{n}", std::process::id());
        ip_ok(&["netns", "add", &name]);
        let ns = Self { name };
        ip_ok(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NS program`: it execs, so the child's pid is program's.
    #[must_use]
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = ip(&["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A test's namespace and the peer binary to run in it.
pub struct Lab {
    pub ns: Netns,
    peer_bin: PathBuf,
}

/// A [`Lab`] for this test: checks for root, creates a fresh namespace.
/// A macro because `CARGO_BIN_EXE_*` exists only in integration tests.
#[macro_export]
macro_rules! lab {
    () => {
        $crate::Lab::new(env!("CARGO_BIN_EXE_tcptrace-peer"))
    };
}

impl Lab {
    #[must_use]
    pub fn new(peer_bin: &str) -> Self {
        require_root();
        Self {
            ns: Netns::new(),
            peer_bin: PathBuf::from(peer_bin),
        }
    }

    /// Start `tcptrace-peer server ARGS`; returns once it listens, unless
    /// ARGS has `--wait-go` (then call [`Peer::go`] first).
    #[must_use]
    pub fn server(&self, args: &[&str]) -> Peer {
        let mut p = Peer::spawn(&self.ns, &self.peer_bin, "server", args);
        if !args.contains(&"--wait-go") {
            p.wait_line("ready");
        }
        p
    }

    /// Start `tcptrace-peer client ARGS`.
    #[must_use]
    pub fn client(&self, args: &[&str]) -> Peer {
        Peer::spawn(&self.ns, &self.peer_bin, "client", args)
    }
}

/// A running `tcptrace-peer`. Killed on drop if still running.
pub struct Peer {
    role: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Peer {
    fn spawn(ns: &Netns, bin: &Path, role: &'static str, args: &[&str]) -> Self {
        let mut cmd = ns.command(bin);
        cmd.arg(role)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Self {
            role,
            stdin: child.stdin.take(),
            stderr: Some(slurp(child.stderr.take().expect("piped"))),
            child,
            lines,
            seen: Vec::new(),
        };
        let pid_line = p.wait_line("pid ");
        assert_eq!(
            pid_line,
            format!("pid {}", p.pid()),
            "the peer's own pid must be the spawned pid (ip netns exec execs)"
        );
        p
    }

    /// The peer's pid (`ip netns exec` execs the peer in place).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the next line starting with `prefix` (earlier lines are kept
    /// for messages); returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("nothing within {LINE_TIMEOUT:?}"),
                        RecvTimeoutError::Disconnected => "it exited".to_owned(),
                    };
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                    panic!(
                        "{} {} never printed {prefix:?}: {why}; stdout so far {:?}; stderr {:?}",
                        self.role,
                        self.pid(),
                        self.seen,
                        stderr.unwrap_or_default()
                    );
                }
            }
        }
    }

    /// The go-ahead for a peer started with `--wait-go`.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("go() once");
        stdin.write_all(b"go\n").expect("writing go to the peer");
        self.stdin = None;
    }

    /// Wait for the peer to exit successfully; returns all its stdout lines.
    #[expect(
        clippy::must_use_candidate,
        reason = "the lines are for tests that check them; waiting is the point"
    )]
    pub fn wait_success(mut self) -> Vec<String> {
        let what = format!("{} {}", self.role, self.pid());
        let status = wait_exit(&mut self.child, &what, EXIT_TIMEOUT);
        // The writer is gone: the channel drains and then disconnects.
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            status.success(),
            "{what} failed: {status}; stdout {:?}; stderr {stderr:?}",
            self.seen
        );
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Collects a child's stderr and signals the ready line.
struct StderrWatch {
    text: Arc<Mutex<String>>,
    ready: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl StderrWatch {
    fn new<R: Read + Send + 'static>(stderr: R) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let (tx, ready) = mpsc::channel();
        let shared = Arc::clone(&text);
        let thread = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(READY) {
                    let _ = tx.send(());
                }
                let mut t = shared.lock().expect("not poisoned");
                t.push_str(&line);
                t.push('\n');
            }
        });
        Self {
            text,
            ready,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        self.text.lock().expect("not poisoned").clone()
    }

    /// Wait for the ready line; `Err` with the reason if it never comes.
    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        match self.ready.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(format!("no ready line within {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => Err("it exited before tracing".to_owned()),
        }
    }

    /// All of stderr, once the writer has exited.
    fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// Spawn tcptrace with `args` and wait for its ready line. stdout is whatever
/// `stdout` says; stderr is collected. Panics with stderr if it never gets
/// ready.
fn spawn_ready(args: &[&str], stdout: Stdio) -> (Child, StderrWatch) {
    let bin = tracer_bin();
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
    let watch = StderrWatch::new(child.stderr.take().expect("piped"));
    if let Err(why) = watch.wait_ready(READY_TIMEOUT) {
        let _ = child.kill();
        let status = child.wait();
        let stderr = watch.finish();
        panic!("tcptrace {args:?} did not start: {why}; status {status:?}; stderr:\n{stderr}");
    }
    (child, watch)
}

/// Send `sig` to a child that has not been reaped.
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet, so it
    // cannot have been recycled.
    let rc = unsafe { libc::kill(pid, sig) };
    assert!(
        rc == 0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A running `tcptrace --json`.
pub struct Tracer {
    args: Vec<String>,
    child: Child,
    stderr: Option<StderrWatch>,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<()>>,
}

impl Tracer {
    /// Start `tcptrace --json ARGS` and wait until it traces. Always pass a
    /// port filter of the test's own.
    #[must_use]
    pub fn start(args: &[&str]) -> Self {
        require_root();
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (mut child, stderr) = spawn_ready(&all, Stdio::piped());
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

    /// The events printed so far.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        let lines = self.lines.lock().expect("not poisoned").clone();
        lines.iter().map(|l| Event::parse(l)).collect()
    }

    /// Poll the events printed so far until `done` holds, at most
    /// [`EVENTS_TIMEOUT`]. Returns whether it did; the assertions that follow
    /// say what is missing.
    pub fn wait_for(&self, done: impl Fn(&[Event]) -> bool) -> bool {
        let deadline = Instant::now() + EVENTS_TIMEOUT;
        loop {
            if done(&self.events()) {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!("note: the expected events did not all arrive within {EVENTS_TIMEOUT:?}");
                return false;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGINT, wait for the exit, and return everything it printed.
    #[must_use]
    pub fn stop(mut self) -> Trace {
        signal(&self.child, libc::SIGINT);
        let status = wait_exit(&mut self.child, "tcptrace", EXIT_TIMEOUT);
        if let Some(t) = self.stdout.take() {
            let _ = t.join();
        }
        let stderr = self
            .stderr
            .take()
            .map(StderrWatch::finish)
            .unwrap_or_default();
        let lines = std::mem::take(&mut *self.lines.lock().expect("not poisoned"));
        let events = lines.iter().map(|l| Event::parse(l)).collect();
        Trace {
            args: std::mem::take(&mut self.args),
            events,
            stderr,
            status,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child process that is killed (and reaped) if dropped while running, so
/// that a failing test leaves nothing behind.
pub struct ChildGuard(pub Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
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
        let summary = self
            .stderr
            .lines()
            .find(|l| l.starts_with("tcptrace: ") && l.contains(" events ("))
            .unwrap_or_else(|| panic!("no event summary on stderr:\n{}", self.stderr));
        assert!(summary.contains(" 0 undecodable"), "{summary}");
        let losses = self
            .stderr
            .lines()
            .find(|l| l.starts_with("tcptrace: losses: "))
            .unwrap_or_else(|| panic!("no loss summary on stderr:\n{}", self.stderr));
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
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("tcptrace: ") && l.contains(" events ("))
            .unwrap_or_else(|| panic!("no event summary on stderr:\n{}", self.stderr));
        let number_before = |word: &str| -> u64 {
            let head = &line[..line
                .find(word)
                .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))];
            head.trim_end()
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number before {word:?} in {line:?}"))
        };
        (
            number_before(" events ("),
            number_before(" printed"),
            number_before(" filtered out"),
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
}
