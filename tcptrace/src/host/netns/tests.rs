//! What needs no privilege: the scan over a made-up `/proc`, tcptrace's own
//! namespace, resolution errors, and ways the worker finds gone. Entering
//! other namespaces needs root: `tests/tests/netns_host.rs`.

use std::{fs, os::unix::fs::symlink};

use super::{
    scan::{MAX_PIDS, Roots, Ways, scan},
    worker::{EnterError, Worker},
    *,
};
use tcptrace_common::TcpState;

use crate::model::netns::NetnsSpec;

/// A directory of its own under the temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tcptrace-netns-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn nsfs_dev() -> u64 {
    fs::metadata("/proc/self/ns/net").unwrap().dev()
}

/// Links are read, not opened: a made-up `/proc` of symlinks is scanned as
/// a real one would be. A pid directory without its link is a zombie's.
#[test]
fn scan_groups_pids_by_link_and_counts_what_it_cannot_read() {
    let root = Dir::new("scan");
    let proc = root.0.join("proc");
    let run_netns = root.0.join("run-netns");
    fs::create_dir_all(&run_netns).unwrap();
    let link = |pid: u32, target: &str| {
        let ns = proc.join(pid.to_string()).join("ns");
        fs::create_dir_all(&ns).unwrap();
        symlink(target, ns.join("net")).unwrap();
    };
    for pid in 100..106 {
        link(pid, "net:[4026532001]");
    }
    link(200, "net:[4026532002]");
    link(300, "mnt:[4026532003]"); // not a network namespace: ignored
    fs::create_dir_all(proc.join("400")).unwrap(); // a zombie: no ns/net
    symlink("100", proc.join("self")).unwrap(); // not a pid
    fs::write(run_netns.join("plain"), "").unwrap(); // nothing mounted on it
    let roots = Roots {
        proc,
        run_netns: run_netns.clone(),
    };
    let s = scan(&roots, nsfs_dev());
    assert_eq!(s.found.len(), 2, "{:?}", s.found);
    let first = &s.found[&Netns(4_026_532_001)];
    assert_eq!(first.pids.len(), MAX_PIDS);
    assert!(first.pids.iter().all(|p| (100..106).contains(p)));
    assert_eq!(
        first.name, None,
        "a file with no namespace mounted is no name"
    );
    assert_eq!(s.found[&Netns(4_026_532_002)].pids, vec![200]);
    assert_eq!(s.unopenable, 1, "the zombie");

    // No /run/netns at all is no error.
    let roots = Roots {
        run_netns: root.0.join("absent"),
        ..roots
    };
    assert_eq!(scan(&roots, nsfs_dev()).unopenable, 1);
}

#[test]
fn ways_keep_the_first_name_and_a_few_pids() {
    let mut w = Ways::default();
    assert!(w.is_empty());
    for name in ["red", "blue", "green"] {
        w.add_name(name);
    }
    assert_eq!(w.name.as_deref(), Some("blue"));
    for pid in [7, 7, 8, 9, 10, 11, 12] {
        w.add_pid(pid);
    }
    assert_eq!(w.pids, vec![7, 8, 9, 10]);
    assert!(!w.is_empty());
}

/// Everything about tcptrace's own namespace works without entering one:
/// no privilege is needed.
#[test]
fn the_own_namespace_answers_on_the_calling_thread() {
    let mut n = Namespaces::new().unwrap();
    let own = n.own();
    let link = fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(Netns::from_link(link.to_str().unwrap()), Some(own));
    assert!(n.alive().any(|ns| ns == own));
    assert_eq!(n.counts().alive, n.alive().count());

    let listeners = n.diag(own).unwrap().dump(&[TcpState::Listen]).unwrap();
    let here = Diag::here().unwrap().dump(&[TcpState::Listen]).unwrap();
    assert_eq!(listeners.len(), here.len());
    assert_eq!(
        n.sysctls(own).unwrap(),
        sysctl::read(Path::new(sysctl::ROOT))
    );
    assert!(n.timewait_overflow(own).unwrap().is_some());

    assert_eq!(n.resolve(&NetnsSpec::Pid(std::process::id())).unwrap(), own);
    assert_eq!(n.resolve(&NetnsSpec::Inode(own.0)).unwrap(), own);
    assert!(matches!(n.diag(Netns(1)), Err(NetnsError::Unknown(_))));
    assert!(matches!(n.sysctls(Netns(1)), Err(NetnsError::Unknown(_))));
}

#[test]
fn resolve_says_what_does_not_exist() {
    let mut n = Namespaces::new().unwrap();
    let err = |n: &mut Namespaces, spec: NetnsSpec| n.resolve(&spec).unwrap_err().to_string();
    let name = format!("tcptrace-unit-absent-{}", std::process::id());
    assert_eq!(
        err(&mut n, NetnsSpec::Name(name.clone())),
        format!("no network namespace /run/netns/{name}")
    );
    assert_eq!(
        err(&mut n, NetnsSpec::Pid(u32::MAX - 1)),
        format!("process {} does not exist", u32::MAX - 1)
    );
    assert_eq!(
        err(&mut n, NetnsSpec::Inode(1)),
        "no process or /run/netns mount is in namespace inode:1"
    );
}

/// The worker never enters through a way that is gone, that leads to
/// another namespace than the one asked for (a reused pid), or that is no
/// namespace at all (a FIFO, which does not block it): none needs a
/// `setns`, hence no privilege.
#[test]
fn the_worker_enters_only_the_namespace_asked_for() {
    let dir = Dir::new("worker");
    let fifo = dir.0.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo {}", fifo.display());
    let home = File::open("/proc/self/ns/net").unwrap();
    let mut w = Worker::new(home, nsfs_dev());
    let ways = vec![
        PathBuf::from("/proc/self/ns/absent"),
        PathBuf::from("/proc/self/ns/net"),
        fifo,
    ];
    let out = w.run(Netns(1), ways, || 42).unwrap();
    assert_eq!(out.result, None);
    assert!(
        matches!(
            out.failed.as_slice(),
            [
                (0, EnterError::Gone),
                (1, EnterError::Gone),
                (2, EnterError::Gone)
            ]
        ),
        "{:?}",
        out.failed
    );
}
