//! The scale stage of `cargo xtask bench` (`--only scale`): tcptrace with
//! 100k held connections, i.e. a CLOSE_WAIT leak at scale. 100k server
//! sockets in CLOSE_WAIT and 100k client sockets in FIN_WAIT2, all in a
//! network namespace made here; tcptrace runs inside it (so sock_diag and the
//! `/proc` owner scan see the sockets, as a user watching a container would
//! run it) with a socket map big enough for all 200k.
//!
//! Per mode: start tcptrace, open and hold the connections, count them with
//! `ss`, let tcptrace make at least one report over them, then read its peak
//! RSS, CPU time and the socket map's kernel memory, stop it and read what it
//! says it tracked. Everything is torn down between modes (the holders are
//! killed, the namespace deleted).

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{
    netns::{self, Netns},
    procstat::{cpu_seconds, peak_rss_kib, socket_map_memory},
    status,
};

const NETNS: &str = "tcptrace-scale";
/// The first of the listening ports; the server listens on `PORTS` of them.
const ADDR: &str = "127.0.0.1:19100";
/// Listening ports: ephemeral ports are shared between destinations, so each
/// port adds a full `ip_local_port_range` of room.
const PORTS: u16 = 8;
/// Connections held: one CLOSE_WAIT and one FIN_WAIT2 socket each.
pub const HELD: u64 = 100_000;
/// `--max-sockets` for the tracer: room for both ends of every connection.
const MAX_SOCKETS: u32 = 262_144;
/// Connections opened per second: fast enough to hold 100k within seconds,
/// slow enough that the streaming mode's default ring buffer keeps up
/// (about 7 records per connection) on a shared 2-core machine.
const RATE: u32 = 20_000;
/// Report interval of the reporting modes.
const INTERVAL: Duration = Duration::from_secs(3);
/// How long the holders keep the sockets at most (they are killed sooner).
const HOLD_LIMIT_S: u32 = 600;

/// The tcptrace modes measured at scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Leaks,
    Stream,
    Hist,
    Timewait,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Leaks, Mode::Stream, Mode::Hist, Mode::Timewait];

    fn name(self) -> &'static str {
        match self {
            Mode::Leaks => "tcptrace --closewait-leaks",
            Mode::Stream => "tcptrace --json > /dev/null",
            Mode::Hist => "tcptrace --hist",
            Mode::Timewait => "tcptrace --timewait",
        }
    }

    fn args(self) -> Vec<String> {
        let i = format!("{}s", INTERVAL.as_secs());
        let v: Vec<&str> = match self {
            Mode::Leaks => vec!["--closewait-leaks", "--json", "--min-age", "1s", "-i", &i],
            Mode::Stream => vec!["--json"],
            Mode::Hist => vec!["--hist", "-i", &i],
            Mode::Timewait => vec!["--timewait", "-i", &i],
        };
        v.into_iter().map(str::to_owned).collect()
    }
}

/// What one mode's run measured.
#[derive(Clone, Debug, Default)]
struct ScaleRun {
    mode: &'static str,
    /// Connections the client and the server said they hold.
    client_held: u64,
    server_held: u64,
    /// Seconds the client took to open and half-close them all.
    open_seconds: f64,
    /// Sockets `ss` counted in the namespace.
    ss_close_wait: u64,
    ss_fin_wait2: u64,
    peak_rss_kib: u64,
    /// Tracer CPU (user + sys) seconds from its start until every
    /// connection was held: attaching, then the events of 200k sockets born.
    cpu_open_s: f64,
    /// Tracer CPU seconds and wall seconds while the connections sat held:
    /// the steady cost of tracking them (reports, polls).
    cpu_hold_s: f64,
    hold_s: f64,
    /// The socket map as the kernel shows it in the tracer's fdinfo.
    map_max_entries: u32,
    map_memlock: u64,
    /// tcptrace's own exit line about the socket map.
    map: Option<MapLine>,
    /// Leak mode: sockets in the final report's groups.
    leak_reported: Option<u64>,
    /// Streaming mode: records tcptrace read.
    events: Option<u64>,
    ringbuf_losses: u64,
}

/// `tcptrace: socket map: L of C entries in use (W in CLOSE_WAIT), E evicted, ...`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MapLine {
    live: u64,
    capacity: u64,
    close_wait: u64,
    evicted: u64,
}

fn parse_map_line(text: &str) -> Option<MapLine> {
    let rest = text.strip_prefix("tcptrace: socket map: ")?;
    let nums: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match nums[..] {
        [live, capacity, close_wait, evicted] => Some(MapLine {
            live,
            capacity,
            close_wait,
            evicted,
        }),
        _ => None,
    }
}

/// Sockets in the final leak report: the sum of its groups' counts.
fn final_leak_count(stdout: &[String]) -> Option<u64> {
    let mut total = None;
    for l in stdout {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if v["type"] == "closewait_leak" && v["report"] == "final" {
            *total.get_or_insert(0) += v["count"].as_u64().unwrap_or(0);
        }
    }
    total
}

/// Lines of a child's pipe, each with its arrival time, from a thread.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Wait for a line matching `want`, keeping every line read in `seen`.
fn wait_line(
    rx: &Receiver<(Instant, String)>,
    seen: &mut Vec<String>,
    timeout: Duration,
    what: &str,
    want: impl Fn(Instant, &str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let (at, line) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| anyhow!("timed out after {timeout:?} waiting for {what}"))?;
        seen.push(line.clone());
        if want(at, &line) {
            return Ok(line);
        }
    }
}

/// A child in the namespace, killed when dropped.
struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    /// Start `program args` in the namespace, its stdout piped and its
    /// stderr piped (`capture_stderr`) or shown.
    fn spawn(
        what: &'static str,
        program: &Path,
        args: &[String],
        stdout: Stdio,
        capture_stderr: bool,
    ) -> Result<Self> {
        let child = netns::exec(NETNS, program)
            .args(args)
            .stdout(stdout)
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { child, what })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then wait for the exit (SIGKILL after `timeout`).
    fn interrupt(&mut self, timeout: Duration) -> Result<()> {
        // SAFETY: kill(2) on our own child, still unreaped.
        unsafe {
            libc::kill(libc::pid_t::try_from(self.pid()).unwrap_or(0), libc::SIGINT);
        }
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not stop within {timeout:?} of SIGINT", self.what);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The namespace, with the sysctls a 100k-connection run needs.
fn create_netns() -> Result<Netns> {
    let ns = Netns::create(NETNS)?;
    // 64k ephemeral ports per destination instead of 28k, and accept
    // queues deep enough for the connect rate.
    for kv in [
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.core.somaxconn=4096",
    ] {
        status(netns::exec(NETNS, "sysctl").arg("-qw").arg(kv))?;
    }
    Ok(ns)
}

/// Wait until no process is left in the namespace (the holders' workers exit
/// when their parent is killed; closing 100k sockets takes a moment).
fn wait_netns_empty(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let pids = Command::new("ip").args(["netns", "pids", NETNS]).output();
        if pids.is_ok_and(|o| o.stdout.iter().all(u8::is_ascii_whitespace)) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("xtask: scale: processes still in {NETNS} after {timeout:?}");
}

/// Sockets in `state` (an `ss` state name) in the namespace.
fn ss_count(state: &str) -> Result<u64> {
    let out = netns::exec(NETNS, "ss")
        .args(["-Htn", "state", state])
        .output()
        .context("running ss")?;
    if !out.status.success() {
        bail!("ss failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64)
}

/// `{"held":N,...}` from a holder.
fn held_of(line: &str) -> Result<(u64, f64)> {
    let v: Value = serde_json::from_str(line).with_context(|| format!("holder said {line:?}"))?;
    Ok((
        v["held"]
            .as_u64()
            .ok_or_else(|| anyhow!("no held in {line}"))?,
        v["seconds"].as_f64().unwrap_or(0.0),
    ))
}

/// tcptrace running in the namespace, its output read by threads.
struct Tracer {
    proc: Proc,
    err_rx: Receiver<(Instant, String)>,
    out_rx: Option<Receiver<(Instant, String)>>,
    err_lines: Vec<String>,
    out_lines: Vec<String>,
}

impl Tracer {
    /// Start tcptrace in `mode` and wait until it is attached.
    fn start(mode: Mode, tcptrace: &Path) -> Result<Self> {
        let mut args = mode.args();
        args.extend(["--max-sockets".to_owned(), MAX_SOCKETS.to_string()]);
        // The streaming mode's output goes nowhere, as in the throughput
        // stage; the reporting modes' is read, to see their reports.
        let out = if mode == Mode::Stream {
            Stdio::null()
        } else {
            Stdio::piped()
        };
        let mut proc = Proc::spawn("tcptrace", tcptrace, &args, out, true)?;
        let err_rx = lines_of(proc.child.stderr.take().context("tracer stderr")?);
        let out_rx = proc.child.stdout.take().map(lines_of);
        let mut t = Tracer {
            proc,
            err_rx,
            out_rx,
            err_lines: Vec::new(),
            out_lines: Vec::new(),
        };
        wait_line(
            &t.err_rx,
            &mut t.err_lines,
            Duration::from_mins(1),
            "tcptrace to attach",
            |_, l| l.starts_with("tcptrace: tracing"),
        )
        .with_context(|| format!("{}: {}", mode.name(), t.err_lines.join("\n")))?;
        Ok(t)
    }

    /// Wait until tcptrace has made a report over every socket held since
    /// `held_at`: a report line that arrives once they are all older than
    /// leak mode's `--min-age` (1 s); then one more interval, so that the
    /// holding window has a full report cycle. The streaming mode has no
    /// report; its ring is drained every 100 ms.
    fn wait_report(&mut self, held_at: Instant) -> Result<()> {
        if let Some(rx) = &self.out_rx {
            wait_line(
                rx,
                &mut self.out_lines,
                INTERVAL * 3 + Duration::from_secs(30),
                "a report over the held sockets",
                |at, _| at > held_at + Duration::from_millis(1500),
            )?;
        } else {
            thread::sleep(Duration::from_secs(2));
        }
        thread::sleep(INTERVAL);
        Ok(())
    }

    /// Peak RSS, CPU since `held_at` and the socket map's memory now; then stop tcptrace
    /// (its final report scans the map again) and read its exit lines.
    fn measure_and_stop(mut self, mode: Mode, run: &mut ScaleRun, held_at: Instant) -> Result<()> {
        let pid = self.proc.pid();
        run.hold_s = held_at.elapsed().as_secs_f64();
        run.cpu_hold_s = cpu_seconds(pid).unwrap_or(0.0) - run.cpu_open_s;
        run.peak_rss_kib = peak_rss_kib(pid);
        (run.map_max_entries, run.map_memlock) = socket_map_memory(pid).unwrap_or_default();
        self.proc.interrupt(Duration::from_secs(90))?;
        self.err_lines
            .extend(self.err_rx.try_iter().map(|(_, l)| l));
        if let Some(rx) = &self.out_rx {
            // The reader thread ends at EOF, after the last line.
            while let Ok((_, l)) = rx.recv_timeout(Duration::from_secs(10)) {
                self.out_lines.push(l);
            }
        }
        run.map = self.err_lines.iter().find_map(|l| parse_map_line(l));
        if run.map.is_none() {
            bail!(
                "{} printed no socket-map line at exit:\n{}",
                mode.name(),
                self.err_lines.join("\n")
            );
        }
        if mode == Mode::Leaks {
            run.leak_reported = final_leak_count(&self.out_lines);
        }
        for l in &self.err_lines {
            if let Some(n) = l
                .strip_prefix("tcptrace: ")
                .and_then(|r| r.split_once(" events ("))
                .and_then(|(n, _)| n.parse().ok())
            {
                run.events = Some(n);
            }
            if let Some(n) = l
                .strip_prefix("tcptrace: losses: ")
                .and_then(|r| r.split_once(" ring-buffer full"))
                .and_then(|(n, _)| n.parse::<u64>().ok())
            {
                run.ringbuf_losses += n;
            }
        }
        Ok(())
    }
}

/// The holders' arguments: `mode` over `PORTS` ports, `HELD` connections.
fn hold_args(mode: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [mode, "--addr", ADDR].map(str::to_owned).to_vec();
    v.extend(["--ports".to_owned(), PORTS.to_string()]);
    v.extend(["--count".to_owned(), HELD.to_string()]);
    v.extend(["--seconds".to_owned(), HOLD_LIMIT_S.to_string()]);
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

/// Start the hold server and client and wait until both hold every
/// connection; fills in what they and `ss` say.
fn hold(loadgen: &Path, run: &mut ScaleRun) -> Result<(Proc, Proc)> {
    let mut server = Proc::spawn(
        "the hold server",
        loadgen,
        &hold_args("hold-serve", &[]),
        Stdio::piped(),
        false,
    )?;
    let server_rx = lines_of(server.child.stdout.take().context("server stdout")?);
    let mut seen = Vec::new();
    wait_line(
        &server_rx,
        &mut seen,
        Duration::from_secs(10),
        "the hold server",
        |_, l| l == "ready",
    )?;
    let mut client = Proc::spawn(
        "the hold client",
        loadgen,
        &hold_args("hold", &["--threads", "4", "--rate", &RATE.to_string()]),
        Stdio::piped(),
        false,
    )?;
    let client_rx = lines_of(client.child.stdout.take().context("client stdout")?);
    let done = wait_line(
        &client_rx,
        &mut seen,
        Duration::from_mins(3),
        "the hold client",
        |_, l| l.starts_with('{'),
    )?;
    (run.client_held, run.open_seconds) = held_of(&done)?;
    let done = wait_line(
        &server_rx,
        &mut seen,
        Duration::from_secs(30),
        "the hold server to accept every connection",
        |_, l| l.starts_with('{'),
    )?;
    (run.server_held, _) = held_of(&done)?;
    run.ss_close_wait = ss_count("close-wait")?;
    run.ss_fin_wait2 = ss_count("fin-wait-2")?;
    Ok((server, client))
}

fn run_mode(mode: Mode, tcptrace: &Path, loadgen: &Path) -> Result<ScaleRun> {
    let _ns = create_netns()?;
    let mut run = ScaleRun {
        mode: mode.name(),
        ..ScaleRun::default()
    };
    // The tracer first, so that it sees every socket born.
    let mut tracer = Tracer::start(mode, tcptrace)?;
    let holders = hold(loadgen, &mut run)?;
    let held_at = Instant::now();
    run.cpu_open_s = cpu_seconds(tracer.proc.pid()).unwrap_or(0.0);
    eprintln!(
        "xtask: scale: {}: {} connections held in {:.1} s; ss: {} CLOSE_WAIT, {} FIN_WAIT2",
        mode.name(),
        run.client_held,
        run.open_seconds,
        run.ss_close_wait,
        run.ss_fin_wait2
    );
    tracer.wait_report(held_at)?;
    tracer.measure_and_stop(mode, &mut run, held_at)?;
    // Tear down: the holders' exit (their workers die with them) closes
    // their sockets, the namespace's deletion frees what is left (TIME_WAIT).
    drop(holders);
    wait_netns_empty(Duration::from_mins(1));
    Ok(run)
}

/// Run the scale stage; returns the markdown table and the JSON value.
pub fn run(tcptrace: &Path, loadgen: &Path) -> Result<(String, Value)> {
    let mut runs = Vec::new();
    for mode in Mode::ALL {
        eprintln!("xtask: scale: {} with {HELD} held connections", mode.name());
        runs.push(run_mode(mode, tcptrace, loadgen)?);
        // Let the deleted namespace's sockets go before the next mode.
        thread::sleep(Duration::from_secs(2));
    }
    Ok((table(&runs), to_json(&runs)))
}

#[expect(clippy::cast_precision_loss, reason = "sizes for people")]
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn table(runs: &[ScaleRun]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| configuration | held (ss) | tcptrace saw (its exit summary) | evicted | peak RSS | tracer CPU opening | tracer CPU holding | socket map (kernel, fdinfo) |"
    );
    let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---|");
    for r in runs {
        let m = r.map.unwrap_or_default();
        let mut saw = format!("{} map entries, {} in CLOSE_WAIT", m.live, m.close_wait);
        if let Some(n) = r.leak_reported {
            let _ = write!(saw, "; final report: {n} leaked");
        }
        if let Some(n) = r.events {
            let _ = write!(saw, "; {n} events, {} lost", r.ringbuf_losses);
        }
        let per_entry = r
            .map_memlock
            .checked_div(u64::from(r.map_max_entries))
            .unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {} CLOSE_WAIT + {} FIN_WAIT2 (opened in {:.1} s) | {saw} | {} | {} | {:.2} s | {:.3} cores ({:.2} s in {:.1} s) | {} entries, {} ({per_entry} B/entry) |",
            r.mode,
            r.ss_close_wait,
            r.ss_fin_wait2,
            r.open_seconds,
            m.evicted,
            mib(r.peak_rss_kib * 1024),
            r.cpu_open_s,
            r.cpu_hold_s / r.hold_s.max(1e-9),
            r.cpu_hold_s,
            r.hold_s,
            r.map_max_entries,
            mib(r.map_memlock),
        );
    }
    md
}

fn to_json(runs: &[ScaleRun]) -> Value {
    let modes: Vec<Value> = runs
        .iter()
        .map(|r| {
            let m = r.map.unwrap_or_default();
            json!({
                "config": r.mode,
                "client_held": r.client_held,
                "server_held": r.server_held,
                "open_seconds": r.open_seconds,
                "ss_close_wait": r.ss_close_wait,
                "ss_fin_wait2": r.ss_fin_wait2,
                "peak_rss_kib": r.peak_rss_kib,
                "cpu_open_seconds": r.cpu_open_s,
                "cpu_hold_seconds": r.cpu_hold_s,
                "hold_seconds": r.hold_s,
                "map_max_entries": r.map_max_entries,
                "map_memlock_bytes": r.map_memlock,
                "map_live": m.live,
                "map_close_wait": m.close_wait,
                "map_evicted": m.evicted,
                "leak_final_report_sockets": r.leak_reported,
                "events": r.events,
                "ringbuf_losses": r.ringbuf_losses,
            })
        })
        .collect();
    json!({
        "held": HELD,
        "rate_per_s": RATE,
        "ports": PORTS,
        "max_sockets": MAX_SOCKETS,
        "interval_s": INTERVAL.as_secs(),
        "modes": modes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_socket_map_line() {
        let l = "tcptrace: socket map: 200004 of 262144 entries in use (100000 in CLOSE_WAIT), \
                 3 evicted, 49.2 MiB of kernel memory (--max-sockets)";
        assert_eq!(
            parse_map_line(l),
            Some(MapLine {
                live: 200_004,
                capacity: 262_144,
                close_wait: 100_000,
                evicted: 3
            })
        );
        assert_eq!(parse_map_line("tcptrace: losses: 0 ring-buffer full"), None);
        assert_eq!(parse_map_line("tcptrace: socket map: 1 of 2"), None);
    }

    #[test]
    fn sums_the_final_leak_report() {
        let out = [
            r#"{"type":"closewait_leak","report":"interval","count":7}"#,
            r#"{"type":"closewait_leak","report":"final","count":60000}"#,
            "not json",
            r#"{"type":"closewait_leak","report":"final","count":40000}"#,
        ]
        .map(str::to_owned);
        assert_eq!(final_leak_count(&out), Some(100_000));
        assert_eq!(final_leak_count(&out[..1]), None);
    }
}
