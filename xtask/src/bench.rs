//! `cargo xtask bench`: tcptrace's cost against no tracer and against
//! bpftrace, side by side in one run, configurations interleaved (A B A B ...)
//! so that machine drift cancels out. Writes docs/benchmarks.md and
//! docs/benchmarks.json.
//!
//! Load: the project's own generator (`tcptrace-load`), server inside a
//! network namespace made here, clients in the same namespace, loopback only.
//!
//! Two stages, each with its own table between markers in
//! docs/benchmarks.md and its own keys in docs/benchmarks.json:
//! `throughput` (here) and `scale` (100k held connections, scale.rs);
//! `--only STAGE` runs one.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
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
    procstat::{cpu_seconds, peak_rss_kib, program_stats},
    status, workspace_root,
};

const NETNS: &str = "tcptrace-bench";
const ADDR: &str = "127.0.0.1:18950";

/// bpftrace's tcpstates-like per-transition printf.
const BPFTRACE_STATES: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  printf("%d %s %d %d %d -> %d\n", pid, comm, args->sport, args->dport, args->oldstate, args->newstate);
}"#;

/// bpftrace's per-state dwell histogram, the equivalent of `tcptrace --hist`.
const BPFTRACE_HIST: &str = r"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  $sk = (uint64)args->skaddr;
  $t = @start[$sk];
  if ($t != 0) { @dwell[args->oldstate] = hist(nsecs - $t); }
  if (args->newstate == 7) { delete(@start[$sk]); } else { @start[$sk] = nsecs; }
}";

/// Calibration: what a program that does nothing costs on this machine in
/// the kernel's own accounting (`bpf_stats_enabled` times every run with
/// two clock reads), on both hot tracepoints: the floor under every figure.
const BPFTRACE_EMPTY: &str =
    "tracepoint:sock:inet_sock_set_state { } tracepoint:sock:sock_recv_length { }";

/// Calibration: the floor plus one `bpf_ktime_get_ns()`, which every
/// dwell measurement needs once per transition.
const BPFTRACE_CLOCK: &str = "tracepoint:sock:inet_sock_set_state { $t = nsecs; }";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    None,
    Stream,
    Hist,
    Leaks,
    Timewait,
    BpftraceStates,
    BpftraceHist,
    BpftraceEmpty,
    BpftraceClock,
}

impl Config {
    const ALL: [Config; 9] = [
        Config::None,
        Config::Stream,
        Config::Hist,
        Config::Leaks,
        Config::Timewait,
        Config::BpftraceStates,
        Config::BpftraceHist,
        Config::BpftraceEmpty,
        Config::BpftraceClock,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::None => "no tracer",
            Config::Stream => "tcptrace --json > /dev/null",
            Config::Hist => "tcptrace --hist",
            Config::Leaks => "tcptrace --closewait-leaks",
            Config::Timewait => "tcptrace --timewait",
            Config::BpftraceStates => "bpftrace tcpstates-like printf",
            Config::BpftraceHist => "bpftrace dwell hist",
            Config::BpftraceEmpty => "calibration: bpftrace, empty programs",
            Config::BpftraceClock => "calibration: bpftrace, one timestamp",
        }
    }
}

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
    /// The same during the churn load only, and the keep-alive load only.
    ns_churn: BTreeMap<String, f64>,
    ns_keepalive: BTreeMap<String, f64>,
    events_per_s: f64,
    losses: u64,
}

struct Tracer {
    child: Child,
    started: Instant,
    stderr_lines: std::sync::mpsc::Receiver<String>,
}

fn spawn_tracer(cfg: Config, tcptrace: &Path) -> Result<Option<Tracer>> {
    let mut cmd = match cfg {
        Config::None => return Ok(None),
        Config::Stream => {
            let mut c = Command::new(tcptrace);
            c.arg("--json");
            c
        }
        Config::Leaks => {
            let mut c = Command::new(tcptrace);
            c.args(["--closewait-leaks", "-i", "1h"]);
            c
        }
        Config::Hist => {
            let mut c = Command::new(tcptrace);
            c.args(["--hist", "-i", "1h"]);
            c
        }
        Config::Timewait => {
            let mut c = Command::new(tcptrace);
            c.args(["--timewait", "-i", "1h"]);
            c
        }
        Config::BpftraceStates
        | Config::BpftraceHist
        | Config::BpftraceEmpty
        | Config::BpftraceClock => {
            let mut c = Command::new("bpftrace");
            c.arg("-e").arg(match cfg {
                Config::BpftraceStates => BPFTRACE_STATES,
                Config::BpftraceHist => BPFTRACE_HIST,
                Config::BpftraceEmpty => BPFTRACE_EMPTY,
                _ => BPFTRACE_CLOCK,
            });
            c
        }
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
    if matches!(
        cfg,
        Config::Stream | Config::Hist | Config::Leaks | Config::Timewait
    ) {
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

fn stop_tracer(cfg: Config, t: Tracer, run: &mut Run) -> Result<()> {
    let pid = t.child.id();
    let wall = t.started.elapsed().as_secs_f64();
    run.cpu_per_s = cpu_seconds(pid).unwrap_or(0.0) / wall;
    run.rss_kib = peak_rss_kib(pid);
    let totals = program_stats(pid);
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

fn load(loadgen: &Path, mode: &str, threads: u32, seconds: f64) -> Result<(f64, f64)> {
    let out = Command::new("ip")
        .args(["netns", "exec", NETNS])
        .arg(loadgen)
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
    Ok((num("connections") / secs, num("requests") / secs))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct NetnsGuard;

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
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
}

/// Run the benchmarks (every stage, or `only` one) and write the reports.
pub fn run(rounds: u32, seconds: f64, only: Option<Stage>) -> Result<()> {
    if !is_root() {
        bail!("the benchmarks load BPF programs and make a network namespace: run as root");
    }
    let stage = |s: Stage| only.is_none_or(|o| o == s);
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
    let docs = workspace_root().join("docs");
    fs::create_dir_all(&docs)?;
    if stage(Stage::Throughput) {
        throughput(&tcptrace, &loadgen, rounds, seconds)?;
    }
    if stage(Stage::Scale) {
        let (md, json) = crate::scale::run(&tcptrace, &loadgen)?;
        update_json(&docs.join("benchmarks.json"), |doc| {
            doc.insert("scale".to_owned(), json);
        })?;
        splice(&docs.join("benchmarks.md"), SCALE_MARKERS, &md)?;
        eprintln!("xtask: wrote the scale table to docs/benchmarks.md and .json\n{md}");
    }
    Ok(())
}

/// The throughput stage.
fn throughput(tcptrace: &Path, loadgen: &Path, rounds: u32, seconds: f64) -> Result<()> {
    let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    status(Command::new("ip").args(["netns", "add", NETNS]))?;
    let _guard = NetnsGuard;
    status(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
    #[expect(clippy::cast_precision_loss, reason = "a handful of configs")]
    let total = f64::from(rounds) * Config::ALL.len() as f64 * (2.0 * seconds + 6.0) + 60.0;
    let mut server = Command::new("ip")
        .args(["netns", "exec", NETNS])
        .arg(loadgen)
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

    let mut runs: BTreeMap<Config, Vec<Run>> = BTreeMap::new();
    let result = (|| -> Result<()> {
        for round in 0..rounds {
            for cfg in Config::ALL {
                eprintln!("xtask: round {}/{rounds}: {}", round + 1, cfg.name());
                let tracer = spawn_tracer(cfg, tcptrace)?;
                let mut run = Run::default();
                let pid = tracer.as_ref().map(|t| t.child.id());
                let stats = || pid.map(program_stats).unwrap_or_default();
                let start = stats();
                (run.conns_per_s, _) = load(loadgen, "churn", 2, seconds)?;
                let mid = stats();
                (_, run.reqs_per_s) = load(loadgen, "keepalive", 2, seconds)?;
                let end = stats();
                run.ns_churn = phase_costs(&start, &mid);
                run.ns_keepalive = phase_costs(&mid, &end);
                if let Some(t) = tracer {
                    stop_tracer(cfg, t, &mut run)?;
                }
                runs.entry(cfg).or_default().push(run);
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
    write_reports(&runs, rounds, seconds, &micro)
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

/// Median ns/call per program over rounds, for one load phase.
fn phase_medians(rs: &[Run], f: fn(&Run) -> &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in rs {
        for (k, v) in f(run) {
            by.entry(k.clone()).or_default().push(*v);
        }
    }
    by.into_iter().map(|(k, v)| (k, median(v))).collect()
}

/// `a 12, b 30` for the table, `-` when empty.
fn cost_cell(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"a":12.0,"b":30.0` for the JSON.
fn json_costs(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("\"{k}\":{v:.1}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn write_reports(
    runs: &BTreeMap<Config, Vec<Run>>,
    rounds: u32,
    seconds: f64,
    micro: &str,
) -> Result<()> {
    let base = runs.get(&Config::None).map(|r| {
        (
            median(r.iter().map(|x| x.conns_per_s).collect()),
            median(r.iter().map(|x| x.reqs_per_s).collect()),
        )
    });
    let (base_c, base_r) = base.unwrap_or((1.0, 1.0));
    let mut md = String::new();
    let mut json = String::from("{\"configs\":[");
    let _ = writeln!(
        md,
        "| configuration | conn/s | vs none | req/s | vs none | tracer CPU (cores) | CPU per 100k events/s | peak RSS | events/s | ring-buffer losses | kernel ns/call, churn | kernel ns/call, keep-alive |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for (i, (cfg, rs)) in runs.iter().enumerate() {
        let m = |f: fn(&Run) -> f64| median(rs.iter().map(f).collect());
        let (c, r) = (m(|x| x.conns_per_s), m(|x| x.reqs_per_s));
        let mut per_prog: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for run in rs {
            for (k, v) in &run.ns_per_call {
                per_prog.entry(k.clone()).or_default().push(*v);
            }
        }
        let churn_ns = phase_medians(rs, |r| &r.ns_churn);
        let keepalive_ns = phase_medians(rs, |r| &r.ns_keepalive);
        let (churn, keepalive) = (cost_cell(&churn_ns), cost_cell(&keepalive_ns));
        let events = m(|x| x.events_per_s);
        // Tracer CPU scaled to 100k events/s (the streaming target); only
        // where the tracer handles events.
        let per_100k = if events >= 1000.0 {
            format!("{:.1}%", 100.0 * m(|x| x.cpu_per_s) * 100_000.0 / events)
        } else {
            "-".to_owned()
        };
        let losses: u64 = rs.iter().map(|x| x.losses).sum();
        let rss = rs.iter().map(|x| x.rss_kib).max().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {c:.0} | {:.1}% | {r:.0} | {:.1}% | {:.3} | {per_100k} | {} | {events:.0} | {losses} | {churn} | {keepalive} |",
            cfg.name(),
            100.0 * c / base_c,
            100.0 * r / base_r,
            m(|x| x.cpu_per_s),
            if rss == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1} MiB",
                    f64::from(u32::try_from(rss).unwrap_or(u32::MAX)) / 1024.0
                )
            },
        );
        let _ = write!(
            json,
            "{}{{\"config\":\"{}\",\"conns_per_s\":[{}],\"reqs_per_s\":[{}],\"cpu_per_s\":[{}],\"peak_rss_kib\":{rss},\"losses\":{losses},\"ns_per_call\":{{{}}},\"ns_per_call_churn\":{{{}}},\"ns_per_call_keepalive\":{{{}}}}}",
            if i == 0 { "" } else { "," },
            cfg.name(),
            rs.iter()
                .map(|x| format!("{:.1}", x.conns_per_s))
                .collect::<Vec<_>>()
                .join(","),
            rs.iter()
                .map(|x| format!("{:.1}", x.reqs_per_s))
                .collect::<Vec<_>>()
                .join(","),
            rs.iter()
                .map(|x| format!("{:.4}", x.cpu_per_s))
                .collect::<Vec<_>>()
                .join(","),
            per_prog
                .iter()
                .map(|(k, v)| format!("\"{k}\":{:.1}", median(v.clone())))
                .collect::<Vec<_>>()
                .join(","),
            json_costs(&churn_ns),
            json_costs(&keepalive_ns),
        );
    }
    let _ = write!(
        json,
        "],\"rounds\":{rounds},\"seconds\":{seconds},\"decode_bench\":{micro}}}"
    );
    let docs = workspace_root().join("docs");
    let fresh: serde_json::Value =
        serde_json::from_str(&json).context("the throughput JSON is malformed")?;
    update_json(&docs.join("benchmarks.json"), |doc| {
        if let serde_json::Value::Object(fresh) = fresh {
            doc.extend(fresh);
        }
    })?;
    let table = format!("{md}\nUserspace decode + filter + format, one core: `{micro}`\n");
    splice(&docs.join("benchmarks.md"), THROUGHPUT_MARKERS, &table)?;
    eprintln!("xtask: wrote docs/benchmarks.md and docs/benchmarks.json\n{md}\n{micro}");
    Ok(())
}

/// A generated table's begin and end markers in docs/benchmarks.md.
type Markers = (&'static str, &'static str);
const THROUGHPUT_MARKERS: Markers = ("<!-- bench:begin -->", "<!-- bench:end -->");
const SCALE_MARKERS: Markers = ("<!-- scale:begin -->", "<!-- scale:end -->");

/// Rewrite docs/benchmarks.json with `edit` applied to its top-level object,
/// keeping what other stages wrote.
fn update_json(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<()> {
    let mut doc = fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| match v {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    edit(&mut doc);
    fs::write(path, serde_json::to_string(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Replace one generated table in docs/benchmarks.md (between its markers),
/// keeping the prose around it.
fn splice(path: &Path, markers: Markers, body: &str) -> Result<()> {
    let doc = fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    fs::write(path, spliced(&doc, markers, body))
        .with_context(|| format!("writing {}", path.display()))
}

/// `doc` with the text between `markers` replaced by `body`; the markers and
/// `body` are appended when `doc` lacks them.
fn spliced(doc: &str, (begin, end): Markers, body: &str) -> String {
    let body = format!("{begin}\n{}\n{end}", body.trim_end());
    match doc
        .split_once(begin)
        .and_then(|(head, rest)| Some((head, rest.split_once(end)?.1)))
    {
        Some((head, tail)) => format!("{head}{body}{tail}"),
        None => format!("{}\n\n{body}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_between_markers_and_keeps_the_prose() {
        let doc = "# B\n\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nafter\n\
                   <!-- scale:begin -->\nold scale\n<!-- scale:end -->\nend\n";
        let out = spliced(doc, SCALE_MARKERS, "| new |\n");
        assert_eq!(
            out,
            "# B\n\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nafter\n\
             <!-- scale:begin -->\n| new |\n<!-- scale:end -->\nend\n"
        );
        let out = spliced(&out, THROUGHPUT_MARKERS, "t");
        assert!(
            out.contains("<!-- bench:begin -->\nt\n<!-- bench:end -->\nafter"),
            "{out}"
        );
        assert!(out.contains("| new |"), "{out}");
    }

    #[test]
    fn appends_missing_markers() {
        let out = spliced("# B\n\ntext\n", SCALE_MARKERS, "x");
        assert_eq!(
            out,
            "# B\n\ntext\n\n<!-- scale:begin -->\nx\n<!-- scale:end -->\n"
        );
    }
}
