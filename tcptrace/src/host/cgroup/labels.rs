//! The container (or, failing that, the cgroup path) an owner runs in, for
//! labels: by the cgroup v2 id the kernel noted with the owner, so that the
//! label survives the process; by the owner's v1 path from
//! `/proc/<pid>/cgroup` where the v2 id is the root's (runtimes that use
//! only v1 hierarchies) or was not noted.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    host::cgroup::{CgroupPaths, owner::owner_cgroup_of},
    model::{aging::Aged, container::Container},
};

/// How long a placement is remembered: a process rarely moves, and the
/// stream asks for one per event.
const REMEMBER: Duration = Duration::from_secs(10);
/// Placements remembered at most, by id and by pid each.
const CAP: usize = 4096;

/// The inode of the cgroup2 root directory: the id of every process that
/// a v1-only runtime placed.
const ROOT_ID: u64 = 1;

/// An owner's cgroup path and the container it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub cgroup: Option<Arc<str>>,
    pub container: Option<Arc<str>>,
}

/// Cgroup ids and pids to placements, cached and bounded.
#[derive(Debug)]
pub struct Labeller {
    /// None without a cgroup2 mount: only the v1 fallback is left.
    paths: Option<CgroupPaths>,
    by_id: Aged<u64, Placement>,
    by_pid: Aged<u32, Placement>,
    start: Instant,
}

impl Default for Labeller {
    fn default() -> Self {
        let paths = CgroupPaths::discover()
            .inspect_err(|e| log::info!("containers are named from /proc only: {e}"))
            .ok();
        Labeller {
            paths,
            by_id: Aged::new(REMEMBER, CAP),
            by_pid: Aged::new(REMEMBER, CAP),
            start: Instant::now(),
        }
    }
}

impl Labeller {
    /// Where the owner `pid` with cgroup v2 id `id` (as the kernel noted
    /// it) runs.
    pub fn place(&mut self, id: Option<u64>, pid: u32) -> Placement {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Some(id) = id.filter(|&i| i != ROOT_ID && i != 0) {
            if let Some(p) = self.by_id.touch_existing(&id, now) {
                return p.clone();
            }
            if let Some(path) = self.paths.as_mut().and_then(|p| p.path(id)) {
                let p = placement(Some(path));
                self.by_id.prune(now);
                return self.by_id.touch(id, now, || p).clone();
            }
        }
        if let Some(p) = self.by_pid.touch_existing(&pid, now) {
            return p.clone();
        }
        let p = placement(owner_cgroup_of(pid).map(|c| Arc::from(c.path)));
        self.by_pid.prune(now);
        self.by_pid.touch(pid, now, || p).clone()
    }
}

fn placement(cgroup: Option<Arc<str>>) -> Placement {
    let container = cgroup
        .as_deref()
        .and_then(Container::from_cgroup_path)
        .map(|c| Arc::from(c.id));
    Placement { cgroup, container }
}
