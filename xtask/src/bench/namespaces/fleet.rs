//! What the netns stage makes and how it is taken down: namespaces with an
//! idle process each, the trickles of churn in some, and the catching of
//! SIGINT and SIGTERM that lets the stage unwind and remove them.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{ADDR, RATE};
use crate::netns::{self, Netns};

/// Names of the namespaces made, then a 3-digit number.
const PREFIX: &str = "tcptrace-nsb-";

/// Set by SIGINT or SIGTERM while the stage runs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set [`STOP`] until dropped, so that the stage
/// unwinds and removes what it made.
pub(super) struct Signals([(libc::c_int, libc::sigaction); 2]);

impl Signals {
    pub(super) fn catch() -> Self {
        STOP.store(false, Ordering::Relaxed);
        Self([libc::SIGINT, libc::SIGTERM].map(|sig| {
            // SAFETY: sigaction with a zeroed struct and a handler that only
            // stores an atomic; the old action is kept to be put back.
            unsafe {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, &raw const new, &raw mut old);
                (sig, old)
            }
        }))
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for (sig, old) in &self.0 {
            // SAFETY: puts back the action sigaction returned.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}

/// Sleep `d`, in steps, failing once SIGINT or SIGTERM came.
pub(super) fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// `cmd`, killed by the kernel if xtask dies first.
pub(super) fn dies_with_us(mut cmd: Command) -> Command {
    // SAFETY: prctl is async-signal-safe and touches nothing of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

pub(super) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Namespaces and their processes; killed and deleted on drop.
pub(super) struct Fleet {
    spaces: Vec<Netns>,
    procs: Vec<Child>,
}

impl Fleet {
    /// `n` namespaces, an idle process in each living `life` at most.
    pub(super) fn create(n: usize, life: Duration) -> Result<Self> {
        let mut fleet = Fleet {
            spaces: Vec::new(),
            procs: Vec::new(),
        };
        for i in 0..n {
            let ns = Netns::create(format!("{PREFIX}{i:03}"))?;
            let sleeper = dies_with_us(netns::exec(ns.name(), "sleep"))
                .arg(life.as_secs().to_string())
                .stdin(Stdio::null())
                .spawn()
                .context("starting an idle process in a namespace")?;
            fleet.spaces.push(ns);
            fleet.procs.push(sleeper);
            if STOP.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
        }
        Ok(fleet)
    }

    /// A trickle of churn in each of the first `k` namespaces.
    pub(super) fn churn(&mut self, k: usize, loadgen: &Path, life: Duration) -> Result<()> {
        for ns in &self.spaces[..k] {
            let child = dies_with_us(netns::exec(ns.name(), loadgen))
                .args(["trickle", "--addr", ADDR, "--rate", &RATE.to_string()])
                .args(["--seconds", &life.as_secs().to_string()])
                .stdout(Stdio::null())
                .spawn()
                .context("starting a trickle")?;
            self.procs.push(child);
        }
        Ok(())
    }

    /// TIME_WAIT sockets in the first `k` namespaces, by `ss`.
    pub(super) fn timewait(&self, k: usize) -> u64 {
        let count = |ns: &Netns| {
            netns::exec(ns.name(), "ss")
                .args(["-Htn", "state", "time-wait"])
                .output()
                .map_or(0, |o| {
                    o.stdout
                        .split(|&b| b == b'\n')
                        .filter(|l| !l.is_empty())
                        .count()
                })
        };
        self.spaces[..k].iter().map(|ns| count(ns) as u64).sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.procs {
            kill(c);
        }
        // Then `spaces` drops: `ip netns del` each.
    }
}

/// Namespaces of ours left by a run that was killed, and their processes.
pub(super) fn remove_stale() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for name in dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        if !name.starts_with(PREFIX) {
            continue;
        }
        eprintln!("xtask: netns: removing {name}, left by an earlier run");
        if let Ok(o) = Command::new("ip").args(["netns", "pids", &name]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: kill(2); the pid is in our namespace of that name.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
}
