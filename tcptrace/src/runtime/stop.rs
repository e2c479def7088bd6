//! When a run ends: Ctrl-C, SIGTERM (systemd's stop), or the end of
//! `--duration`: what ends the runtime's loop.
//!
//! The signals are taken by a thread of their own (`sigwait`), not by the
//! event loop, so that they are seen while the loop is busy (a leak report
//! waiting on the symbolizer reads [`Stop::flag`]), and so that a second one
//! exits at once even if the loop never comes back.

use std::{
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use nix::sys::signal::{SigSet, Signal};
use tokio::{
    sync::Notify,
    time::{Instant, sleep_until},
};

/// The exit status of a run cut short by a second signal (128 + SIGINT).
const SECOND_SIGNAL_EXIT: i32 = 130;

pub struct Stop {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
    deadline: Option<Instant>,
}

impl Stop {
    /// Take SIGINT and SIGTERM on a signal thread; `duration` counts from
    /// now. Call before any other thread starts: threads inherit the mask
    /// that keeps the signals for the signal thread.
    pub fn new(duration: Option<Duration>) -> anyhow::Result<Self> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.thread_block().context("blocking SIGINT and SIGTERM")?;
        let flag = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(Notify::new());
        let (f, n) = (Arc::clone(&flag), Arc::clone(&notify));
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || signal_thread(&set, &f, &n))
            .context("starting the signal thread")?;
        let now = Instant::now();
        Ok(Self {
            flag,
            notify,
            // A duration past what the clock can add is no deadline at all.
            deadline: duration.and_then(|d| now.checked_add(d)),
        })
    }

    /// Set once a signal asked the run to end, for work that must cut
    /// itself short then. The end of `--duration` leaves it unset: that
    /// run's final report takes its full time, as a periodic one does.
    #[must_use]
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Resolves when the run should end. Cancel-safe, for `select!`.
    pub async fn wait(&mut self) {
        let deadline = self.deadline;
        tokio::select! {
            () = self.notify.notified() => {}
            () = async {
                match deadline {
                    Some(d) => sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// The first signal ends the run (the final report follows); the second
/// exits at once.
fn signal_thread(set: &SigSet, flag: &AtomicBool, notify: &Notify) {
    let mut seen = 0u32;
    loop {
        let Ok(sig) = set.wait() else {
            continue;
        };
        seen += 1;
        if seen == 1 {
            flag.store(true, Ordering::Relaxed);
            notify.notify_one();
            if std::io::stderr().is_terminal() {
                eprintln!("tcptrace: {sig}: finishing; send it again to exit at once");
            }
        } else {
            eprintln!("tcptrace: {sig} again: exiting without the final report");
            std::process::exit(SECOND_SIGNAL_EXIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_the_duration_does_not_cut_the_final_report_short() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let mut stop = Stop::new(Some(Duration::from_millis(10))).expect("a signal thread");
        rt.block_on(stop.wait());
        assert!(
            !stop.flag().load(Ordering::Relaxed),
            "only a signal sets the flag that cuts the symbolizer short"
        );
    }
}
