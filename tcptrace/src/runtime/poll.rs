//! The timewait poll: each namespace any analysis wants dumped once, and
//! the dump handed to every analysis that asked for that namespace.

use std::collections::BTreeSet;

use super::Run;
use crate::{analyses::TimewaitPoll, kernel::clock::monotonic_ns, model::netns::Netns};

/// A failed timewait poll, logged once per namespace (a namespace tcptrace
/// may not enter fails every second).
fn poll_failed(warned: &mut BTreeSet<Option<Netns>>, ns: Option<Netns>, e: &dyn std::fmt::Display) {
    if warned.len() >= MAX_POLL_WARNINGS {
        warned.clear();
    }
    if warned.insert(ns) {
        log::warn!(
            "sock_diag poll of timewait sockets: {e} (further failures in this namespace are not logged)"
        );
    }
}

/// Namespaces remembered as having had a failed poll logged.
const MAX_POLL_WARNINGS: usize = 1024;

impl Run<'_> {
    /// Poll the timewait sockets for the analyses that follow them: each
    /// namespace any of them wants, once, handed to those that want it.
    pub(super) fn poll(&mut self) {
        let ports = self.ports;
        let (analyses, mut cx) = self.split();
        let wanted: Vec<Vec<Option<Netns>>> = analyses
            .iter_mut()
            .map(|a| {
                if a.follows_timewait() {
                    a.timewait_wanted(&cx)
                } else {
                    Vec::new()
                }
            })
            .collect();
        let union: BTreeSet<Option<Netns>> = wanted.iter().flatten().copied().collect();
        let mut failed = Vec::new();
        for ns in union {
            match cx.diag(ns, |d| d.timewait_sockets(&ports)) {
                Ok(sockets) => {
                    let poll = TimewaitPoll {
                        now_ns: monotonic_ns(),
                        netns: ns,
                        sockets: &sockets,
                    };
                    for (a, w) in analyses.iter_mut().zip(&wanted) {
                        if w.contains(&ns) {
                            a.on_poll(&mut cx, &poll);
                        }
                    }
                }
                Err(e) if e.vanished() => {}
                Err(e) => failed.push((ns, e)),
            }
        }
        for (ns, e) in failed {
            poll_failed(&mut self.poll_warned, ns, &e);
        }
    }
}
