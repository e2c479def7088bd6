//! Processes, read through procfs: who holds a socket inode open (a scan of
//! `/proc/<pid>/fd`), and a process's command line and cgroup. Processes may
//! vanish at any point of a scan; that is skipped, never an error.

use std::{collections::HashMap, sync::Arc};

use procfs::process::{FDTarget, Process};

use crate::model::{closewait::ProcessInfo, container::Container};

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Shared by every socket of the process.
    pub comm: Arc<str>,
}

/// Map socket inodes to the process holding them, scanning every process
/// once. Only inodes in `wanted` are kept.
#[must_use]
pub fn socket_holders<S: std::hash::BuildHasher>(
    wanted: &std::collections::HashSet<u64, S>,
) -> HashMap<u64, Holder> {
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    let Ok(all) = procfs::process::all_processes() else {
        return out;
    };
    for p in all.flatten() {
        let Ok(fds) = p.fd() else { continue };
        // Read once per process, on its first wanted socket.
        let mut holder: Option<Holder> = None;
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target
                && wanted.contains(&inode)
                && !out.contains_key(&inode)
            {
                let h = holder.get_or_insert_with(|| Holder {
                    pid: u32::try_from(p.pid).unwrap_or(0),
                    comm: comm_of(&p).unwrap_or_default().into(),
                });
                out.insert(inode, h.clone());
            }
        }
        if out.len() == wanted.len() {
            break;
        }
    }
    out
}

/// A process's comm, while it lives.
#[must_use]
pub fn comm(pid: u32) -> Option<String> {
    comm_of(&Process::new(i32::try_from(pid).ok()?).ok()?)
}

fn comm_of(p: &Process) -> Option<String> {
    p.stat().ok().map(|s| s.comm)
}

/// Read a process's command line and cgroup. Every field is optional: the
/// process may have exited.
#[must_use]
pub fn info(pid: u32) -> ProcessInfo {
    let Ok(p) = Process::new(i32::try_from(pid).unwrap_or(i32::MAX)) else {
        return ProcessInfo::default();
    };
    let cmdline = p
        .cmdline()
        .ok()
        .filter(|c| !c.is_empty())
        .map(|c| c.join(" "));
    let cgroup = p.cgroups().ok().and_then(|cgs| {
        cgs.into_iter()
            .find(|c| c.hierarchy == 0)
            .map(|c| c.pathname)
    });
    let container_id = cgroup.as_deref().and_then(container_id);
    ProcessInfo {
        cmdline,
        cgroup,
        container_id,
        nspid: crate::host::cgroup::owner::nspid_of(pid).filter(|&n| n != pid),
    }
}

/// The id of the innermost container a cgroup path names
/// ([`Container::from_cgroup_path`]): 64 hex digits, or a systemd-nspawn
/// machine's name.
#[must_use]
pub fn container_id(cgroup: &str) -> Option<String> {
    Container::from_cgroup_path(cgroup).map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_common_cgroup_layouts() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods/besteffort/pod1/cri-containerd-{id}.scope"
            ))
            .as_deref(),
            Some(id)
        );
        assert_eq!(container_id(&format!("/docker/{id}")).as_deref(), Some(id));
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn finds_the_holder_of_a_real_socket_and_survives_missing_ones() {
        use std::os::unix::fs::MetadataExt as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&l));
        let inode = std::fs::metadata(&fd_path).unwrap().ino();
        let wanted: std::collections::HashSet<u64> = [inode, u64::MAX].into_iter().collect();
        let holders = socket_holders(&wanted);
        assert_eq!(holders[&inode].pid, std::process::id());
        assert!(!holders.contains_key(&u64::MAX));
        assert_eq!(
            info(u32::MAX),
            ProcessInfo::default(),
            "a vanished pid is not an error"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Any cgroup path gives None or an id taken from it (64 hex digits,
        /// or an nspawn machine name, which may be unescaped); an id in a
        /// docker scope is found.
        #[test]
        fn container_ids_from_any_path(path in "\\PC{0,120}", id in "[0-9a-f]{64}") {
            if let Some(found) = container_id(&path) {
                proptest::prop_assert!(
                    (found.len() == 64 && path.contains(&found))
                        || path.contains("nspawn@")
                        || path.contains("machine-")
                );
            }
            let scoped = format!("{path}/docker-{id}.scope");
            proptest::prop_assert!(container_id(&scoped).is_some());
        }
    }
}
