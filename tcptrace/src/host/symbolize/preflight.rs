//! What the symbolizer may open for one process, decided before blazesym
//! opens anything: every file it would read besides the mapped binaries
//! (a `.gnu_debuglink` or `.gnu_debugaltlink` target, a `.dwp`) is looked
//! at with `stat`, which never blocks on a FIFO, and refused unless it is a
//! regular file of at most [`MAX_FILE_BYTES`]. A file swapped
//! in after the check, or an open that blocks for another reason (a lease,
//! a hung mount), is what the worker's deadline is for.

use std::{
    collections::HashSet,
    ffi::OsStr,
    fmt::Write as _,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use object::{Object as _, read::ReadCache};
use procfs::process::{MMPermissions, MMapPath, Process};

/// The largest file the symbolizer reads: DWARF of the largest binaries is
/// a few hundred MiB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Where blazesym looks for separate debug files by default.
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// What one request may use, and why not.
#[derive(Debug, Default)]
pub struct Checked {
    /// Why DWARF and separate debug files are not read, if they are not.
    pub debug_refused: Option<String>,
    /// The requested addresses in anonymous executable memory (JIT code),
    /// which only a perf map names (read by [`super::perfmap`], which makes
    /// its own checks on the open file).
    pub anonymous: HashSet<u64>,
}

/// Why `path` may not be opened, if it exists and may not.
fn refuse(path: &Path, what: &str) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() {
        Some(format!("{what} {} is not a regular file", path.display()))
    } else if meta.len() > MAX_FILE_BYTES {
        Some(format!(
            "{what} {} is larger than {} MiB",
            path.display(),
            MAX_FILE_BYTES >> 20
        ))
    } else {
        None
    }
}

/// Every place blazesym may look for the `target` of a debug link in
/// `binary`, whose build id is `build_id`: the build-id
/// directories, the debug directories, the binary's own directory, and the
/// debug directories joined with each of its ancestors.
fn debug_candidates(target: &Path, binary: &Path, build_id: Option<&[u8]>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let hex = id[1..].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        for dir in DEBUG_DIRS {
            out.push(Path::new(dir).join(format!(".build-id/{:02x}/{hex}.debug", id[0])));
        }
    }
    for dir in DEBUG_DIRS {
        out.push(Path::new(dir).join(target));
    }
    if let Some(dir) = binary.parent() {
        out.push(dir.join(target));
        out.push(dir.join(".debug").join(target));
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        for ancestor in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            for debug in DEBUG_DIRS {
                out.push(Path::new(debug).join(ancestor).join(target));
            }
        }
    }
    out
}

/// The files beside the mapped binary `elf` (opened through
/// `/proc/<pid>/map_files`, named `shown`) that blazesym would open: its
/// debug link and alt-link targets, and its `.dwp`.
fn check_binary(elf: &Path, shown: &Path) -> Option<String> {
    // O_NONBLOCK: a mapped file is regular, but nothing here may block.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(elf)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return refuse(elf, "binary");
    }
    let cache = ReadCache::new(file);
    let obj = object::File::parse(&cache).ok()?;
    let build_id = obj.build_id().ok().flatten();
    let os = |b: &[u8]| PathBuf::from(OsStr::from_bytes(b));
    let mut paths = vec![PathBuf::from(format!("{}.dwp", shown.display()))];
    // An absolute link name wins over every directory (`Path::join`).
    if let Ok(Some((linkee, _crc))) = obj.gnu_debuglink() {
        paths.extend(debug_candidates(&os(linkee), shown, build_id));
    }
    if let Ok(Some((alt, alt_id))) = obj.gnu_debugaltlink() {
        paths.extend(debug_candidates(&os(alt), shown, Some(alt_id)));
    }
    paths.iter().find_map(|p| refuse(p, "debug file"))
}

/// Check what symbolizing `addrs` in `pid` would open.
#[must_use]
pub fn check(pid: u32, addrs: &[u64]) -> Checked {
    let mut checked = Checked::default();
    let Ok(maps) = Process::new(pid.cast_signed()).and_then(|p| p.maps()) else {
        return checked;
    };
    let mut binaries = HashSet::new();
    for &addr in addrs {
        let Some(m) = maps
            .iter()
            .find(|m| (m.address.0..m.address.1).contains(&addr))
        else {
            continue;
        };
        match &m.pathname {
            MMapPath::Path(shown) => {
                binaries.insert((m.address, shown.clone()));
            }
            MMapPath::Anonymous if m.perms.contains(MMPermissions::EXECUTE) => {
                checked.anonymous.insert(addr);
            }
            _ => {}
        }
    }
    checked.debug_refused = binaries.iter().find_map(|((start, end), shown)| {
        let elf = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
        check_binary(&elf, shown)
    });
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_link_candidates_cover_absolute_and_relative_names() {
        let c = debug_candidates(
            Path::new("/tmp/x.debug"),
            Path::new("/opt/app/bin/srv"),
            None,
        );
        assert!(c.iter().all(|p| p == Path::new("/tmp/x.debug")), "{c:?}");
        let c = debug_candidates(
            Path::new("srv.debug"),
            Path::new("/opt/app/srv"),
            Some(&[0xab, 0xcd, 0xef]),
        );
        for want in [
            "/usr/lib/debug/.build-id/ab/cdef.debug",
            "/usr/lib/debug/srv.debug",
            "/opt/app/srv.debug",
            "/opt/app/.debug/srv.debug",
            "/usr/lib/debug/opt/app/srv.debug",
            "/lib/debug/opt/srv.debug",
        ] {
            assert!(c.contains(&PathBuf::from(want)), "{want} not in {c:?}");
        }
    }

    #[test]
    fn a_fifo_or_an_oversized_file_is_refused_without_opening_it() {
        let dir = std::env::temp_dir().join(format!("tcptrace-preflight-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let why = refuse(&fifo, "perf map").unwrap();
        assert!(why.contains("not a regular file"), "{why}");
        let big = dir.join("big");
        fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        assert!(refuse(&big, "debug file").unwrap().contains("larger than"));
        let ok = dir.join("ok");
        fs::write(&ok, b"x").unwrap();
        assert_eq!(refuse(&ok, "debug file"), None);
        assert_eq!(refuse(&dir.join("missing"), "debug file"), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_passes() {
        #[inline(never)]
        fn marker() -> u64 {
            marker as *const () as u64
        }
        let c = check(std::process::id(), &[marker()]);
        assert_eq!(c.debug_refused, None);
        assert!(c.anonymous.is_empty());
    }
}
