//! JVMs among the traced processes: which processes are JVMs and with what
//! options ([`inspect`]), and refreshing their perf maps through the attach
//! mechanism ([`attach`]) on threads of their own ([`Refresher`]), so that
//! a JVM that is slow to answer never holds up the event loop.

use std::{
    collections::HashMap,
    fs,
    io::Read as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{host::cgroup::owner, model::jvm::JvmFlags};

pub mod attach;

/// How long one perf map refresh may take, attach included.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(3);
/// Refreshes under way at once; JVMs past it wait for the next report.
const MAX_IN_FLIGHT: usize = 8;
/// The most of `/proc/<pid>/{cmdline,environ}` read.
const MAX_PROC_FILE: u64 = 1 << 20;

/// A JVM among the traced processes.
#[derive(Clone, Copy, Debug)]
pub struct Jvm {
    pub flags: JvmFlags,
    pub target: attach::Target,
}

fn read_bounded(path: &str) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_PROC_FILE)
        .read_to_end(&mut v)
        .ok()?;
    Some(v)
}

/// Whether `pid` is a JVM (it maps HotSpot's `libjvm.so`), and its options.
#[must_use]
pub fn inspect(pid: u32) -> Option<Jvm> {
    let maps = read_bounded(&format!("/proc/{pid}/maps"))?;
    let hotspot = maps
        .split(|&b| b == b'\n')
        .any(|l| l.ends_with(b"/libjvm.so"));
    if !hotspot {
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let nspid = owner::nspid(&status).unwrap_or(pid);
    // Uid: real, effective, saved, filesystem.
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let euid = uids.split_ascii_whitespace().nth(1)?.parse().ok()?;
    let cmdline = read_bounded(&format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let environ = read_bounded(&format!("/proc/{pid}/environ")).unwrap_or_default();
    Some(Jvm {
        flags: JvmFlags::from_process(&cmdline, &environ),
        target: attach::Target { pid, nspid, euid },
    })
}

/// One refresh under way.
struct InFlight {
    done: Arc<AtomicBool>,
    handle: thread::JoinHandle<Result<(), String>>,
}

/// Perf map refreshes, each on a thread of its own; at most one per JVM
/// at a time.
#[derive(Default)]
pub struct Refresher {
    in_flight: HashMap<u32, InFlight>,
    /// Why the last refresh of a JVM failed, until one succeeds.
    failed: HashMap<u32, String>,
}

impl Refresher {
    /// Start refreshing `jvm`'s perf map, unless it is under way or too
    /// many are. Returns whether one is under way now.
    pub fn start(&mut self, jvm: &Jvm) -> bool {
        self.reap();
        let pid = jvm.target.pid;
        if self.in_flight.contains_key(&pid) {
            return true;
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            log::info!("pid {pid}: {MAX_IN_FLIGHT} perf map refreshes under way; next report");
            return false;
        }
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let target = jvm.target;
        let spawned = thread::Builder::new()
            .name("jvm-attach".into())
            .spawn(move || {
                let r = attach::compiler_perfmap(target, ATTACH_TIMEOUT);
                flag.store(true, Ordering::Release);
                r
            });
        match spawned {
            Ok(handle) => {
                self.in_flight.insert(pid, InFlight { done, handle });
                true
            }
            Err(e) => {
                log::warn!("pid {pid}: starting a perf map refresh: {e}");
                false
            }
        }
    }

    /// Wait until every refresh under way is done, or until `deadline`.
    pub fn wait(&mut self, deadline: Instant) {
        while self
            .in_flight
            .values()
            .any(|f| !f.done.load(Ordering::Acquire))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        self.reap();
    }

    /// Collect the refreshes that are done, saying how each went.
    fn reap(&mut self) {
        let done: Vec<u32> = (self.in_flight.iter())
            .filter(|(_, f)| f.done.load(Ordering::Acquire))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in done {
            let Some(f) = self.in_flight.remove(&pid) else {
                continue;
            };
            match f.handle.join() {
                Ok(Ok(())) => {
                    log::debug!("pid {pid}: perf map refreshed");
                    self.failed.remove(&pid);
                }
                Ok(Err(why)) => {
                    log::info!("pid {pid}: perf map not refreshed: {why}");
                    self.failed.insert(pid, why);
                }
                Err(_) => {
                    self.failed.insert(pid, "the refresh panicked".into());
                }
            }
        }
        if self.failed.len() > 1024 {
            self.failed
                .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
    }

    /// Why the last refresh of `pid` failed, if it did.
    #[must_use]
    pub fn failure(&self, pid: u32) -> Option<&str> {
        self.failed.get(&pid).map(String::as_str)
    }
}
