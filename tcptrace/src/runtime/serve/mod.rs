//! The HTTP side of `--prometheus`, on hyper: bound at start-up (a busy
//! port is a start-up error), then `GET /metrics` and `GET /healthz` served
//! by a thread of its own.
//!
//! The event loop runs on a current-thread tokio runtime, so the server has
//! its own thread and runtime: parsing requests, encoding the page and
//! writing it never delay a drain of the rings. The two share only the
//! snapshot's lock, held by a scrape for a copy of the snapshot (the
//! encoding works on the copy), and the [`Health`] atomics.
//!
//! What bounds a client: at most [`MAX_CONNECTIONS`] connections at once;
//! a connection's request headers must arrive within [`HEADER_TIMEOUT`] of
//! its accept (slowloris), and its response be written within
//! [`WRITE_TIMEOUT`] of its headers; one request per connection (no
//! keep-alive). Room for a new connection is made by closing the oldest one
//! still waiting for its headers ([`conns`]). The last [`FD_RESERVE`] file
//! descriptors below the process's limit are left to the event loop: a
//! connection accepted into them is served only in the place of one closed
//! to make room. A failing `accept` (e.g. EMFILE) backs off from 10 ms to
//! 1 s, logged once per burst.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd as _, RawFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use nix::sys::resource::{Resource, getrlimit};
use tokio::net::TcpListener;

use crate::report::prometheus::Snapshot;

mod conns;
mod health;
mod site;

pub use health::Health;

use conns::Conns;
use site::Site;

/// Connections served at once: scrapers and health checks are few, and each
/// connection holds a file descriptor of the tracer's.
pub const MAX_CONNECTIONS: usize = 64;
/// From accept to the end of the request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// From the end of the request headers to the end of the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors below `RLIMIT_NOFILE` that new connections leave free
/// for the rest of the tracer (`/proc` and namespace files, sockets).
pub const FD_RESERVE: u64 = 8;
/// The first and the longest wait after a failed `accept`.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Bind `addr` now (so a busy port is a start-up error) and serve
/// `/metrics` from `snapshot` and `/healthz` from `health` on a thread of
/// its own until the process exits.
pub fn serve(
    addr: SocketAddr,
    snapshot: Arc<Mutex<Snapshot>>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("--prometheus {addr}: cannot listen"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("--prometheus: starting the HTTP server's runtime")?;
    let site = Arc::new(Site { snapshot, health });
    std::thread::Builder::new()
        .name("tcptrace-http".into())
        .spawn(move || {
            rt.block_on(async move {
                // Registering the socket needs this runtime's reactor.
                match TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, site).await,
                    Err(e) => log::error!("--prometheus {addr}: {e}"),
                }
            });
        })
        .context("--prometheus: starting the HTTP server's thread")?;
    Ok(())
}

/// Accept forever: each connection in a task of its own (or closed at once
/// when every slot serves a request, or when it took a reserved descriptor
/// and no connection could be closed in its place); after a failed accept,
/// close the oldest connection still waiting for its headers if the failure
/// is for want of a file descriptor, else back off.
async fn accept_loop(listener: TcpListener, site: Arc<Site>) {
    let conns = Conns::new(MAX_CONNECTIONS, site);
    let mut backoff = Backoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                if in_reserve(stream.as_raw_fd()) && !conns.evict_oldest().await {
                    continue;
                }
                conns.admit(stream).await;
            }
            Err(e) => {
                if out_of_descriptors(&e) && conns.evict_oldest().await {
                    continue;
                }
                backoff.failed(&e).await;
            }
        }
    }
}

/// Whether the descriptor `fd` a connection was accepted into lies within
/// [`FD_RESERVE`] of the process's limit. The kernel hands out the lowest
/// free descriptor, so every one below `fd` is in use: a lower bound on
/// those in use, read without listing them.
fn in_reserve(fd: RawFd) -> bool {
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return false;
    };
    u64::try_from(fd).is_ok_and(|fd| fd.saturating_add(FD_RESERVE) >= soft)
}

/// The process's or the system's file descriptors are used up.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The wait after each failed `accept` of a burst: [`BACKOFF_MIN`], doubled
/// at each failure up to [`BACKOFF_MAX`]; a successful accept ends the
/// burst. A pending connection keeps the listener readable, so retrying at
/// once would spin.
#[derive(Debug, Default)]
struct Backoff {
    /// The last wait of the current burst; None between bursts.
    delay: Option<Duration>,
    /// Failures in the current burst.
    failures: u64,
}

impl Backoff {
    /// The next wait after a failure; logs the first of a burst.
    fn next(&mut self, e: &io::Error) -> Duration {
        let delay = match self.delay {
            None => {
                log::warn!(
                    "--prometheus: accept failed: {e}; retrying with a back-off of \
                     {BACKOFF_MIN:?} to {BACKOFF_MAX:?} (logged once until an accept succeeds)"
                );
                BACKOFF_MIN
            }
            Some(d) => (d * 2).min(BACKOFF_MAX),
        };
        self.delay = Some(delay);
        self.failures += 1;
        delay
    }

    async fn failed(&mut self, e: &io::Error) {
        tokio::time::sleep(self.next(e)).await;
    }

    fn succeeded(&mut self) {
        if self.delay.take().is_some() {
            log::info!(
                "--prometheus: accepting again after {} failed accepts",
                self.failures
            );
        }
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_restarts_after_a_success() {
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(out_of_descriptors(&e));
        let mut b = Backoff::default();
        let waits: Vec<u128> = (0..10).map(|_| b.next(&e).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.next(&e), BACKOFF_MIN);
    }

    #[test]
    fn the_reserve_is_the_last_descriptors_below_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let fd = |n: u64| RawFd::try_from(n).unwrap_or(RawFd::MAX);
        assert!(!in_reserve(3));
        assert!(!in_reserve(fd(soft - FD_RESERVE - 1)));
        assert!(in_reserve(fd(soft - FD_RESERVE)));
    }
}
