//! The HotSpot attach mechanism, as `jcmd` uses it, for one command:
//! `Compiler.perfmap`, which makes a JVM (JDK 17 and later) write the
//! names of its JIT-compiled code to `/tmp/perf-<pid>.map`.
//!
//! The protocol: the JVM listens on `/tmp/.java_pid<pid>` (its own `/tmp`
//! and pid) once its attach listener has started. To start it, create
//! `/tmp/.attach_pid<pid>` and send SIGQUIT. A request is the protocol
//! version, the command and three arguments, each NUL-terminated; the
//! answer is a status line (`0` for success) and the command's output.
//!
//! The JVM is a traced process and its `/tmp` is its own: every path is
//! resolved under `/proc/<pid>/root/tmp` without following symlinks, the
//! listener must be a socket owned by the JVM's user, and every step has a
//! deadline.

use std::{
    ffi::CString,
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{fs::MetadataExt as _, net::UnixStream},
    },
    thread,
    time::{Duration, Instant},
};

/// The request: protocol 1, `jcmd` with its command line as the first
/// argument, two empty arguments.
const REQUEST: &[u8] = b"1\0jcmd\0Compiler.perfmap\0\0\0";
/// The most of an answer read: a status and a line or two.
const MAX_ANSWER: u64 = 64 * 1024;
/// How often the listener's socket is looked for after SIGQUIT.
const POLL: Duration = Duration::from_millis(20);

/// The process to attach to: its pid on the host, the pid it sees itself
/// as, and its effective uid.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub pid: u32,
    pub nspid: u32,
    pub euid: u32,
}

fn openat(dir: &OwnedFd, name: &str, flags: i32, mode: libc::mode_t) -> std::io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a valid directory fd and NUL-terminated name; the returned fd
    // is owned by the caller.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The JVM's `/tmp`, opened as a path (never a symlink).
fn tmp_dir(pid: u32) -> std::io::Result<OwnedFd> {
    let root = File::open(format!("/proc/{pid}/root"))?;
    openat(
        &OwnedFd::from(root),
        "tmp",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

/// Connect to the listener `name` in `tmp`, if it is a socket of `euid`.
fn connect(tmp: &OwnedFd, name: &str, euid: u32, deadline: Instant) -> Result<UnixStream, String> {
    let sock = openat(tmp, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
        .map_err(|e| format!("/tmp/{name}: {e}"))?;
    let meta = File::from(sock.try_clone().map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| format!("/tmp/{name}: {e}"))?;
    if meta.mode() & libc::S_IFMT != libc::S_IFSOCK || meta.uid() != euid {
        return Err(format!(
            "/tmp/{name} is not a socket of the JVM's user (uid {euid})"
        ));
    }
    // Through the opened inode, not the path: nothing swapped in after the
    // check is connected to.
    let s = UnixStream::connect(format!("/proc/self/fd/{}", sock.as_raw_fd()))
        .map_err(|e| format!("connecting to /tmp/{name}: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let left = left.max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Start the JVM's attach listener: the trigger file, SIGQUIT, then wait
/// for the socket until `deadline`.
fn start_listener(t: Target, tmp: &OwnedFd, socket: &str, deadline: Instant) -> Result<(), String> {
    let trigger = format!(".attach_pid{}", t.nspid);
    let created = match openat(
        tmp,
        &trigger,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
        0o600,
    ) {
        Ok(_) => true,
        // Another attach (a jcmd) is under way: its file serves as well.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
        Err(e) => return Err(format!("creating /tmp/{trigger}: {e}")),
    };
    let pid = nix::unistd::Pid::from_raw(t.pid.cast_signed());
    let sent = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT)
        .map_err(|e| format!("SIGQUIT: {e}"));
    let mut found = Err(format!(
        "the JVM did not start its attach listener (/tmp/{socket}) in time"
    ));
    if sent.is_ok() {
        while Instant::now() < deadline {
            if openat(tmp, socket, libc::O_PATH | libc::O_NOFOLLOW, 0).is_ok() {
                found = Ok(());
                break;
            }
            thread::sleep(POLL);
        }
    }
    if created {
        let c = CString::new(trigger).map_err(|e| e.to_string())?;
        // SAFETY: a valid directory fd and NUL-terminated name.
        unsafe { libc::unlinkat(tmp.as_raw_fd(), c.as_ptr(), 0) };
    }
    sent.and(found)
}

/// Ask JVM `t` to write its perf map, within `timeout`. Err says why not.
pub fn compiler_perfmap(t: Target, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let tmp = tmp_dir(t.pid).map_err(|e| format!("the JVM's /tmp: {e}"))?;
    let socket = format!(".java_pid{}", t.nspid);
    if openat(&tmp, &socket, libc::O_PATH | libc::O_NOFOLLOW, 0).is_err() {
        start_listener(t, &tmp, &socket, deadline)?;
    }
    let mut s = connect(&tmp, &socket, t.euid, deadline)?;
    s.write_all(REQUEST)
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut answer = Vec::new();
    (&mut s)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("0") => Ok(()),
        status => Err(format!(
            "Compiler.perfmap failed (status {}): {}",
            status.unwrap_or("none"),
            lines.collect::<Vec<_>>().join(" ").trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixListener, path::PathBuf};

    use super::*;

    /// A listener standing in for a JVM's, at `/tmp/.java_pid<nspid>` (this
    /// process's `/tmp`): it checks the request and sends `answer`.
    fn fake_jvm(nspid: u32, answer: &'static [u8]) -> (PathBuf, thread::JoinHandle<Vec<u8>>) {
        let path = PathBuf::from(format!("/tmp/.java_pid{nspid}"));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let served = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![0; REQUEST.len()];
            s.read_exact(&mut req).unwrap();
            s.write_all(answer).unwrap();
            req
        });
        (path, served)
    }

    fn me(nspid: u32) -> Target {
        Target {
            pid: std::process::id(),
            nspid,
            // SAFETY: no preconditions.
            euid: unsafe { libc::geteuid() },
        }
    }

    /// Fake pids that no process of this machine sees itself as.
    const FAKE: u32 = 4_000_000;

    #[test]
    fn sends_compiler_perfmap_and_reads_the_status() {
        let (path, served) = fake_jvm(FAKE, b"0\n");
        compiler_perfmap(me(FAKE), Duration::from_secs(5)).unwrap();
        assert_eq!(served.join().unwrap(), REQUEST);
        let _ = std::fs::remove_file(path);

        let (path, served) = fake_jvm(FAKE + 1, b"1\nUnknown diagnostic command\n");
        let why = compiler_perfmap(me(FAKE + 1), Duration::from_secs(5)).unwrap_err();
        assert!(why.contains("status 1") && why.contains("Unknown"), "{why}");
        served.join().unwrap();
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_listener_of_another_user_or_a_symlink_is_refused() {
        let (path, _served) = fake_jvm(FAKE + 2, b"0\n");
        let other = Target {
            euid: me(0).euid + 1,
            ..me(FAKE + 2)
        };
        let why = compiler_perfmap(other, Duration::from_secs(5)).unwrap_err();
        assert!(why.contains("not a socket of the JVM's user"), "{why}");
        let link = PathBuf::from(format!("/tmp/.java_pid{}", FAKE + 3));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let why = compiler_perfmap(me(FAKE + 3), Duration::from_secs(5)).unwrap_err();
        assert!(why.contains(&format!(".java_pid{}", FAKE + 3)), "{why}");
        let _ = std::fs::remove_file(link);
        let _ = std::fs::remove_file(path);
    }

    /// No listener appears: the trigger file is made, SIGQUIT is sent (to
    /// this process, which ignores it for the test), and the deadline ends
    /// the wait; the trigger file is removed.
    #[test]
    fn a_jvm_that_never_listens_is_given_up_on_at_the_deadline() {
        // SAFETY: ignoring SIGQUIT in a test process.
        unsafe { libc::signal(libc::SIGQUIT, libc::SIG_IGN) };
        let t = std::time::Instant::now();
        let why = compiler_perfmap(me(FAKE + 4), Duration::from_millis(300)).unwrap_err();
        assert!(why.contains("did not start its attach listener"), "{why}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let trigger = format!("/tmp/.attach_pid{}", FAKE + 4);
        assert!(!std::path::Path::new(&trigger).exists());
    }
}
