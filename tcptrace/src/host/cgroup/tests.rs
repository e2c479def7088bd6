use std::os::unix::fs::MetadataExt as _;

use super::*;

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// A directory tree standing in for the mount: `/a`, `/a/b`, `/c`.
fn tree(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("tcptrace-cgroup-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir_all(root.join("c")).unwrap();
    fs::write(root.join("a/cgroup.procs"), "").unwrap();
    root
}

/// The cgroup of this test process is found by the inode of its directory
/// on the real cgroup2 mount (the root cgroup, id 1, when the process is in
/// no v2 cgroup of its own).
#[test]
fn finds_this_process_cgroup_on_the_real_mount() {
    let mount = cgroup2_mount().unwrap_or_else(|e| {
        panic!("THIS HOST HAS NO USABLE CGROUP2 MOUNT, the inode walk is untested: {e}")
    });
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("/proc/self/cgroup has no v2 line although cgroup2 is mounted");
    let dir = mount.join(rel.trim_start_matches('/'));
    let id = ino(&dir);
    let mut paths = CgroupPaths::discover().unwrap();
    assert_eq!(paths.mount(), mount.as_path());
    assert_eq!(paths.path(id).as_deref(), Some(rel), "id {id} in {mount:?}");
    assert_eq!(paths.walks, 1);
    // Every directory the walk saw maps back to itself by its inode.
    for (i, p) in paths.walk() {
        assert_eq!(ino(&mount.join(p.trim_start_matches('/'))), i, "{p}");
    }
}

#[test]
fn a_miss_walks_once_and_fills_the_cache() {
    let root = tree("fill");
    let mut paths = CgroupPaths::new(root.clone());
    let t0 = Instant::now();
    assert_eq!(
        paths.path_at(ino(&root.join("a/b")), t0).as_deref(),
        Some("/a/b")
    );
    assert_eq!(
        paths.path_at(ino(&root.join("c")), t0).as_deref(),
        Some("/c")
    );
    assert_eq!(paths.path_at(ino(&root), t0).as_deref(), Some("/"));
    assert_eq!(paths.walks, 1, "one walk answers for every directory");
    assert_eq!(paths.cached(), 4, "files are not cgroups");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn unknown_ids_walk_at_most_once_a_second() {
    let root = tree("flood");
    let mut paths = CgroupPaths::new(root.clone());
    let t0 = Instant::now();
    assert_eq!(paths.path_at(u64::MAX, t0), None);
    for i in 0..1000 {
        assert_eq!(
            paths.path_at(u64::MAX - i, t0 + Duration::from_millis(i)),
            None
        );
    }
    assert_eq!(paths.walks, 1);
    assert_eq!(paths.unknown, 1001);
    // A cgroup made after the walk is found once a walk is due again.
    fs::create_dir(root.join("d")).unwrap();
    let d = ino(&root.join("d"));
    assert_eq!(paths.path_at(d, t0 + Duration::from_millis(999)), None);
    assert_eq!(paths.path_at(d, t0 + REWALK_EVERY).as_deref(), Some("/d"));
    assert_eq!(paths.walks, 2);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_cache_is_bounded_and_keeps_the_id_asked_for() {
    let root = tree("cap");
    let mut paths = CgroupPaths::with_cap(root.clone(), 2);
    let t0 = Instant::now();
    for (i, dir) in (0u32..).zip(["a/b", "a", "c", ""]) {
        // Each a walk apart: with room for 2, a walk leaves 2 of 4 behind.
        let at = t0 + REWALK_EVERY * i;
        let want = if dir.is_empty() {
            "/".to_owned()
        } else {
            format!("/{dir}")
        };
        assert_eq!(
            paths.path_at(ino(&root.join(dir)), at).as_deref(),
            Some(want.as_str())
        );
        assert!(paths.cached() <= 2);
    }
    assert!(paths.forgotten() >= 2, "{}", paths.forgotten());
    // Entries not asked for in 10 minutes go at the next walk.
    let late = t0 + FORGET_AFTER * 2;
    assert_eq!(paths.path_at(u64::MAX, late), None);
    assert_eq!(paths.cached(), 2, "refilled by the walk, within the cap");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_missing_mount_is_counted_not_fatal() {
    let mut paths = CgroupPaths::new(PathBuf::from("/nonexistent/tcptrace-cgroup"));
    assert_eq!(paths.path(1), None);
    assert_eq!((paths.walks, paths.failed_walks, paths.unknown), (1, 1, 1));
}
