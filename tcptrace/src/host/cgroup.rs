//! Cgroups: the path of a cgroup v2 id (what `bpf_get_current_cgroup_id`
//! gives), found by walking the cgroup2 mount for the directory whose inode
//! is the id, and the v1 fallback and in-namespace pid of a socket owner
//! ([`owner`]). The path outlives the process; the model names the
//! container in it (`model::container`).

pub mod labels;
pub mod mountinfo;
pub mod owner;

use std::{
    fs, io,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::model::aging::Aged;

/// Ids remembered at most; the least recently asked for goes first.
pub const CACHE_CAP: usize = 4096;
/// A miss walks the mount again at most this often.
pub const REWALK_EVERY: Duration = Duration::from_secs(1);
/// Ids neither asked for nor seen by a walk this long are forgotten at the
/// next walk (their cgroups are gone or idle).
const FORGET_AFTER: Duration = Duration::from_mins(10);
/// A walk stops after this many directories (counted in `truncated_walks`).
const MAX_WALK_DIRS: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (see /proc/self/mountinfo)")]
    NoCgroup2Mount,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The cgroup2 mount point of this system.
///
/// # Errors
/// When `/proc/self/mountinfo` cannot be read or lists no cgroup2 mount.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let path = PathBuf::from("/proc/self/mountinfo");
    let text = fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    mountinfo::cgroup2_mount(&text).ok_or(CgroupError::NoCgroup2Mount)
}

/// Cgroup v2 id → path under the mount (`/` for the root), cached and
/// bounded. The id is the kernfs inode number of the cgroup's directory.
#[derive(Debug)]
pub struct CgroupPaths {
    mount: PathBuf,
    cache: Aged<u64, Arc<str>>,
    start: Instant,
    last_walk: Option<Instant>,
    /// Walks of the mount so far.
    pub walks: u64,
    /// Walks that stopped at `MAX_WALK_DIRS`.
    pub truncated_walks: u64,
    /// Walks whose mount could not be read.
    pub failed_walks: u64,
    /// Lookups that found no path (unknown id, or a walk was not due).
    pub unknown: u64,
}

impl CgroupPaths {
    #[must_use]
    pub fn new(mount: PathBuf) -> Self {
        Self::with_cap(mount, CACHE_CAP)
    }

    /// Remembering at most `cap` ids.
    #[must_use]
    pub fn with_cap(mount: PathBuf, cap: usize) -> Self {
        let start = Instant::now();
        CgroupPaths {
            mount,
            cache: Aged::new(FORGET_AFTER, cap),
            start,
            last_walk: None,
            walks: 0,
            truncated_walks: 0,
            failed_walks: 0,
            unknown: 0,
        }
    }

    /// Over this system's cgroup2 mount.
    ///
    /// # Errors
    /// As [`cgroup2_mount`].
    pub fn discover() -> Result<Self, CgroupError> {
        cgroup2_mount().map(Self::new)
    }

    #[must_use]
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The path of cgroup `id`, walking the mount on a miss if the last
    /// walk is older than [`REWALK_EVERY`].
    pub fn path(&mut self, id: u64) -> Option<Arc<str>> {
        self.path_at(id, Instant::now())
    }

    /// [`CgroupPaths::path`] at `now`.
    pub fn path_at(&mut self, id: u64, now: Instant) -> Option<Arc<str>> {
        let ns = nanos(now.saturating_duration_since(self.start));
        if let Some(p) = self.cache.touch_existing(&id, ns) {
            return Some(Arc::clone(p));
        }
        let due = self
            .last_walk
            .is_none_or(|t| now.saturating_duration_since(t) >= REWALK_EVERY);
        if !due {
            self.unknown += 1;
            return None;
        }
        self.last_walk = Some(now);
        self.cache.prune(ns);
        let found = self.walk();
        let mut wanted = None;
        for (ino, path) in found {
            if ino == id {
                wanted = Some(path);
            } else {
                self.remember(ino, path, ns);
            }
        }
        // Last, so that the cap evicts others first.
        let Some(path) = wanted else {
            self.unknown += 1;
            return None;
        };
        self.remember(id, Arc::clone(&path), ns);
        Some(path)
    }

    /// `path` for `id`, replacing an older path (a renamed cgroup).
    fn remember(&mut self, id: u64, path: Arc<str>, ns: u64) {
        let slot = self.cache.touch(id, ns, || Arc::clone(&path));
        *slot = path;
    }

    /// Ids forgotten so far: evicted at the cap, or stale (`FORGET_AFTER`).
    #[must_use]
    pub fn forgotten(&self) -> u64 {
        self.cache.forgotten()
    }

    /// Ids remembered now.
    #[must_use]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// (inode, path) of every directory under the mount. Directories that
    /// vanish during the walk are skipped.
    fn walk(&mut self) -> Vec<(u64, Arc<str>)> {
        self.walks += 1;
        let Ok(root) = fs::metadata(&self.mount) else {
            self.failed_walks += 1;
            return Vec::new();
        };
        let mut found = vec![(root.ino(), Arc::from("/"))];
        let mut todo = vec![(self.mount.clone(), String::new())];
        while let Some((dir, rel)) = todo.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if found.len() >= MAX_WALK_DIRS {
                    self.truncated_walks += 1;
                    return found;
                }
                let path = format!("{rel}/{}", e.file_name().to_string_lossy());
                found.push((e.ino(), Arc::from(path.as_str())));
                todo.push((e.path(), path));
            }
        }
        found
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
