//! tcptrace as the tests run it: [`ModeTracer`] and [`ModeRun`] for the
//! reporting modes, which [`Tracer`] (the `--json` event stream) and
//! [`LeakTracer`] (`--closewait-leaks`) wrap, and [`spawn_tracer_raw`].

use std::{
    fmt,
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    EXIT_TIMEOUT, Netns, POLL, READY,
    parse::{HistReport, json_objects, number_before},
    process::{
        ChildGuard, StderrWatch, kill_if_running, signal, spawn_ready, spawn_ready_with, wait_exit,
    },
    require_root, tracer_bin,
};

pub mod events;
pub mod leaks;

pub use events::{Trace, Tracer};
pub use leaks::{LeakRun, LeakTracer};

/// A running `tcptrace` in a reporting mode (`--hist`, `--timewait`,
/// `--closewait-leaks`), inside a test's namespace and limited to it
/// ([`ModeTracer::start_mode`]; a `--prometheus` listener is then reachable
/// only from inside it), or started by any command
/// ([`ModeTracer::start_with`]). Killed on drop if still running.
pub struct ModeTracer {
    args: Vec<String>,
    child: Child,
    stderr: Option<StderrWatch>,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<()>>,
}

impl ModeTracer {
    /// `ip netns exec NS tcptrace --hist ARGS`, once it traces.
    #[must_use]
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::start_mode(ns, "--hist", args)
    }

    /// `ip netns exec NS tcptrace MODE --netns NS ARGS`, once it traces:
    /// tcptrace follows every namespace by default, and the test only its
    /// own.
    #[must_use]
    pub fn start_mode(ns: &Netns, mode: &str, args: &[&str]) -> Self {
        Self::start_with(ns.command(&tracer_bin()), mode, &ns.scoped(args))
    }

    /// `CMD MODE ARGS`, where CMD runs tcptrace (e.g. through a wrapper that
    /// changes its environment), once it traces.
    #[must_use]
    pub fn start_with(cmd: Command, mode: &str, args: &[&str]) -> Self {
        require_root();
        let mut all = vec![mode];
        all.extend_from_slice(args);
        // Under emulation (TCPTRACE_TEST_SLOWDOWN) symbolizing one process
        // takes longer than tcptrace's default budget of 2 s.
        let budget = format!("{}s", crate::patient(Duration::from_secs(2)).as_secs());
        if budget != "2s"
            && all.contains(&"--closewait-leaks")
            && !all.contains(&"--symbolize-timeout")
        {
            all.extend(["--symbolize-timeout", &budget]);
        }
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
        let deadline = Instant::now() + crate::patient(timeout);
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

    /// SIGTERM (systemd's stop), wait at most `timeout` for the exit.
    #[must_use]
    pub fn terminate(self, timeout: Duration) -> ModeRun {
        signal(&self.child, libc::SIGTERM);
        self.finish(timeout)
    }

    /// tcptrace's pid (`ip netns exec` execs it).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
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
        kill_if_running(&mut self.child);
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

/// Start tcptrace with `args` and stdout piped, wait until it traces, and
/// hand over the child (for tests of how it handles its output) and a
/// function that returns its whole stderr once it has exited.
pub fn spawn_tracer_raw(args: &[&str]) -> (ChildGuard, impl FnOnce() -> String) {
    require_root();
    let (child, watch) = spawn_ready(args, Stdio::piped());
    (ChildGuard(child), move || watch.finish())
}
