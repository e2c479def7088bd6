//! [`LeakTracer`]: `tcptrace --closewait-leaks` inside a test's namespace,
//! and [`LeakRun`], one run's reports and exit summary.

use std::{fmt, time::Duration};

use super::{ModeRun, ModeTracer};
use crate::{
    Netns, READY,
    parse::{LeakGroup, LeakReport, parse_human_duration, stderr_line, unexplained_losses},
    tracer_bin,
};

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

    /// `tcptrace --closewait-leaks ARGS` in the host namespace, following
    /// every namespace (limit it with `--port` or `--netns`).
    #[must_use]
    pub fn start_host(args: &[&str]) -> Self {
        Self(ModeTracer::start_with(
            std::process::Command::new(tracer_bin()),
            "--closewait-leaks",
            args,
        ))
    }

    /// [`LeakTracer::start`] with extra environment variables for tcptrace.
    #[must_use]
    pub fn start_env(ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut cmd = ns.command(&tracer_bin());
        cmd.envs(env.iter().copied());
        Self(ModeTracer::start_with(
            cmd,
            "--closewait-leaks",
            &ns.scoped(args),
        ))
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

    /// Poll stdout (text mode) until it holds every one of `needles`, at
    /// most `timeout`. The caller checks what it needs afterwards.
    pub fn wait_for_text(&self, timeout: Duration, needles: &[&str]) {
        let _ = self.0.wait_until(timeout, |lines| {
            let t = lines.join("\n");
            needles.iter().all(|n| t.contains(n)).then_some(())
        });
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

    /// SIGTERM, and wait at most `timeout` for the exit.
    #[must_use]
    pub fn terminate(self, timeout: Duration) -> LeakRun {
        LeakRun(self.0.terminate(timeout))
    }

    /// tcptrace's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.0.stderr()
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
        // The ready line comes first, after the /metrics line if any.
        let ready = lines
            .iter()
            .position(|l| l.starts_with(READY))
            .is_some_and(|i| lines[..i].iter().all(|l| l.contains("serving Prometheus")));
        let clean = ready
            && lines
                .iter()
                .any(|l| l.starts_with("tcptrace: ") && l.contains(LEAK_SUMMARY))
            && unexplained_losses(&self.stderr).is_empty()
            && lines.iter().all(|l| l.starts_with("tcptrace: "));
        assert!(
            clean,
            "tcptrace {:?}: expected the ready line, the summary, a loss line of zeros and \
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
