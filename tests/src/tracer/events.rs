//! [`Tracer`]: `tcptrace --json` in the test process's own namespace, and
//! [`Trace`], the events, stderr and exit status of one run.

use std::{
    fmt,
    process::{Command, ExitStatus},
};

use super::ModeTracer;
use crate::{
    EVENTS_TIMEOUT,
    parse::{Event, Socket, group_sockets, number_before, stderr_line},
    tracer_bin,
};

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

    /// tcptrace's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.0.pid()
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
