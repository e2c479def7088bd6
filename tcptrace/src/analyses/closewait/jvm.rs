//! JVM owners in a leak report: a note where the JVM hides its Java
//! frames from a frame-pointer walk, and a perf map refresh where its perf
//! map does not name them (at most one per JVM per report, on a thread of
//! its own: see `crate::host::jvm`).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    host::jvm::{self, Jvm, Refresher},
    model::{closewait::Group, jvm::NO_FRAME_POINTER_NOTE},
};

/// Said for a JVM that tcptrace will not attach to.
const REDUCED_SIGNALS_NOTE: &str = "this JVM runs with -Xrs (or -XX:+ReduceSignalUsage): \
     tcptrace does not attach to it, since SIGQUIT would end it; \
     for Java names run `jcmd <pid> Compiler.perfmap` before the next report";

/// Said for a JVM whose attach listener would refuse tcptrace's user.
fn other_user_note(me: u32, jvm: u32) -> String {
    format!(
        "tcptrace runs as uid {me}: the JVM's attach listener answers only its own user \
         (uid {jvm}) and root, so tcptrace does not ask it for a perf map; \
         for Java names run `jcmd <pid> Compiler.perfmap` as that user before the next report"
    )
}

pub(super) struct Jvms {
    /// None with `--no-jvm-attach`.
    refresher: Option<Refresher>,
}

impl Jvms {
    pub fn new(attach: bool) -> Self {
        Jvms {
            refresher: attach.then(Refresher::default),
        }
    }

    /// Note what the groups' JVMs hide, and, with `refresh`, start
    /// refreshing the perf maps of those whose frames are unnamed. Returns
    /// whether a refresh is under way.
    pub fn visit(&mut self, groups: &mut [Group], refresh: bool) -> bool {
        let mut seen: HashMap<u32, Option<Jvm>> = HashMap::new();
        let mut refreshing = false;
        // SAFETY: no preconditions.
        let me = unsafe { libc::geteuid() };
        for g in groups {
            let Some(pid) = g.pid else {
                continue;
            };
            let first = !seen.contains_key(&pid);
            let Some(j) = *seen.entry(pid).or_insert_with(|| jvm::inspect(pid)) else {
                continue;
            };
            if !j.flags.preserve_frame_pointer {
                g.notes.push(NO_FRAME_POINTER_NOTE.to_owned());
            }
            // Unnamed and not refused: a perf map that lacks the address.
            let unnamed = (g.eof_stack.iter().chain(&g.first_stack))
                .any(|f| f.function.is_none() && f.skipped.is_none());
            let Some(r) = self.refresher.as_mut().filter(|_| unnamed) else {
                continue;
            };
            if j.flags.reduce_signal_usage {
                g.notes.push(REDUCED_SIGNALS_NOTE.to_owned());
            } else if me != 0 && me != j.target.euid {
                g.notes.push(other_user_note(me, j.target.euid));
            } else {
                if let Some(why) = r.failure(pid) {
                    g.notes
                        .push(format!("asking the JVM for its perf map failed: {why}"));
                }
                if first && refresh {
                    refreshing |= r.start(&j);
                }
            }
        }
        refreshing
    }

    /// Wait for the refreshes under way, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) {
        if let Some(r) = self.refresher.as_mut() {
            r.wait(Instant::now() + timeout);
        }
    }
}
