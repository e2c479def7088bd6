//! The netns stage of `cargo xtask bench` (`--only netns`): what following
//! every network namespace of the host costs tcptrace (issue #22). For N in
//! [`COUNTS`], N namespaces are made (loopback up, one idle `sleep` in each,
//! as a container has); `tcptrace --timewait -i 10s` and `tcptrace --hist`
//! run in the host namespace for [`WINDOW`] each, `rounds` times, and their
//! CPU time (utime + stime, every thread) per wall second is read from
//! `/proc/PID/stat`, with RSS at the end. First with every namespace idle,
//! then with min(N, [`BUSY`]) of them busy: a `tcptrace-load trickle` in each
//! opens [`RATE`] connections a second and closes them first, so that
//! TIME_WAIT sockets come and go there.
//!
//! Everything made is removed on the way out, errors and Ctrl-C included
//! (the stage catches SIGINT and SIGTERM while it runs, and its children die
//! with xtask); namespaces left by a killed run are removed at the start.

mod fleet;

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::median;
use crate::procstat::{cpu_seconds, rss_kib};
use fleet::{Fleet, Signals, dies_with_us, kill, pause, remove_stale};

/// Namespaces made, one table section each.
const COUNTS: [usize; 3] = [1, 50, 200];
/// Namespaces with TIME_WAIT churn in the busy rows: min(N, BUSY).
const BUSY: usize = 10;
/// Connections a second in each busy namespace.
const RATE: u32 = 5;
/// Measured time of one tracer run, after [`SETTLE`] from its start.
const WINDOW: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(3);
/// Churn before the first busy run, so that TIME_WAIT sockets exist.
const WARMUP: Duration = Duration::from_secs(5);
const START_LIMIT: Duration = Duration::from_mins(1);
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// The trickles' address, in each busy namespace.
const ADDR: &str = "127.0.0.1:18960";

/// The two tracers measured.
const MODES: [(&str, &[&str]); 2] = [
    ("tcptrace --timewait -i 10s", &["--timewait", "-i", "10s"]),
    ("tcptrace --hist", &["--hist"]),
];

/// One tracer run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    cpu_per_s: f64,
    rss_kib: u64,
    followed: Option<u64>,
    diag_failed: u64,
    timewait: u64,
}

fn lines(child: &mut Child) -> Result<Receiver<String>> {
    let err = child.stderr.take().context("no stderr")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// `N` of `<prefix>N<...>` in any of `lines`.
fn number_after(lines: &[String], prefix: &str) -> Option<u64> {
    lines.iter().find_map(|l| {
        let rest = l.split_once(prefix)?.1;
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// Run one tracer in the host namespace and measure it.
fn measure(tcptrace: &Path, args: &[&str], fleet: &Fleet, busy: usize) -> Result<Sample> {
    let mut child = dies_with_us(Command::new(tcptrace))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcptrace")?;
    let result = (|| -> Result<Sample> {
        let rx = lines(&mut child)?;
        let mut seen = Vec::new();
        let deadline = Instant::now() + START_LIMIT;
        while !seen
            .last()
            .is_some_and(|l: &String| l.starts_with("tcptrace: tracing"))
        {
            pause(Duration::ZERO)?;
            if Instant::now() > deadline {
                bail!("tcptrace did not start: {}", seen.join("\n"));
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => bail!("tcptrace exited at start: {}", seen.join("\n")),
            }
        }
        pause(SETTLE)?;
        let pid = child.id();
        let (cpu0, t0) = (
            cpu_seconds(pid).context("reading tcptrace's CPU")?,
            Instant::now(),
        );
        pause(WINDOW)?;
        let cpu1 = cpu_seconds(pid).context("reading tcptrace's CPU")?;
        let wall = t0.elapsed().as_secs_f64();
        let mut s = Sample {
            cpu_per_s: (cpu1 - cpu0) / wall,
            rss_kib: rss_kib(pid),
            timewait: fleet.timewait(busy),
            ..Sample::default()
        };
        // SAFETY: kill(2) on our own child, still unreaped.
        unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap_or(0), libc::SIGINT) };
        let deadline = Instant::now() + STOP_LIMIT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("tcptrace did not stop within {STOP_LIMIT:?} of SIGINT");
            }
            thread::sleep(Duration::from_millis(50));
        }
        // The reader ends at EOF, after the exit summary.
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
            seen.push(l);
        }
        s.followed = number_after(&seen, "tcptrace: network namespaces: ");
        s.diag_failed = number_after(&seen, "map entries unreadable, ").unwrap_or(0);
        Ok(s)
    })();
    kill(&mut child);
    result
}

/// The samples of one (N, mode, idle or busy) row.
struct Row {
    n: usize,
    mode: &'static str,
    busy: usize,
    samples: Vec<Sample>,
}

impl Row {
    fn cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.cpu_per_s).collect())
    }
}

/// Run the stage; returns the markdown table and the JSON value.
pub fn run(tcptrace: &Path, loadgen: &Path, rounds: u32) -> Result<(String, Value)> {
    let _signals = Signals::catch();
    remove_stale();
    let per_run = SETTLE + WINDOW + START_LIMIT + STOP_LIMIT;
    let phase = per_run * rounds * 2 + WARMUP;
    let mut rows = Vec::new();
    for n in COUNTS {
        eprintln!("xtask: netns: making {n} namespaces");
        let mut fleet = Fleet::create(n, phase * 2 + Duration::from_mins(5))?;
        for busy in [0, n.min(BUSY)] {
            if busy > 0 {
                fleet.churn(busy, loadgen, phase)?;
                pause(WARMUP)?;
            }
            let mut mode_rows: Vec<Row> = MODES
                .iter()
                .map(|(mode, _)| Row {
                    n,
                    mode,
                    busy,
                    samples: Vec::new(),
                })
                .collect();
            for round in 1..=rounds {
                for ((mode, args), row) in MODES.iter().zip(&mut mode_rows) {
                    eprintln!("xtask: netns: N={n}, {busy} busy, round {round}/{rounds}: {mode}");
                    row.samples.push(measure(tcptrace, args, &fleet, busy)?);
                }
            }
            rows.extend(mode_rows);
        }
        drop(fleet);
        pause(Duration::from_secs(2))?;
    }
    Ok((table(&rows, rounds), to_json(&rows, rounds)))
}

/// The idle row of the same mode at `n`.
fn idle<'a>(rows: &'a [Row], n: usize, mode: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.n == n && r.mode == mode && r.busy == 0)
}

/// ms of CPU a second per namespace, and what it is measured against:
/// idle rows against N = 1 per extra namespace, busy rows against the idle
/// row of the same N per busy namespace.
fn per_namespace(rows: &[Row], r: &Row) -> Option<(f64, String)> {
    let (base, over, label) = if r.busy > 0 {
        (
            idle(rows, r.n, r.mode)?,
            r.busy,
            "per busy namespace (vs idle, same N)",
        )
    } else if r.n > COUNTS[0] {
        (
            idle(rows, COUNTS[0], r.mode)?,
            r.n - COUNTS[0],
            "per extra idle namespace (vs N=1)",
        )
    } else {
        return None;
    };
    #[expect(clippy::cast_precision_loss, reason = "a few hundred namespaces")]
    let ms = 1000.0 * (r.cpu() - base.cpu()) / over as f64;
    Some((ms, label.to_owned()))
}

fn table(rows: &[Row], rounds: u32) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| namespaces made | followed (exit summary) | tracer | TIME_WAIT churn | tcptrace CPU, % of a core (median of {rounds}) | rounds | per namespace, ms CPU/s | RSS at end | TIME_WAIT sockets in busy namespaces (ss, at end) |"
    );
    let _ = writeln!(md, "|---:|---:|---|---|---:|---|---|---:|---:|");
    for r in rows {
        let mut followed: Vec<String> = r
            .samples
            .iter()
            .map(|s| s.followed.map_or("?".to_owned(), |f| f.to_string()))
            .collect();
        followed.dedup();
        let each: Vec<String> = r
            .samples
            .iter()
            .map(|s| format!("{:.2}", 100.0 * s.cpu_per_s))
            .collect();
        let per = per_namespace(rows, r).map_or("-".to_owned(), |(ms, l)| format!("{ms:+.2} {l}"));
        let churn = if r.busy == 0 {
            "none (idle)".to_owned()
        } else {
            format!("{} namespaces, {RATE} conn/s each", r.busy)
        };
        let mut rss: Vec<u64> = r.samples.iter().map(|s| s.rss_kib).collect();
        rss.sort_unstable();
        let rss = f64::from(u32::try_from(rss[rss.len() / 2]).unwrap_or(u32::MAX));
        let tw = r
            .samples
            .iter()
            .map(|s| s.timewait.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {churn} | {:.2}% | {} | {per} | {:.1} MiB | {} |",
            r.n,
            followed.join(", "),
            r.mode,
            100.0 * r.cpu(),
            each.join(", "),
            rss / 1024.0,
            if r.busy == 0 { "-".to_owned() } else { tw },
        );
    }
    let failed: u64 = rows
        .iter()
        .flat_map(|r| &r.samples)
        .map(|s| s.diag_failed)
        .sum();
    let _ = writeln!(md, "\nsock_diag requests failed, all runs: {failed}");
    md
}

fn to_json(rows: &[Row], rounds: u32) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "namespaces": r.n,
                "config": r.mode,
                "busy_namespaces": r.busy,
                "cpu_per_s": r.samples.iter().map(|s| s.cpu_per_s).collect::<Vec<_>>(),
                "cpu_per_s_median": r.cpu(),
                "per_namespace_ms_per_s": per_namespace(rows, r).map(|(ms, _)| ms),
                "rss_kib": r.samples.iter().map(|s| s.rss_kib).collect::<Vec<_>>(),
                "followed": r.samples.iter().map(|s| s.followed).collect::<Vec<_>>(),
                "timewait_sockets": r.samples.iter().map(|s| s.timewait).collect::<Vec<_>>(),
                "sock_diag_failed": r.samples.iter().map(|s| s.diag_failed).sum::<u64>(),
            })
        })
        .collect();
    json!({
        "counts": COUNTS,
        "busy_max": BUSY,
        "rate_per_s": RATE,
        "window_s": WINDOW.as_secs(),
        "rounds": rounds,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_of_the_exit_summary() {
        let lines = [
            "tcptrace: losses: 0 ring-buffer full, 0 map entries unreadable, 3 sock_diag requests failed; 0 transitions",
            "tcptrace: network namespaces: 52 followed, 0 let go (their last process exited)",
        ]
        .map(str::to_owned);
        assert_eq!(
            number_after(&lines, "tcptrace: network namespaces: "),
            Some(52)
        );
        assert_eq!(number_after(&lines, "map entries unreadable, "), Some(3));
        assert_eq!(number_after(&lines, "nothing like this"), None);
    }
}
