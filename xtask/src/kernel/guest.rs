//! The matrix's runner on the kernel under test: inside the VM (the hidden
//! `xtask kernel-guest`), or on the host for the host's own kernel. It notes
//! what the kernel offers, then runs each integration test binary with one
//! test thread, its output both in a file of its own and in `progress.log`
//! (which the host streams), within a time limit (its process group killed
//! past it), and writes how it ended.
//!
//! Files in OUT: `release`, `features.txt` (`tcptrace --version -v` and the
//! probes below), `<test>.log`, `<test>.status` (`exit CODE SECONDS` or
//! `timeout SECONDS`), `done` when every test has run.

use std::{
    fmt::Write as _,
    fs::{self, File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};

/// What the runner is given.
pub struct Plan {
    pub out: PathBuf,
    /// Where the test binaries run (cargo runs them in their package's
    /// directory).
    pub cwd: PathBuf,
    pub tracer: PathBuf,
    /// Test binaries, by name.
    pub tests: Vec<(String, PathBuf)>,
    pub timeout: Duration,
    /// `TCPTRACE_TEST_SLOWDOWN` for the tests: how many times longer their
    /// bounded waits are.
    pub slowdown: u32,
}

/// The plan file that the hidden `kernel-guest PLAN` reads: one argument a
/// line, `OUT CWD TRACER TIMEOUT_SECS SLOWDOWN NAME=PATH...` (a file, as the
/// kernel's command line that carries the guest's command holds 2 KiB).
pub fn read_plan(path: &Path) -> Result<Plan> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_args(&text.lines().map(str::to_owned).collect::<Vec<_>>())
}

/// Write `plan` where [`read_plan`] reads it.
pub fn write_plan(plan: &Plan, path: &Path) -> Result<()> {
    fs::write(path, to_args(plan).join("\n") + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn parse_args(args: &[String]) -> Result<Plan> {
    let [out, cwd, tracer, timeout, slowdown, tests @ ..] = args else {
        return Err(anyhow!(
            "usage: kernel-guest OUT CWD TRACER TIMEOUT_SECS SLOWDOWN NAME=PATH..."
        ));
    };
    let tests = tests
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(n, p)| (n.to_owned(), PathBuf::from(p)))
                .ok_or_else(|| anyhow!("{t}: expected NAME=PATH"))
        })
        .collect::<Result<_>>()?;
    Ok(Plan {
        out: out.into(),
        cwd: cwd.into(),
        tracer: tracer.into(),
        tests,
        timeout: Duration::from_secs(timeout.parse().context("TIMEOUT_SECS")?),
        slowdown: slowdown.parse().context("SLOWDOWN")?,
    })
}

fn to_args(plan: &Plan) -> Vec<String> {
    let mut args = vec![
        plan.out.display().to_string(),
        plan.cwd.display().to_string(),
        plan.tracer.display().to_string(),
        plan.timeout.as_secs().to_string(),
        plan.slowdown.to_string(),
    ];
    args.extend(
        plan.tests
            .iter()
            .map(|(n, p)| format!("{n}={}", p.display())),
    );
    args
}

pub fn run(plan: &Plan) -> Result<()> {
    fs::create_dir_all(&plan.out).with_context(|| format!("creating {}", plan.out.display()))?;
    let progress = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(plan.out.join("progress.log"))
            .context("opening progress.log")?,
    ));
    prepare();
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    fs::write(plan.out.join("release"), release.trim())?;
    fs::write(plan.out.join("features.txt"), features(&plan.tracer))?;
    for (name, bin) in &plan.tests {
        say(&progress, &format!("=== {name}"));
        let start = Instant::now();
        let end = run_one(plan, name, bin, &progress)?;
        let secs = start.elapsed().as_secs_f64();
        let status = match end {
            Some(code) => format!("exit {code} {secs:.1}"),
            None => format!("timeout {secs:.1}"),
        };
        say(&progress, &format!("=== {name}: {status}"));
        fs::write(plan.out.join(format!("{name}.status")), status)?;
    }
    fs::write(plan.out.join("done"), "")?;
    Ok(())
}

fn say(progress: &Mutex<File>, line: &str) {
    let mut f = progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writeln!(f, "{line}");
}

/// What the tests expect of a booted system that a bare VM may lack:
/// loopback up, the bpf filesystem (tracefs and cgroup2 are there, and
/// tcptrace mounts tracefs itself when it is not).
fn prepare() {
    let _ = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    if !Path::new("/sys/fs/bpf")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        let _ = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .stderr(Stdio::null())
            .status();
    }
    let _ = fs::create_dir_all("/run/netns");
}

/// `tcptrace --version -v`, then what it does not print: whether
/// `tcp_send_reset` has its `reason` field, and whether a BPF ring buffer map
/// can be made.
fn features(tracer: &Path) -> String {
    let mut text = match Command::new(tracer).args(["--version", "-v"]).output() {
        Ok(o) => {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        }
        Err(e) => format!("running {}: {e}\n", tracer.display()),
    };
    let reason = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            fs::read_to_string(format!("{root}/events/tcp/tcp_send_reset/format")).ok()
        })
        .map_or("no tracepoint", |f| {
            if f.contains(" reason;") { "yes" } else { "no" }
        });
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
        .map_or_else(|e| format!("unreadable ({e})"), |l| l.trim().to_owned());
    let _ = write!(
        text,
        "probe tcp_send_reset.reason: {reason}\nprobe ringbuf: {}\n\
         probe recv/send hooks: {}\nprobe lockdown: {lockdown}\n",
        ringbuf(),
        io_hooks(tracer)
    );
    text
}

/// Which recv/send hooks leak mode runs on (the tracepoints, or their
/// fallback), from a one-second run: `yes (HOW)`, or `no: ERROR`.
fn io_hooks(tracer: &Path) -> String {
    let out = Command::new("timeout")
        .arg("300")
        .arg(tracer)
        .args(["--closewait-leaks", "-d", "1", "--port", "1", "-v"])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        return "no: could not run tcptrace".to_owned();
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let hooks = err
        .lines()
        .find_map(|l| l.split_once("recv/send hooks: ").map(|(_, h)| h.trim()))
        .unwrap_or("?");
    if out.status.success() {
        return format!("yes ({hooks})");
    }
    let why = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("tcptrace: "))
        .unwrap_or("exited without an error line");
    format!("no: {why}")
}

/// Make a 4 KiB BPF ring buffer map (Linux 5.8+) and close it.
fn ringbuf() -> String {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    // map_type, key_size, value_size, max_entries, then zeros: the first
    // fields of `union bpf_attr` for BPF_MAP_CREATE.
    let mut attr = [0u32; 30];
    attr[0] = BPF_MAP_TYPE_RINGBUF;
    attr[3] = 4096;
    let size = std::mem::size_of_val(&attr);
    // SAFETY: bpf(2) reads `size` bytes of `attr`, which is that long.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), size) };
    if fd < 0 {
        return format!("no ({})", std::io::Error::last_os_error());
    }
    if let Ok(fd) = libc::c_int::try_from(fd) {
        // SAFETY: the fd was just returned to us and is closed once.
        unsafe { libc::close(fd) };
    }
    "yes".to_owned()
}

/// Run one test binary; its exit code, or `None` when it ran out of time.
fn run_one(
    plan: &Plan,
    name: &str,
    bin: &Path,
    progress: &Arc<Mutex<File>>,
) -> Result<Option<i32>> {
    let log = Arc::new(Mutex::new(File::create(
        plan.out.join(format!("{name}.log")),
    )?));
    let mut child = Command::new(bin)
        .arg("--test-threads=1")
        .current_dir(&plan.cwd)
        .env("TCPTRACE_BIN", &plan.tracer)
        .env("TCPTRACE_TEST_SLOWDOWN", plan.slowdown.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let copy = |r: Box<dyn std::io::Read + Send>| {
        let (log, progress) = (Arc::clone(&log), Arc::clone(progress));
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                let mut l = log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let _ = writeln!(l, "{line}");
                drop(l);
                say(&progress, &line);
            }
        })
    };
    let readers = [
        copy(Box::new(child.stdout.take().context("piped stdout")?)),
        copy(Box::new(child.stderr.take().context("piped stderr")?)),
    ];
    let deadline = Instant::now() + plan.timeout;
    // The test binary leads its process group: whatever it left running
    // (or all of it, past the deadline) is killed with it.
    let pgid = libc::pid_t::try_from(child.id()).context("pid")?;
    let code = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: kill(2) on a process group this runner made; the leader is
    // not reaped before it when it is still running.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    if code.is_some() {
        // A process that left the group could hold the pipes open: read
        // them to their end only when the test binary ended by itself.
        for r in readers {
            let _ = r.join();
        }
    }
    Ok(code)
}
