//! `cargo xtask soak --minutes N`: does tcptrace's memory stay bounded? In
//! a network namespace of its own, `tcptrace --closewait-leaks` and
//! `tcptrace --timewait` (one process each) run under connection churn
//! (`tcptrace-load churn`) while short-lived leakers, each a copy of one
//! small C program at a path of its own, leak CLOSE_WAIT sockets, fail a
//! `bind()` and exit. Every 10 s it samples each tracer's RSS, open fds,
//! CPU and the occupancy of its kernel maps (keys counted through the map
//! ids in its fdinfo), writes the table to docs/benchmarks.md, and fails
//! when RSS, fds or a map grew more than 5% over the run's last two thirds.

use std::{
    fmt::Write as _,
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::splice_table as splice,
    cargo, is_root,
    netns::{self, Netns},
    procstat, status, workspace_root,
};

const NETNS: &str = "tcptrace-soak";
const ADDR: &str = "127.0.0.1:29800";
const SAMPLE: Duration = Duration::from_secs(10);
/// A leaker starts every this often, and lives [`LEAKER_LIFE_S`].
const LEAKER_EVERY: Duration = Duration::from_millis(500);
const LEAKER_LIFE_S: &str = "2";
/// Distinct leaker binaries, reused round robin (each copy is deleted and
/// made again when its turn comes: the tracer sees deleted binaries too).
const LEAKER_COPIES: usize = 64;
/// The largest growth allowed over the last two thirds.
pub const MAX_GROWTH: f64 = 0.05;
const MARKERS: (&str, &str) = ("<!-- soak:begin -->", "<!-- soak:end -->");

/// Listens, connects to itself four times, closes the client ends and reads
/// EOF on the accepted ends without closing them (CLOSE_WAIT), tries to
/// bind the port the churn server holds (EADDRINUSE), sleeps, exits.
const LEAKER_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 16) || getsockname(l, (void *)&a, &len))
        return 1;
    for (int i = 0; i < 4; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, sizeof a)) return 1;
        int s = accept(l, 0, 0);
        char b[16];
        send(s, "hello", 5, 0);
        recv(c, b, sizeof b, 0);
        close(c);
        recv(s, b, sizeof b, 0); /* EOF: s is in CLOSE_WAIT, and leaks */
    }
    struct sockaddr_in busy = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                                .sin_addr.s_addr = htonl(0x7f000001) };
    int b = socket(AF_INET, SOCK_STREAM, 0);
    bind(b, (void *)&busy, sizeof busy);
    sleep(atoi(argv[2]));
    return 0;
}
"#;

/// One sample of one tracer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub t_s: f64,
    pub rss_kib: u64,
    /// RSS of tcptrace's child processes (leak mode's symbolizer).
    pub child_rss_kib: u64,
    pub fds: u64,
    pub cpu_pct: f64,
    /// Keys of each hash or stack map, by name.
    pub maps: Vec<(String, u64)>,
}

/// A tracer under test, killed when dropped.
struct Tracer {
    name: &'static str,
    child: Child,
    samples: Vec<Sample>,
    last_cpu: f64,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn in_netns(program: &Path) -> Command {
    netns::exec(NETNS, program)
}

/// `BPF_MAP_GET_NEXT_KEY`'s attribute.
#[repr(C)]
#[expect(clippy::struct_field_names, reason = "the kernel's names")]
struct NextKey {
    map_fd: u32,
    pad: u32,
    key: u64,
    next_key: u64,
}

/// Keys in the map `id` whose keys are `key_size` bytes (at most `max + 1`
/// are walked).
fn count_keys(id: u32, key_size: usize, max: u64) -> Option<u64> {
    let map = aya::maps::MapData::from_id(id).ok()?;
    let fd = map.fd().as_fd().as_raw_fd();
    let (mut key, mut next) = (vec![0u8; key_size], vec![0u8; key_size]);
    let mut n = 0;
    let mut first = true;
    while n <= max {
        let attr = NextKey {
            map_fd: u32::try_from(fd).ok()?,
            pad: 0,
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: BPF_MAP_GET_NEXT_KEY (4) reads key_size bytes at `key`
        // (or none when 0) and writes key_size bytes at `next_key`.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 4, &raw const attr, size_of::<NextKey>()) };
        if r != 0 {
            break;
        }
        n += 1;
        first = false;
        std::mem::swap(&mut key, &mut next);
    }
    Some(n)
}

/// Occupancy of the hash-like and stack maps process `pid` holds, by name.
fn map_occupancy(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for fd in fds.flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |k: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(ty), Some(id), Some(ks), Some(max)) = (
            field("map_type:"),
            field("map_id:"),
            field("key_size:"),
            field("max_entries:"),
        ) else {
            continue;
        };
        // Hash, per-CPU hash, stack trace, LRU hash, LRU per-CPU hash.
        if !matches!(ty, 1 | 5 | 7 | 9 | 10) {
            continue;
        }
        let id = u32::try_from(id).unwrap_or(0);
        let Ok(info) = aya::maps::MapInfo::from_id(id) else {
            continue;
        };
        let name = info.name_as_str().unwrap_or("?").to_owned();
        if let Some(n) = count_keys(id, usize::try_from(ks).unwrap_or(0), max) {
            out.push((name, n));
        }
    }
    out.sort();
    out
}

/// RSS of `pid`'s children, summed.
fn children_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(procstat::rss_kib)
        .sum()
}

fn fd_count(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

impl Tracer {
    fn start(name: &'static str, tcptrace: &Path, args: &[&str]) -> Result<Self> {
        let child = in_netns(tcptrace)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting tcptrace {args:?}"))?;
        Ok(Tracer {
            name,
            child,
            samples: Vec::new(),
            last_cpu: 0.0,
        })
    }

    fn sample(&mut self, t_s: f64) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("tcptrace ({}) exited early: {st}", self.name);
        }
        let pid = self.child.id();
        let cpu = procstat::cpu_seconds(pid).unwrap_or(self.last_cpu);
        let dt = SAMPLE.as_secs_f64();
        self.samples.push(Sample {
            t_s,
            rss_kib: procstat::rss_kib(pid),
            child_rss_kib: children_rss_kib(pid),
            fds: fd_count(pid),
            cpu_pct: (cpu - self.last_cpu) / dt * 100.0,
            maps: map_occupancy(pid),
        });
        self.last_cpu = cpu;
        Ok(())
    }
}

/// What a series must grow by before its growth counts, whatever its
/// percentage: a map holding 13 to 22 sockets is not growing when a fit
/// through that noise slopes by one entry.
const MAP_FLOOR: f64 = 100.0;
const FD_FLOOR: f64 = 16.0;
const RSS_FLOOR_KIB: f64 = 4096.0;

/// Relative growth of `ys` (sampled at `xs`) over the last two thirds of
/// the run: the least-squares line through the samples from the one at a
/// third of the run on, from its start to its end, relative to its start,
/// or to `floor` when the start is smaller (so that small counts
/// wandering up and down, or going 0 -> 1, are not growth).
#[must_use]
pub fn growth(xs: &[f64], ys: &[f64], floor: f64) -> f64 {
    let from = xs.len() / 3;
    let (xs, ys) = (&xs[from.min(xs.len())..], &ys[from.min(ys.len())..]);
    if xs.len() < 2 {
        return 0.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "a few hundred samples")]
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let (x0, x1) = (xs[0], xs[xs.len() - 1]);
    let start = my + slope * (x0 - mx);
    (slope * (x1 - x0)) / start.max(floor).max(1.0)
}

/// Every series of `samples` that grew more than [`MAX_GROWTH`]: (name,
/// growth).
#[must_use]
pub fn grown(samples: &[Sample]) -> Vec<(String, f64)> {
    let xs: Vec<f64> = samples.iter().map(|s| s.t_s).collect();
    #[expect(clippy::cast_precision_loss, reason = "counts and KiB")]
    let mut series: Vec<(String, Vec<f64>, f64)> = vec![
        (
            "RSS".into(),
            samples.iter().map(|s| s.rss_kib as f64).collect(),
            RSS_FLOOR_KIB,
        ),
        (
            "symbolizer RSS".into(),
            samples.iter().map(|s| s.child_rss_kib as f64).collect(),
            RSS_FLOOR_KIB,
        ),
        (
            "fds".into(),
            samples.iter().map(|s| s.fds as f64).collect(),
            FD_FLOOR,
        ),
    ];
    let names: std::collections::BTreeSet<&String> = samples
        .iter()
        .flat_map(|s| s.maps.iter().map(|m| &m.0))
        .collect();
    for name in names {
        #[expect(clippy::cast_precision_loss, reason = "map entries")]
        let ys = samples
            .iter()
            .map(|s| {
                s.maps
                    .iter()
                    .find(|m| &m.0 == name)
                    .map_or(0.0, |m| m.1 as f64)
            })
            .collect();
        series.push((name.clone(), ys, MAP_FLOOR));
    }
    series
        .into_iter()
        .map(|(n, ys, floor)| (n, growth(&xs, &ys, floor)))
        .filter(|(_, g)| *g > MAX_GROWTH)
        .collect()
}

fn table(tracers: &[Tracer], minutes: u64, failures: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "`sudo cargo xtask soak --minutes {minutes}`: tcptrace `--closewait-leaks -i 10s \
         --min-age 1s` and `--timewait -i 10s`, one process each, under `tcptrace-load churn` \
         (1 thread) with a leaker starting every {} ms ({LEAKER_COPIES} distinct binaries, \
         4 CLOSE_WAIT sockets and one failed bind each, exiting after {LEAKER_LIFE_S} s). \
         Growth: a least-squares line through the samples of the last two thirds, end \
         against start (or against a floor of {MAP_FLOOR} map entries, {FD_FLOOR} fds or \
         {RSS_FLOOR_KIB} KiB when the start is smaller); the run fails above {:.0}%. \
         \"symbolizer\" is the RSS of leak mode's symbolizer process, replaced every \
         minute.\n",
        LEAKER_EVERY.as_millis(),
        MAX_GROWTH * 100.0
    );
    for tr in tracers {
        let names: Vec<String> = tr
            .samples
            .last()
            .map(|s| s.maps.iter().map(|m| m.0.clone()).collect())
            .unwrap_or_default();
        let _ = writeln!(t, "\n`{}`:\n", tr.name);
        let _ = writeln!(
            t,
            "| t (s) | RSS (MiB) | symbolizer (MiB) | fds | CPU % | {} |",
            names.join(" | ")
        );
        let _ = writeln!(t, "|---|---|---|---|---|{}", "---|".repeat(names.len()));
        for s in &tr.samples {
            let maps: Vec<String> = names
                .iter()
                .map(|n| {
                    s.maps
                        .iter()
                        .find(|m| &m.0 == n)
                        .map_or(0, |m| m.1)
                        .to_string()
                })
                .collect();
            #[expect(clippy::cast_precision_loss, reason = "MiB for people")]
            let (mib, child) = (s.rss_kib as f64 / 1024.0, s.child_rss_kib as f64 / 1024.0);
            let _ = writeln!(
                t,
                "| {:.0} | {mib:.1} | {child:.1} | {} | {:.1} | {} |",
                s.t_s,
                s.fds,
                s.cpu_pct,
                maps.join(" | ")
            );
        }
        let g: Vec<String> = grown(&tr.samples)
            .iter()
            .map(|(n, g)| format!("{n} +{:.1}%", g * 100.0))
            .collect();
        let _ = writeln!(
            t,
            "\nGrowth over 5%: {}",
            if g.is_empty() {
                "none".to_owned()
            } else {
                g.join(", ")
            }
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(t, "\nFailed: {}", failures.join("; "));
    }
    t
}

/// Compile the leaker once, into `dir`.
fn build_leaker(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("leaker.c");
    fs::write(&src, LEAKER_C)?;
    let bin = dir.join("leaker");
    status(
        Command::new("cc")
            .args(["-O1", "-fno-omit-frame-pointer", "-o"])
            .arg(&bin)
            .arg(&src),
    )
    .context("compiling the leaker (is a C compiler installed?)")?;
    Ok(bin)
}

#[expect(
    clippy::too_many_lines,
    reason = "set-up, the bounded loop, teardown, in order"
)]
pub fn run(minutes: u64) -> Result<()> {
    if !is_root() {
        bail!("the soak loads BPF programs and makes a network namespace: run as root");
    }
    if minutes == 0 || minutes > 24 * 60 {
        bail!("--minutes must be between 1 and 1440");
    }
    crate::setup::ensure()?;
    status(
        cargo()
            .args(["build", "--release", "-p", "tcptrace", "-p", "xtask"])
            .args(["--bin", "tcptrace", "--bin", "tcptrace-load"]),
    )?;
    let target = crate::target_dir().join("release");
    let (tcptrace, loadgen) = (target.join("tcptrace"), target.join("tcptrace-load"));
    let dir = crate::target_dir().join("soak");
    fs::create_dir_all(&dir)?;
    let leaker = build_leaker(&dir)?;

    let _ns = Netns::create(NETNS)?;
    let total = Duration::from_secs(minutes * 60);
    let secs = (total.as_secs() + 30).to_string();
    let mut server = in_netns(&loadgen)
        .args([
            "serve",
            "--addr",
            ADDR,
            "--threads",
            "4",
            "--seconds",
            &secs,
        ])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the load server")?;
    thread::sleep(Duration::from_millis(500));
    let mut tracers = vec![
        Tracer::start(
            "tcptrace --closewait-leaks -i 10s --min-age 1s",
            &tcptrace,
            &["--closewait-leaks", "-i", "10s", "--min-age", "1s"],
        )?,
        Tracer::start(
            "tcptrace --timewait -i 10s",
            &tcptrace,
            &["--timewait", "-i", "10s"],
        )?,
    ];
    thread::sleep(Duration::from_secs(3));
    let mut churn = in_netns(&loadgen)
        .args(["churn", "--addr", ADDR, "--threads", "1", "--seconds"])
        .arg(total.as_secs().to_string())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the churn")?;
    let port = ADDR.rsplit(':').next().unwrap_or("0");
    let start = Instant::now();
    let mut next_sample = start + SAMPLE;
    let mut leakers: Vec<Child> = Vec::new();
    let mut copy = 0usize;
    let mut result = Ok(());
    // Bounded: one leaker per LEAKER_EVERY until `total` has passed.
    while start.elapsed() < total {
        let path = dir.join(format!("leaker-{}", copy % LEAKER_COPIES));
        copy += 1;
        let _ = fs::remove_file(&path);
        fs::copy(&leaker, &path)?;
        leakers.push(
            in_netns(&path)
                .args([port, LEAKER_LIFE_S])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        leakers.retain_mut(|c| c.try_wait().ok().flatten().is_none());
        if Instant::now() >= next_sample {
            next_sample += SAMPLE;
            let t = start.elapsed().as_secs_f64();
            if let Some(e) = tracers.iter_mut().find_map(|tr| tr.sample(t).err()) {
                result = Err(e);
                break;
            }
            eprintln!("xtask: soak: {t:.0} s");
        }
        thread::sleep(LEAKER_EVERY);
    }
    for mut c in leakers {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = churn.kill();
    let _ = churn.wait();
    let _ = server.kill();
    let _ = server.wait();
    result?;
    let failures: Vec<String> = tracers
        .iter()
        .flat_map(|tr| {
            grown(&tr.samples)
                .into_iter()
                .map(move |(n, g)| format!("{} {n} grew {:.1}%", tr.name, g * 100.0))
        })
        .collect();
    let md = table(&tracers, minutes, &failures);
    splice(&workspace_root().join("docs/benchmarks.md"), MARKERS, &md)?;
    eprintln!("xtask: wrote the soak table to docs/benchmarks.md\n{md}");
    if !failures.is_empty() {
        bail!("memory grew: {}", failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: u64, rss: u64, stacks: u64) -> Sample {
        #[expect(clippy::cast_precision_loss, reason = "test times")]
        Sample {
            t_s: t as f64,
            rss_kib: rss,
            child_rss_kib: 0,
            fds: 20,
            cpu_pct: 1.0,
            maps: vec![("STACKS".into(), stacks)],
        }
    }

    #[test]
    fn flat_after_warm_up_passes() {
        // Warm-up in the first third, then flat with noise.
        let s: Vec<Sample> = (0..30)
            .map(|i| {
                at(
                    i * 10,
                    if i < 10 {
                        1000 + i * 100
                    } else {
                        2000 + i % 3 * 10
                    },
                    100,
                )
            })
            .collect();
        assert!(grown(&s).is_empty(), "{:?}", grown(&s));
    }

    #[test]
    fn small_counts_wandering_are_not_growth() {
        // SOCKS between 13 and 22, as in a real 3-minute run whose fit
        // sloped by one entry: 7% of 15, 1% of the floor.
        let ys = [
            13, 19, 14, 18, 22, 13, 14, 16, 15, 13, 18, 14, 18, 13, 14, 16, 15,
        ];
        let s: Vec<Sample> = ys
            .iter()
            .enumerate()
            .map(|(i, &n)| Sample {
                maps: vec![("SOCKS".into(), n)],
                ..at(i as u64 * 10, 2000, 60)
            })
            .collect();
        assert!(grown(&s).is_empty(), "{:?}", grown(&s));
        // A map that really grows, from small to well past the floor, fails.
        let s: Vec<Sample> = (0..30)
            .map(|i| Sample {
                maps: vec![("SOCKS".into(), 10 + i * 20)],
                ..at(i * 10, 2000, 60)
            })
            .collect();
        assert_eq!(grown(&s).len(), 1, "{:?}", grown(&s));
    }

    #[test]
    fn a_slow_leak_fails() {
        // RSS (20 MiB) grows 10% over the last two thirds; STACKS doubles.
        let s: Vec<Sample> = (0..30)
            .map(|i| at(i * 10, 20_000 + i * 100, 100 + i * 10))
            .collect();
        let g = grown(&s);
        let names: Vec<&str> = g.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["RSS", "STACKS"], "{g:?}");
        assert!((growth(&[0.0, 1.0, 2.0, 3.0], &[0.0, 0.0, 1.0, 2.0], 1.0) - 2.0).abs() < 1e-9);
    }
}
