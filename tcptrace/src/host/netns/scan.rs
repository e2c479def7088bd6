//! Discovery: which network namespaces have a process or a `/run/netns`
//! mount in them, and the ways into each. A readlink per process and a
//! stat per name; nothing is opened, so a scan holds no namespace.

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::model::netns::Netns;

/// How many processes of one namespace are kept as ways into it: when the
/// first has exited by the time the namespace is entered, the next is tried.
pub(super) const MAX_PIDS: usize = 4;

/// Where namespaces are found: `/proc` and `/run/netns` on a real system.
#[derive(Clone, Debug)]
pub(super) struct Roots {
    pub proc: PathBuf,
    pub run_netns: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            run_netns: PathBuf::from("/run/netns"),
        }
    }
}

impl Roots {
    /// `/proc/PID/ns/net`.
    pub fn pid_link(&self, pid: u32) -> PathBuf {
        self.proc.join(pid.to_string()).join("ns/net")
    }

    /// `/run/netns/NAME`.
    pub fn name_path(&self, name: &str) -> PathBuf {
        self.run_netns.join(name)
    }
}

/// The ways into one namespace: processes in it and its `/run/netns` name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Ways {
    /// Up to [`MAX_PIDS`] of its processes, in the order they were found.
    pub pids: Vec<u32>,
    /// Its first name under `/run/netns` in byte order, if it has one.
    pub name: Option<String>,
}

impl Ways {
    /// Add `pid` unless it is there or [`MAX_PIDS`] are.
    pub fn add_pid(&mut self, pid: u32) {
        if self.pids.len() < MAX_PIDS && !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
    }

    /// Keep the first of the names in byte order.
    pub fn add_name(&mut self, name: &str) {
        if self.name.as_deref().is_none_or(|n| name < n) {
            self.name = Some(name.to_owned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.name.is_none()
    }
}

/// What one scan found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub found: BTreeMap<Netns, Ways>,
    /// `/proc/PID/ns/net` links and `/run/netns` entries that exist but
    /// could not be read.
    pub unopenable: u64,
}

/// Whether an error says the file is gone: the process exited.
pub(super) fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// Scan `roots` for namespaces. `nsfs_dev` is the device of namespace
/// files (`stat /proc/self/ns/net`): a `/run/netns` entry on another device
/// has nothing mounted on it.
pub(super) fn scan(roots: &Roots, nsfs_dev: u64) -> Scan {
    let mut scan = Scan::default();
    scan_names(roots, nsfs_dev, &mut scan);
    scan_procs(roots, &mut scan);
    scan
}

/// Every process's `ns/net` link. A link that reads ENOENT while
/// `/proc/PID` is still there is a zombie's (it has left its namespaces):
/// counted as unopenable, as is one this process may not read. A process
/// that is gone altogether exited during the scan: not counted.
fn scan_procs(roots: &Roots, scan: &mut Scan) {
    let Ok(dir) = fs::read_dir(&roots.proc) else {
        log::warn!("cannot list {}", roots.proc.display());
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        match read_pid_link(roots, pid) {
            Ok(Some(ns)) => scan.found.entry(ns).or_default().add_pid(pid),
            Ok(None) | Err(PidLink::Exited) => {}
            Err(PidLink::Zombie | PidLink::Unreadable(_)) => scan.unopenable += 1,
        }
    }
}

/// Why a `/proc/PID/ns/net` link could not be read.
#[derive(Debug)]
pub(super) enum PidLink {
    /// `/proc/PID` is gone.
    Exited,
    /// `/proc/PID` is there, its link is not: a zombie.
    Zombie,
    /// Another error (EACCES without `CAP_SYS_PTRACE`).
    Unreadable(io::Error),
}

/// The namespace process `pid` is in, by readlink: Ok(None) when the link
/// names no network namespace.
pub(super) fn read_pid_link(roots: &Roots, pid: u32) -> Result<Option<Netns>, PidLink> {
    match fs::read_link(roots.pid_link(pid)) {
        Ok(target) => Ok(target.to_str().and_then(Netns::from_link)),
        Err(e) if is_gone(&e) => {
            if roots.proc.join(pid.to_string()).exists() {
                Err(PidLink::Zombie)
            } else {
                Err(PidLink::Exited)
            }
        }
        Err(e) => Err(PidLink::Unreadable(e)),
    }
}

/// Every `/run/netns` entry with a namespace mounted on it.
fn scan_names(roots: &Roots, nsfs_dev: u64, scan: &mut Scan) {
    let dir = match fs::read_dir(&roots.run_netns) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            log::warn!("cannot list {}: {e}", roots.run_netns.display());
            scan.unopenable += 1;
            return;
        }
    };
    for entry in dir.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        match mounted(&entry.path(), nsfs_dev) {
            Ok(Some(ns)) => scan.found.entry(ns).or_default().add_name(&name),
            Ok(None) => {}
            Err(e) if is_gone(&e) => {}
            Err(_) => scan.unopenable += 1,
        }
    }
}

/// The namespace mounted on `path`, by stat: Ok(None) when `path` is not a
/// namespace file (a `/run/netns` entry whose mount is not there yet, or
/// is gone).
pub(super) fn mounted(path: &Path, nsfs_dev: u64) -> io::Result<Option<Netns>> {
    let meta = fs::metadata(path)?;
    if meta.dev() != nsfs_dev {
        return Ok(None);
    }
    Ok(u32::try_from(meta.ino()).ok().map(Netns))
}
