//! What the running kernel offers tcptrace, for `tcptrace --version -v`:
//! BTF, tracefs and the tracepoints tcptrace attaches to, and
//! `kernel.bpf_stats_enabled`. It only looks (stat and read): nothing is
//! loaded or mounted, and root is needed only where the files are root's.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::{
    kernel::{
        btf::VMLINUX,
        offsets::{SYSCALL_TRACEPOINTS, TRACEPOINTS},
        tracefs::MOUNT_POINTS,
    },
    model::features::{KernelFeatures, NEEDS_ROOT, Probe, Tracepoint},
};

/// The sysctl `kernel.bpf_stats_enabled`.
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Look at the running kernel. `release` is the caller's (`host::uname`).
#[must_use]
pub fn probe(release: String) -> KernelFeatures {
    let tracefs = find_tracefs(MOUNT_POINTS.iter().map(PathBuf::from));
    let tracepoints = match &tracefs {
        Probe::Found(root) => tracepoints_at(Path::new(root)),
        _ => Vec::new(),
    };
    KernelFeatures {
        release,
        btf: exists(Path::new(VMLINUX)).map_found(|()| VMLINUX.to_owned()),
        tracefs,
        tracepoints,
        bpf_stats: read_trimmed(Path::new(BPF_STATS)),
    }
}

impl<T> Probe<T> {
    fn map_found<U>(self, f: impl FnOnce(T) -> U) -> Probe<U> {
        match self {
            Probe::Found(t) => Probe::Found(f(t)),
            Probe::Missing => Probe::Missing,
            Probe::Unreadable(why) => Probe::Unreadable(why),
        }
    }
}

fn unreadable<T>(e: &io::Error) -> Probe<T> {
    Probe::Unreadable(if e.kind() == io::ErrorKind::PermissionDenied {
        NEEDS_ROOT.to_owned()
    } else {
        e.to_string()
    })
}

/// Whether `path` exists: a stat, which needs search rights on its parents.
fn exists(path: &Path) -> Probe<()> {
    match fs::metadata(path) {
        Ok(_) => Probe::Found(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Probe::Missing,
        Err(e) => unreadable(&e),
    }
}

fn read_trimmed(path: &Path) -> Probe<String> {
    match fs::read_to_string(path) {
        Ok(text) => Probe::Found(text.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Probe::Missing,
        Err(e) => unreadable(&e),
    }
}

/// The first of `roots` with an `events` folder (a mounted tracefs, as
/// `Tracefs::find` looks for it); else why none could be seen: the first
/// that could not be read, or missing.
fn find_tracefs(roots: impl IntoIterator<Item = PathBuf>) -> Probe<String> {
    let mut seen = Probe::Missing;
    for root in roots {
        match exists(&root.join("events")) {
            Probe::Found(()) => return Probe::Found(root.display().to_string()),
            Probe::Missing => {}
            Probe::Unreadable(why) => {
                if seen == Probe::Missing {
                    seen = Probe::Unreadable(why);
                }
            }
        }
    }
    seen
}

/// Every tracepoint tcptrace uses, looked for under a tracefs at `root`.
fn tracepoints_at(root: &Path) -> Vec<Tracepoint> {
    let required = TRACEPOINTS.iter().map(|tp| (tp, false));
    let optional = SYSCALL_TRACEPOINTS.iter().map(|tp| (tp, true));
    required
        .chain(optional)
        .map(|(&(group, name), optional)| Tracepoint {
            name: format!("{group}:{name}"),
            optional,
            found: exists(&root.join("events").join(group).join(name).join("format")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tcptrace-features-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tracefs_is_the_first_root_with_events() {
        let dir = scratch("roots");
        let (a, b) = (dir.join("a"), dir.join("b"));
        fs::create_dir_all(b.join("events")).unwrap();
        assert_eq!(
            find_tracefs([a.clone(), b.clone()]),
            Probe::Found(b.display().to_string())
        );
        assert_eq!(find_tracefs([a]), Probe::Missing);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tracepoints_are_every_one_tcptrace_uses_found_or_missing() {
        let dir = scratch("tps");
        for (group, name) in TRACEPOINTS {
            let tp = dir.join("events").join(group).join(name);
            fs::create_dir_all(&tp).unwrap();
            fs::write(tp.join("format"), "name: x\n").unwrap();
        }
        let tps = tracepoints_at(&dir);
        assert_eq!(tps.len(), TRACEPOINTS.len() + SYSCALL_TRACEPOINTS.len());
        for tp in &tps {
            let want = if tp.optional {
                Probe::Missing
            } else {
                Probe::Found(())
            };
            assert_eq!(tp.found, want, "{}", tp.name);
        }
        assert!(tps.iter().any(|t| t.name == "sock:inet_sock_set_state"));
        assert!(
            tps.iter()
                .any(|t| t.name == "syscalls:sys_exit_bind" && t.optional)
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_sysctl_reads_trimmed_and_a_missing_one_is_missing() {
        let dir = scratch("sysctl");
        fs::write(dir.join("v"), "1\n").unwrap();
        assert_eq!(read_trimmed(&dir.join("v")), Probe::Found("1".to_owned()));
        assert_eq!(read_trimmed(&dir.join("nosuch")), Probe::Missing);
        fs::remove_dir_all(dir).unwrap();
    }
}
