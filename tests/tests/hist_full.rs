//! `--hist --by lport` keeps one kernel `HIST` key per (state, bucket,
//! port), 16 384 keys at most: past that, each dwell the full map refuses
//! is counted, and the exit summary's `--hist losses` line says how many.
//!
//! Needs root, and the tests share kernel state: run with `--test-threads=1`,
//! e.g. `sudo cargo xtask test`, or
//! `cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1`.

use std::time::Duration;

use integration_tests::{
    ModeRun, ModeTracer, lab, loss,
    scenario::{Clients, active_closes},
};

/// `HIST`'s size in the eBPF object.
const HIST_KEYS: u64 = 16_384;

/// The dwells `HIST` refused, from the loss line's `N dwells not counted
/// (histogram map full)`.
fn hist_full(run: &ModeRun) -> u64 {
    loss(&run.stderr, "dwells not counted (histogram map full)")
}

/// 3000 client connections (two runs of 1500: the peer makes at most
/// 2000), each from its own port, each through
/// SYN_SENT, ESTABLISHED, FIN_WAIT1 and FIN_WAIT2: a bucket and a maximum
/// key per state and port, some 24 000 keys for a map of 16 384. The
/// refused dwells are counted and printed, and the final report still
/// parses: a group whose maximum's key was refused has its top bucket's
/// upper bound as its max, never a max below its percentiles.
#[test]
fn a_full_histogram_map_counts_every_dwell_it_refuses() {
    const N: u64 = 3000;
    let lab = lab!();
    // Loopback's default (`tcp_tw_reuse=2`) lets a connect reuse a port in
    // TIME_WAIT: each client port must be new.
    lab.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let tracer = ModeTracer::start(&lab.ns, &["--json", "-i", "60", "--by", "lport"]);
    let mut ports: Vec<u16> = Vec::new();
    for addr in ["127.0.0.1:29571", "127.0.0.1:29573"] {
        ports.extend(active_closes(
            &lab,
            addr,
            usize::try_from(N / 2).unwrap(),
            Duration::ZERO,
            Clients::OneByOne,
        ));
    }
    let run = tracer.stop();
    run.assert_clean_exit();
    let lost = hist_full(&run);
    assert!(
        lost > 0,
        "{N} ports x 4 states overfill {HIST_KEYS} keys, yet no loss counted:\n{}",
        run.stderr
    );
    assert!(lost < N * 4, "at most the clients' dwells are lost: {lost}");
    // The parser checks every line: percentiles in order, none above max.
    let final_report = run
        .reports()
        .pop()
        .unwrap_or_else(|| panic!("no report:\n{run}"));
    assert!(
        !final_report.hists.is_empty(),
        "the final report has groups:\n{run}"
    );
}

/// A run whose groups fit counts no loss.
#[test]
fn a_histogram_map_with_room_counts_no_loss() {
    let lab = lab!();
    let tracer = ModeTracer::start(&lab.ns, &["--json", "-i", "60", "--by", "lport"]);
    let _ = active_closes(
        &lab,
        "127.0.0.1:29572",
        20,
        Duration::ZERO,
        Clients::OneByOne,
    );
    let run = tracer.stop();
    run.assert_clean_exit();
    assert_eq!(hist_full(&run), 0, "{}", run.stderr);
}
