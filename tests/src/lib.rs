//! Harness for tcptrace's integration tests. The tests load eBPF programs and
//! create network namespaces, so they need root, and they share kernel state
//! (tracepoints are global): run them one at a time, as `sudo cargo xtask
//! test` does:
//!
//! ```text
//! cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1
//! ```
//!
//! Every test runs its peers in a fresh network namespace on a port of its
//! own and starts tcptrace (in the root namespace) with `--port` set to that
//! port, so that other traffic on the machine never shows up in its events.
//! The reporting modes ([`ModeTracer`]: `--hist`, `--timewait`,
//! `--closewait-leaks`) mostly run tcptrace inside the test's namespace
//! instead, limited to it with `--netns` (a `--prometheus` listener is then
//! reachable from inside it); the tests of several namespaces run it in the
//! host namespace. Every wait in this crate is bounded; a test that cannot
//! run fails loudly.
//!
//! [`deploy`]: the systemd unit, alert rules and dashboard of `deploy/`.
//!
//! [`netns`]: namespaces and the [`Lab`]; [`peers`]: the processes a test
//! drives; [`process`]: child-process plumbing; [`tracer`]: tcptrace runs;
//! [`parse`]: what tcptrace prints; [`jvm`]: a Java server in namespaces of its own; [`scenario`]: shared connection scenarios;
//! [`prom_server`]: a real Prometheus server scraping tcptrace; [`kernel`]:
//! what the running kernel offers, and tests it cannot support.
#![expect(
    clippy::missing_panics_doc,
    reason = "a test harness: panicking with a precise message is how it reports failure"
)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub mod deploy;
pub mod jvm;
pub mod kernel;
pub mod netns;
pub mod parse;
pub mod peers;
pub mod process;
pub mod prom_server;
pub mod scenario;
pub mod tracer;

pub use jvm::{JavaClasses, JavaServer};
pub use netns::{Lab, Netns, TW_REUSE_DELAY, wait_until_reusable};
pub use parse::{
    Event, HistBucket, HistLine, HistReport, Labels, LeakFrame, LeakGroup, LeakReport,
    MISSED_TRANSITIONS, MISSED_TRANSITIONS_REASON, Metrics, SKIPPED_RUNS, SKIPPED_RUNS_REASON,
    Sample, Socket, TimewaitLine, group_sockets, is_skipped_runs, json_objects, loss, losses,
    number_before, parse_human_duration, promtool_check, stderr_line, unexplained_losses,
};
pub use peers::{LEAKY_RECV_BUF, LeakyServer, LeakyServerBin, Peer};
pub use process::{ChildGuard, TempDir, run_bounded, signal, wait_exit};
pub use prom_server::{PromServer, need, sample_value};
pub use tracer::{LeakRun, LeakTracer, ModeRun, ModeTracer, Trace, Tracer, spawn_tracer_raw};

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
/// Every bounded wait of this crate is `d` times the factor in
/// `TCPTRACE_TEST_SLOWDOWN` (a whole number, 1 when unset): the kernel
/// matrix sets it for kernels booted under software emulation, where
/// loading tcptrace alone takes tens of seconds.
#[must_use]
pub fn patient(d: Duration) -> Duration {
    static FACTOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    d * *FACTOR.get_or_init(|| {
        std::env::var("TCPTRACE_TEST_SLOWDOWN")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&f| f >= 1)
            .unwrap_or(1)
    })
}

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
