//! Every network namespace on the host, from one process: which namespaces
//! are alive, a sock_diag socket in each, and each one's sysctls and
//! `TCPTimeWaitOverflow`.
//!
//! A namespace is alive while a process is in it (`/proc/PID/ns/net`) or a
//! namespace is mounted on a `/run/netns` entry; tcptrace's own references
//! never count. [`Namespaces::refresh`] reads those links (a readlink per
//! process, a stat per name, nothing opened) and closes the sockets of the
//! namespaces that died: a netlink socket keeps its namespace, and the
//! namespace's interfaces, alive. Namespaces held only by an open file, a
//! mount elsewhere or a thread that is not its process's main thread are not
//! found.
//!
//! Work inside another namespace runs on a thread of its own (`worker`),
//! which opens a way in only for the `setns` and returns to tcptrace's
//! namespace after each job. `setns` needs `CAP_SYS_ADMIN`: without it, only
//! tcptrace's own namespace answers.

mod resolve;
mod scan;
#[cfg(test)]
mod tests;
mod worker;

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::errno::Errno;
use thiserror::Error;

use self::{
    scan::{Roots, Ways},
    worker::{EnterError, RunError, Worker},
};
use super::{
    netstat,
    sockdiag::{Diag, DiagError},
    sysctl,
};
use crate::model::{netns::Netns, sysctl::Sysctls};

/// The most namespaces tracked at once; more are left out of each refresh
/// and counted ([`NetnsCounts::untracked`]).
pub const MAX_NAMESPACES: usize = 8192;

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("tcptrace's own network namespace, /proc/self/ns/net: {0}")]
    Own(io::Error),
    #[error("cannot start the thread that enters network namespaces: {0}")]
    Thread(io::Error),
    #[error("the thread that enters network namespaces stopped during a job")]
    ThreadStopped,
    #[error("network namespace inode:{0} is not one tcptrace has found")]
    Unknown(Netns),
    #[error("network namespace inode:{0} is gone: no process or /run/netns mount is left in it")]
    Vanished(Netns),
    #[error("cannot open a way into network namespace inode:{ns}: {error}")]
    Unopenable { ns: Netns, error: io::Error },
    #[error("entering network namespace inode:{ns} needs CAP_SYS_ADMIN (setns: {errno})")]
    Privilege { ns: Netns, errno: Errno },
    #[error("cannot enter network namespace inode:{ns}: setns: {errno}")]
    Setns { ns: Netns, errno: Errno },
    #[error("sock_diag in network namespace inode:{ns}: {error}")]
    Diag { ns: Netns, error: DiagError },
    #[error("no network namespace /run/netns/{0}")]
    NoSuchName(String),
    #[error("no network namespace is mounted on /run/netns/{0}")]
    NotMounted(String),
    #[error("process {0} does not exist")]
    NoSuchProcess(u32),
    #[error("process {0} has exited: a zombie is in no network namespace")]
    Zombie(u32),
    #[error("no process or /run/netns mount is in namespace inode:{0}")]
    NoSuchInode(u32),
    #[error("{}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
}

/// What [`Namespaces`] has seen, for the exit summary and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsCounts {
    /// Namespaces tracked now, tcptrace's own among them.
    pub alive: usize,
    /// Namespaces dropped because every way into them had gone by the time
    /// they were entered (their processes exited between a refresh and a
    /// call).
    pub vanished: u64,
    /// Processes that were no longer in their namespace when it was entered
    /// through them (exited, or their pid reused): the next way was tried.
    pub exited: u64,
    /// `/proc/PID/ns/net` links and `/run/netns` entries that exist but
    /// could not be read or opened: no permission, or a zombie's link (a
    /// zombie has left its namespaces), counted at each refresh that sees it.
    pub unopenable: u64,
    /// sock_diag sockets closed because their namespace died.
    pub closed: u64,
    /// Namespaces left out at the last refresh: [`MAX_NAMESPACES`] were
    /// tracked.
    pub untracked: usize,
}

/// One tracked namespace.
struct Entry {
    ways: Ways,
    /// Its sock_diag socket, once asked for.
    diag: Option<Diag>,
}

/// The network namespaces of the host, and a sock_diag socket in each.
pub struct Namespaces {
    own: Netns,
    /// The device of namespace files.
    nsfs_dev: u64,
    roots: Roots,
    table: BTreeMap<Netns, Entry>,
    worker: Worker,
    counts: NetnsCounts,
}

impl Namespaces {
    /// tcptrace's own namespace (`/proc/self/ns/net`), the thread that
    /// enters the others, and a first [`refresh`](Self::refresh). Call it
    /// from a thread in tcptrace's namespace.
    pub fn new() -> Result<Self, NetnsError> {
        let home = File::open("/proc/self/ns/net").map_err(NetnsError::Own)?;
        let meta = home.metadata().map_err(NetnsError::Own)?;
        let own = u32::try_from(meta.ino()).map(Netns).map_err(|e| {
            NetnsError::Own(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
        })?;
        let mut worker = Worker::new(home, meta.dev());
        worker.start().map_err(NetnsError::Thread)?;
        let mut table = BTreeMap::new();
        table.insert(
            own,
            Entry {
                ways: Ways::default(),
                diag: None,
            },
        );
        let mut me = Namespaces {
            own,
            nsfs_dev: meta.dev(),
            roots: Roots::default(),
            table,
            worker,
            counts: NetnsCounts::default(),
        };
        me.refresh();
        Ok(me)
    }

    /// tcptrace's own namespace.
    #[must_use]
    pub fn own(&self) -> Netns {
        self.own
    }

    /// Rescan `/proc` and `/run/netns`: namespaces that appeared are
    /// tracked, those that died are dropped and their sockets closed. The
    /// caller decides how often (one readlink per process).
    pub fn refresh(&mut self) {
        let scan = scan::scan(&self.roots, self.nsfs_dev);
        self.counts.unopenable += scan.unopenable;
        let mut found = scan.found;
        let own = found.remove(&self.own).unwrap_or_default();
        let dead: Vec<Netns> = (self.table.keys().copied())
            .filter(|ns| *ns != self.own && !found.contains_key(ns))
            .collect();
        for ns in dead {
            self.drop_namespace(ns);
        }
        self.entry(self.own).ways = own;
        let mut untracked = 0;
        for (ns, ways) in found {
            if let Some(e) = self.table.get_mut(&ns) {
                e.ways = ways;
            } else if self.table.len() < MAX_NAMESPACES {
                self.entry(ns).ways = ways;
            } else {
                untracked += 1;
            }
        }
        self.counts.untracked = untracked;
    }

    /// The namespaces tracked now, tcptrace's own among them, by inode.
    pub fn alive(&self) -> impl Iterator<Item = Netns> + '_ {
        self.table.keys().copied()
    }

    /// The namespace's name under `/run/netns`, if it has one (the first
    /// in byte order if it has several).
    #[must_use]
    pub fn name(&self, ns: Netns) -> Option<&str> {
        self.table.get(&ns)?.ways.name.as_deref()
    }

    /// Processes found in the namespace at the last refresh (a few, in the
    /// order found): what names its container.
    #[must_use]
    pub fn pids(&self, ns: Netns) -> &[u32] {
        self.table.get(&ns).map_or(&[], |e| e.ways.pids.as_slice())
    }

    /// The namespace's sock_diag socket, made inside it the first time
    /// (in tcptrace's own namespace, on the calling thread).
    pub fn diag(&mut self, ns: Netns) -> Result<&Diag, NetnsError> {
        let missing = self
            .table
            .get(&ns)
            .ok_or(NetnsError::Unknown(ns))?
            .diag
            .is_none();
        if missing {
            let made = if ns == self.own {
                Diag::here()
            } else {
                self.within(ns, Diag::here)?
            };
            let diag = made.map_err(|error| NetnsError::Diag { ns, error })?;
            self.entry(ns).diag = Some(diag);
        }
        match self.table.get(&ns).and_then(|e| e.diag.as_ref()) {
            Some(diag) => Ok(diag),
            None => Err(NetnsError::Unknown(ns)),
        }
    }

    /// The namespace's TIME_WAIT sysctls, read inside it.
    pub fn sysctls(&mut self, ns: Netns) -> Result<Sysctls, NetnsError> {
        let read = || sysctl::read(Path::new(sysctl::ROOT));
        if ns == self.own {
            return Ok(read());
        }
        self.within(ns, read)
    }

    /// The namespace's `TcpExtTCPTimeWaitOverflow` (Ok(None) when its
    /// netstat is unreadable), read inside it from the entering thread's
    /// `/proc/thread-self/net/netstat`.
    pub fn timewait_overflow(&mut self, ns: Netns) -> Result<Option<u64>, NetnsError> {
        if ns == self.own {
            return Ok(netstat::timewait_overflow());
        }
        self.within(ns, || {
            netstat::timewait_overflow_in(Path::new(netstat::THREAD))
        })
    }

    #[must_use]
    pub fn counts(&self) -> NetnsCounts {
        NetnsCounts {
            alive: self.table.len(),
            ..self.counts
        }
    }

    /// The entry of `ns`, made if it is not tracked.
    fn entry(&mut self, ns: Netns) -> &mut Entry {
        self.table.entry(ns).or_insert_with(|| Entry {
            ways: Ways::default(),
            diag: None,
        })
    }

    /// Stop tracking `ns` and close its socket.
    fn drop_namespace(&mut self, ns: Netns) {
        if let Some(e) = self.table.remove(&ns)
            && e.diag.is_some()
        {
            self.counts.closed += 1;
        }
    }

    /// Run `work` inside `ns` (not tcptrace's own) on the worker thread,
    /// through its name, else its processes in turn. Ways found gone are
    /// forgotten; a namespace with none left is dropped as vanished.
    fn within<T: Send + 'static>(
        &mut self,
        ns: Netns,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        let entry = self.table.get(&ns).ok_or(NetnsError::Unknown(ns))?;
        let ways = entry.ways.clone();
        let mut paths: Vec<PathBuf> = ways.name.iter().map(|n| self.roots.name_path(n)).collect();
        paths.extend(ways.pids.iter().map(|p| self.roots.pid_link(*p)));
        let named = usize::from(ways.name.is_some());
        let outcome = self.worker.run(ns, paths, work).map_err(|e| match e {
            RunError::Start(e) => NetnsError::Thread(e),
            RunError::Stopped => NetnsError::ThreadStopped,
        })?;

        let mut last = None;
        for (i, error) in outcome.failed {
            match error {
                EnterError::Gone => {
                    let e = self.entry(ns);
                    if i < named {
                        e.ways.name = None;
                    } else if let Some(pid) = ways.pids.get(i - named) {
                        e.ways.pids.retain(|p| p != pid);
                        self.counts.exited += 1;
                    }
                }
                EnterError::Unopenable(error) => {
                    self.counts.unopenable += 1;
                    last = Some(NetnsError::Unopenable { ns, error });
                }
                EnterError::Setns(Errno::EPERM) => {
                    last = Some(NetnsError::Privilege {
                        ns,
                        errno: Errno::EPERM,
                    });
                }
                EnterError::Setns(errno) => last = Some(NetnsError::Setns { ns, errno }),
            }
        }
        if let Some(result) = outcome.result {
            return Ok(result);
        }
        if self.table.get(&ns).is_some_and(|e| e.ways.is_empty()) {
            self.drop_namespace(ns);
            self.counts.vanished += 1;
            return Err(NetnsError::Vanished(ns));
        }
        Err(last.unwrap_or(NetnsError::Vanished(ns)))
    }
}
