//! When a run ends: Ctrl-C, SIGTERM (systemd's stop), or the end of
//! `--duration`: what ends the runtime's loop.

use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, sleep_until},
};

pub struct Stop {
    sigint: Signal,
    sigterm: Signal,
    deadline: Option<Instant>,
}

impl Stop {
    /// Install the handlers; `duration` counts from now.
    pub fn new(duration: Option<Duration>) -> anyhow::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            sigterm: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            deadline: duration.and_then(|d| Instant::now().checked_add(d)),
        })
    }

    /// Resolves when the run should end. Cancel-safe, for `select!`.
    pub async fn wait(&mut self) {
        let deadline = self.deadline;
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
            () = async {
                match deadline {
                    Some(d) => sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
