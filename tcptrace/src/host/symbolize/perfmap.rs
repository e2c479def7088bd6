//! Reading a process's perf map (`crate::model::perfmap`), which the
//! process itself writes: opened without following a final symlink and
//! without blocking (a FIFO opens at once and is then refused; a file under
//! a write lease fails at once), checked on
//! the open file to be regular and at most [`MAX_PERF_MAP_BYTES`], read
//! whole. What the checks cannot bound (a lease, a hung mount) is the
//! symbolizer process's deadline's to catch.

use std::{
    fs::File,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use crate::{host::cgroup::owner, model::perfmap::PerfMap};

/// The largest perf map read. A JVM's whole code cache (240 MiB at most)
/// is a few hundred thousand symbols of about 100 bytes each.
pub const MAX_PERF_MAP_BYTES: u64 = 64 << 20;

/// The perf map of `pid`: `/tmp/perf-<pid>.map` as the process names it,
/// in its own root and under the pid it sees itself as (`NStgid`), and the
/// path the process sees, for reports.
#[must_use]
pub fn path(pid: u32) -> (PathBuf, String) {
    let ns_tgid = owner::nspid_of(pid).unwrap_or(pid);
    let inside = format!("/tmp/perf-{ns_tgid}.map");
    (PathBuf::from(format!("/proc/{pid}/root{inside}")), inside)
}

/// Read and parse the perf map at `path` (shown as `shown`). None when
/// there is none; the refusal when it is not a regular file, is too large
/// or cannot be read.
pub fn read(path: &Path, shown: &str) -> Result<Option<PerfMap>, String> {
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // O_NONBLOCK makes a file under a write lease fail at once instead
        // of blocking until the lease breaks.
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            return Err(format!(
                "perf map {shown} is leased by another process (opening it would block)"
            ));
        }
        Err(e) => return Err(format!("perf map {shown}: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("perf map {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("perf map {shown} is not a regular file"));
    }
    let too_large = || {
        format!(
            "perf map {shown} is larger than {} MiB",
            MAX_PERF_MAP_BYTES >> 20
        )
    };
    if meta.len() > MAX_PERF_MAP_BYTES {
        return Err(too_large());
    }
    let mut data = Vec::new();
    file.take(MAX_PERF_MAP_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("perf map {shown}: {e}"))?;
    if data.len() as u64 > MAX_PERF_MAP_BYTES {
        return Err(too_large());
    }
    Ok(Some(PerfMap::parse(&data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_symlink_and_an_oversized_file_are_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("tcptrace-perfmap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.map");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let why = read(&fifo, "fifo.map").unwrap_err();
        assert!(why.contains("not a regular file"), "{why}");
        let big = dir.join("big.map");
        File::create(&big)
            .unwrap()
            .set_len(MAX_PERF_MAP_BYTES + 1)
            .unwrap();
        assert!(read(&big, "big.map").unwrap_err().contains("larger than"));
        let good = dir.join("good.map");
        std::fs::write(&good, b"0x1000 0x10 f\ngarbage\n").unwrap();
        let link = dir.join("link.map");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(
            read(&link, "link.map").is_err(),
            "a symlink is not followed"
        );
        let m = read(&good, "good.map").unwrap().unwrap();
        assert_eq!((m.len(), m.bad_lines), (1, 1));
        assert!(read(&dir.join("missing"), "missing").unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
