//! `cargo xtask bench`: tcptrace's cost against no tracer and against
//! bpftrace, side by side in one run, configurations interleaved (A B A B ...)
//! so that machine drift cancels out. Writes docs/benchmarks.md and
//! docs/benchmarks.json.
//!
//! Load: the project's own generator (`tcptrace-load`), server inside a
//! network namespace made here, clients in the same namespace, loopback only.
//!
//! Three stages, each with its own table between markers in
//! docs/benchmarks.md and its own keys in docs/benchmarks.json:
//! `throughput` (here; its rows in configs.rs, its table in report.rs),
//! `scale` (100k held connections, scale.rs) and `netns` (the cost of
//! following 1, 50 and 200 network namespaces, namespaces.rs); `--only
//! STAGE` runs one.
//!
//! `--baseline REV` adds to the throughput stage tcptrace built from REV
//! (baseline.rs), as rows of its own, and a third table: its kernel ns/call
//! against this tree's, program by program (compare.rs).

mod baseline;
mod compare;
mod configs;
mod namespaces;
mod report;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{
    cargo, is_root,
    netns::{self, Netns},
    procstat::{cpu_seconds, peak_rss_kib, program_sizes, program_stats},
    status, workspace_root,
};
use configs::Config;
pub(crate) use report::splice as splice_table;
use report::{NETNS_MARKERS, SCALE_MARKERS, splice, update_json, write_comparison, write_reports};

const NETNS: &str = "tcptrace-bench";
const ADDR: &str = "127.0.0.1:18950";

/// One measured run of one configuration.
#[derive(Clone, Debug, Default)]
struct Run {
    conns_per_s: f64,
    reqs_per_s: f64,
    /// Tracer user+sys CPU seconds per wall second.
    cpu_per_s: f64,
    rss_kib: u64,
    /// Kernel ns per invocation, per program name (tcptrace) or fd (bpftrace).
    ns_per_call: BTreeMap<String, f64>,
    /// The same during the churn load only, and the keep-alive load only,
    /// and over both loads (exact, from the kernel's totals).
    ns_churn: BTreeMap<String, f64>,
    ns_keepalive: BTreeMap<String, f64>,
    ns_load: BTreeMap<String, f64>,
    /// Each program's size after the verifier, in bytes.
    prog_bytes: BTreeMap<String, u32>,
    events_per_s: f64,
    losses: u64,
    /// Kernel ns per connection of the churn load: every program's run
    /// time during that load over the connections it made.
    kernel_ns_per_conn: Option<f64>,
}

struct Tracer {
    child: Child,
    started: Instant,
    stderr_lines: std::sync::mpsc::Receiver<String>,
}

fn spawn_tracer(cfg: &Config) -> Result<Option<Tracer>> {
    let Some(mut cmd) = cfg.command() else {
        return Ok(None);
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cfg.name()))?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // tcptrace says when it is attached; bpftrace attaches within a second
    // or two of start (its banner goes to stdout, discarded here).
    let deadline = Instant::now() + Duration::from_secs(30);
    if cfg.says_ready() {
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .map_err(|_| anyhow!("{} did not start", cfg.name()))?;
            if line.starts_with("tcptrace: tracing") {
                break;
            }
        }
    } else {
        thread::sleep(Duration::from_secs(3));
        if let Some(st) = child.try_wait()? {
            bail!(
                "bpftrace exited at start ({st}); is it installed and does it work on this kernel?"
            );
        }
    }
    Ok(Some(Tracer {
        child,
        started: Instant::now(),
        stderr_lines: rx,
    }))
}

/// Fewer calls than this in a phase give no figure: a handful of cold runs
/// (the keep-alive load opens 2 connections) says nothing about a program.
const MIN_PHASE_CALLS: f64 = 1000.0;

/// ns per call of each program between two [`program_stats`] readings.
fn phase_costs(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, &(t, n))| {
            let (t0, n0) = before.get(k).copied().unwrap_or_default();
            (n - n0 >= MIN_PHASE_CALLS).then(|| (k.clone(), (t - t0) / (n - n0)))
        })
        .collect()
}

/// Every program's run time between two [`program_stats`] readings over
/// `conns` connections; None without programs or connections.
fn ns_per_conn(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
    conns: f64,
) -> Option<f64> {
    if after.is_empty() || conns < 1.0 {
        return None;
    }
    let ns: f64 = after
        .iter()
        .map(|(k, &(t, _))| t - before.get(k).map_or(0.0, |b| b.0))
        .sum();
    Some(ns / conns)
}

/// `tcptrace: kernel cost per call: a 12 ns x 5, b 30 ns x 2`
fn parse_costs(line: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Some(list) = line.strip_prefix("tcptrace: kernel cost per call: ") {
        for item in list.split(", ") {
            let mut w = item.split_whitespace();
            if let (Some(name), Some(ns)) = (w.next(), w.next())
                && let Ok(ns) = ns.parse()
            {
                out.insert(name.to_owned(), ns);
            }
        }
    }
    out
}

fn stop_tracer(cfg: &Config, t: Tracer, run: &mut Run) -> Result<()> {
    let pid = t.child.id();
    let wall = t.started.elapsed().as_secs_f64();
    run.cpu_per_s = cpu_seconds(pid).unwrap_or(0.0) / wall;
    run.rss_kib = peak_rss_kib(pid);
    let totals = program_stats(pid);
    run.prog_bytes = program_sizes(pid);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap_or(0), libc::SIGINT) };
    let mut child = t.child;
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{} did not stop", cfg.name());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let lines: Vec<String> = t.stderr_lines.try_iter().collect();
    run.ns_per_call = lines
        .iter()
        .map(|l| parse_costs(l))
        .find(|m| !m.is_empty())
        // bpftrace prints no costs: the kernel's program info has them.
        .unwrap_or_else(|| {
            totals
                .into_iter()
                .filter(|&(_, (_, n))| n > 0.0)
                .map(|(k, (t, n))| (k, t / n))
                .collect()
        });
    for l in &lines {
        if let Some(rest) = l.strip_prefix("tcptrace: ")
            && let Some(n) = rest
                .split(" events")
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        {
            run.events_per_s = n / wall;
        }
        if let Some(rest) = l.strip_prefix("tcptrace: losses: ") {
            run.losses += rest
                .split(" ring-buffer full")
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(())
}

/// One load: connections per second, requests per second, connections.
fn load(loadgen: &Path, mode: &str, threads: u32, seconds: f64) -> Result<(f64, f64, f64)> {
    let out = netns::exec(NETNS, loadgen)
        .args([mode, "--addr", ADDR, "--threads", &threads.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .output()
        .context("running the load generator")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |k: &str| -> f64 {
        text.split(&format!("\"{k}\":"))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let secs = num("seconds").max(1e-9);
    let conns = num("connections");
    Ok((conns / secs, num("requests") / secs, conns))
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ensure_bpftrace() -> Result<()> {
    if Command::new("bpftrace").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: installing bpftrace (Debian package) for the peer comparison");
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "bpftrace"]),
    )
    .context("installing bpftrace failed; install it by hand: apt-get install bpftrace")
}

/// The stages of `cargo xtask bench`; each writes its own table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Throughput under churn and keep-alive load: no tracer, tcptrace's
    /// modes and bpftrace, interleaved over rounds.
    Throughput,
    /// tcptrace's memory and CPU with 100k held connections (100k sockets in
    /// CLOSE_WAIT, 100k in FIN_WAIT2), mode by mode.
    Scale,
    /// tcptrace's CPU with 1, 50 and 200 network namespaces on the host,
    /// idle, then 10 of them with TIME_WAIT churn (the 1 s polls' cost).
    Netns,
}

/// Run the benchmarks (every stage, or `only` one) and write the reports;
/// with `baseline`, the throughput stage also runs tcptrace built from that
/// git revision.
pub fn run(rounds: u32, seconds: f64, only: Option<Stage>, baseline: Option<&str>) -> Result<()> {
    if !is_root() {
        bail!("the benchmarks load BPF programs and make a network namespace: run as root");
    }
    let stage = |s: Stage| only.is_none_or(|o| o == s);
    if baseline.is_some() && !stage(Stage::Throughput) {
        bail!("--baseline adds rows to the throughput stage, which --only leaves out");
    }
    if stage(Stage::Throughput) {
        ensure_bpftrace()?;
    }
    crate::setup::ensure()?;
    status(cargo().args([
        "build",
        "--release",
        "-p",
        "tcptrace",
        "-p",
        "xtask",
        "--bin",
        "tcptrace",
        "--bin",
        "tcptrace-load",
    ]))?;
    let target = crate::target_dir().join("release");
    let (tcptrace, loadgen) = (target.join("tcptrace"), target.join("tcptrace-load"));
    // What was built, read now: the tree may move while the stages run.
    let built = measured_build(rounds);
    let baseline = baseline.map(baseline::build).transpose()?;
    let docs = workspace_root().join("docs");
    fs::create_dir_all(&docs)?;
    let mut comparison = None;
    if stage(Stage::Throughput) {
        comparison = throughput(&tcptrace, baseline.as_ref(), &loadgen, rounds, seconds)?;
    }
    if stage(Stage::Scale) {
        let (md, json) = crate::scale::run(&tcptrace, &loadgen)?;
        update_json(&docs.join("benchmarks.json"), |doc| {
            doc.insert("scale".to_owned(), json);
        })?;
        splice(&docs.join("benchmarks.md"), SCALE_MARKERS, &md)?;
        eprintln!("xtask: wrote the scale table to docs/benchmarks.md and .json\n{md}");
    }
    if stage(Stage::Netns) {
        let (md, json) = namespaces::run(&tcptrace, &loadgen, rounds)?;
        let md = format!("{built}\n\n{md}");
        update_json(&docs.join("benchmarks.json"), |doc| {
            doc.insert("netns".to_owned(), json);
        })?;
        splice(&docs.join("benchmarks.md"), NETNS_MARKERS, &md)?;
        eprintln!("xtask: wrote the netns table to docs/benchmarks.md and .json\n{md}");
    }
    if let Some(md) = comparison {
        eprintln!("xtask: against the baseline (also in docs/benchmarks.md and .json):\n{md}");
    }
    Ok(())
}

/// The command and the tree a table was measured with: the bench builds
/// tcptrace from the working tree, which may differ from its commit.
fn measured_build(rounds: u32) -> String {
    let git = |args: &[&str]| baseline::git_output(&workspace_root(), args).unwrap_or_default();
    let rev = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&[
        "status",
        "--porcelain",
        "--",
        "tcptrace",
        "tcptrace-common",
        "tcptrace-ebpf",
    ])
    .is_empty();
    let rev = if rev.is_empty() {
        "an unknown commit".to_owned()
    } else {
        rev
    };
    format!(
        "Measured by `sudo cargo xtask bench --only netns --rounds {rounds}` with tcptrace \
         built from {rev}{}.",
        if dirty {
            " plus uncommitted changes"
        } else {
            ""
        }
    )
}

/// The throughput stage; with a baseline, returns the comparison table.
fn throughput(
    tcptrace: &Path,
    baseline: Option<&baseline::Baseline>,
    loadgen: &Path,
    rounds: u32,
    seconds: f64,
) -> Result<Option<String>> {
    let _ns = Netns::create(NETNS)?;
    // The churn load at the machine's rate: every ephemeral port, and
    // TIME_WAIT 4-tuples reusable (the server closes first, so they are
    // the server's; the client's ports are free once it closed).
    status(netns::exec(NETNS, "sysctl").args([
        "-qw",
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_tw_reuse=1",
    ]))?;
    let lineup = configs::lineup(
        tcptrace,
        baseline.map(|b| (b.rev.as_str(), b.binary.as_path())),
    );
    #[expect(clippy::cast_precision_loss, reason = "a handful of configs")]
    let total = f64::from(rounds) * lineup.len() as f64 * (2.0 * seconds + 6.0) + 60.0;
    let mut server = netns::exec(NETNS, loadgen)
        .args([
            "serve",
            "--addr",
            ADDR,
            "--threads",
            "16",
            "--seconds",
            &total.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the load server")?;
    thread::sleep(Duration::from_millis(500));
    status(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;

    // Runs per configuration, in table order.
    let mut runs: Vec<(Config, Vec<Run>)> = lineup.into_iter().map(|c| (c, Vec::new())).collect();
    let result = (|| -> Result<()> {
        for round in 0..rounds {
            for (cfg, cfg_runs) in &mut runs {
                eprintln!("xtask: round {}/{rounds}: {}", round + 1, cfg.name());
                let tracer = spawn_tracer(cfg)?;
                let mut run = Run::default();
                let pid = tracer.as_ref().map(|t| t.child.id());
                let stats = || pid.map(program_stats).unwrap_or_default();
                let start = stats();
                let (conns_per_s, _, conns) = load(loadgen, "churn", 2, seconds)?;
                run.conns_per_s = conns_per_s;
                let mid = stats();
                run.kernel_ns_per_conn = ns_per_conn(&start, &mid, conns);
                (_, run.reqs_per_s, _) = load(loadgen, "keepalive", 2, seconds)?;
                let end = stats();
                run.ns_churn = phase_costs(&start, &mid);
                run.ns_keepalive = phase_costs(&mid, &end);
                run.ns_load = phase_costs(&start, &end);
                if let Some(t) = tracer {
                    stop_tracer(cfg, t, &mut run)?;
                }
                cfg_runs.push(run);
            }
        }
        Ok(())
    })();
    let _ = Command::new("sysctl")
        .args(["-qw", "kernel.bpf_stats_enabled=0"])
        .status();
    let _ = server.kill();
    let _ = server.wait();
    result?;

    let micro = microbench()?;
    write_reports(&runs, rounds, seconds, &micro)?;
    baseline
        .map(|b| write_comparison(&runs, b, rounds))
        .transpose()
}

fn microbench() -> Result<String> {
    let out = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "tcptrace",
            "--example",
            "decode_bench",
        ])
        .output()
        .context("running the decode micro-benchmark")?;
    if !out.status.success() {
        bail!(
            "decode_bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ns_per_connection_sums_every_program() {
        let at = |v: &[(&str, f64, f64)]| -> BTreeMap<String, (f64, f64)> {
            v.iter().map(|&(k, t, n)| (k.to_owned(), (t, n))).collect()
        };
        let before = at(&[("a", 1000.0, 10.0), ("b", 0.0, 0.0)]);
        let after = at(&[("a", 3000.0, 30.0), ("b", 4000.0, 7.0), ("c", 1000.0, 1.0)]);
        assert_eq!(ns_per_conn(&before, &after, 100.0), Some(70.0));
        assert_eq!(ns_per_conn(&before, &after, 0.0), None);
        assert_eq!(ns_per_conn(&before, &BTreeMap::new(), 100.0), None);
    }

    #[test]
    fn reads_the_kernel_costs_of_the_exit_summary() {
        let got = parse_costs(
            "tcptrace: kernel cost per call: inet_sock_set_state 123 ns x 300123, \
             sock_recv_length 519 ns x 4000, tcp_destroy_sock 38 ns x 60000",
        );
        let want: BTreeMap<String, f64> = [
            ("inet_sock_set_state", 123.0),
            ("sock_recv_length", 519.0),
            ("tcp_destroy_sock", 38.0),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        assert_eq!(got, want);
        assert!(
            parse_costs(
                "tcptrace: kernel cost per call: not measured \
                 (sysctl kernel.bpf_stats_enabled=1 to see it)"
            )
            .is_empty()
        );
        assert!(parse_costs("tcptrace: tracing").is_empty());
    }
}
