//! Child processes: bounded waits and runs, signals, the guard that kills a
//! child left running, tcptrace's start-up (its stderr watched for the ready
//! line), and temporary directories.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{NETNS_PREFIX, POLL, READY, READY_TIMEOUT, patient, tracer_bin};

/// Wait for `child` to exit, at most `timeout`; kill it and panic otherwise.
pub fn wait_exit(child: &mut Child, what: &str, timeout: Duration) -> ExitStatus {
    let timeout = patient(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} (pid {}) did not exit within {timeout:?}",
                    child.id()
                );
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// Read a pipe to its end in a thread.
pub(crate) fn slurp<R: Read + Send + 'static>(mut r: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Run a command to completion with a time limit, capturing its output.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let out = slurp(child.stdout.take().expect("piped"));
    let err = slurp(child.stderr.take().expect("piped"));
    let status = wait_exit(&mut child, &what, timeout);
    Output {
        status,
        stdout: out.join().expect("reader thread").into_bytes(),
        stderr: err.join().expect("reader thread").into_bytes(),
    }
}

/// Collects a child's stderr and signals the ready line.
pub(crate) struct StderrWatch {
    text: Arc<Mutex<String>>,
    ready: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl StderrWatch {
    fn new<R: Read + Send + 'static>(stderr: R) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let (tx, ready) = mpsc::channel();
        let shared = Arc::clone(&text);
        let thread = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let ready = line.starts_with(READY);
                {
                    let mut t = shared.lock().expect("not poisoned");
                    t.push_str(&line);
                    t.push('\n');
                }
                // After the line is in the text: a test that reads stderr
                // once tcptrace is ready finds the ready line in it.
                if ready {
                    let _ = tx.send(());
                }
            }
        });
        Self {
            text,
            ready,
            thread: Some(thread),
        }
    }

    pub(crate) fn text(&self) -> String {
        self.text.lock().expect("not poisoned").clone()
    }

    /// Wait for the ready line; `Err` with the reason if it never comes.
    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        match self.ready.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(format!("no ready line within {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => Err("it exited before tracing".to_owned()),
        }
    }

    /// All of stderr, once the writer has exited.
    pub(crate) fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// Spawn tcptrace with `args` and wait for its ready line. stdout is whatever
/// `stdout` says; stderr is collected. Panics with stderr if it never gets
/// ready.
pub(crate) fn spawn_ready(args: &[&str], stdout: Stdio) -> (Child, StderrWatch) {
    spawn_ready_with(Command::new(tracer_bin()), args, stdout)
}

/// [`spawn_ready`] with the command that runs tcptrace given, e.g.
/// `ip netns exec NS tcptrace` ([`Netns::command`](crate::Netns::command));
/// `args` are appended.
pub(crate) fn spawn_ready_with(
    mut cmd: Command,
    args: &[&str],
    stdout: Stdio,
) -> (Child, StderrWatch) {
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let watch = StderrWatch::new(child.stderr.take().expect("piped"));
    if let Err(why) = watch.wait_ready(patient(READY_TIMEOUT)) {
        let _ = child.kill();
        let status = child.wait();
        let stderr = watch.finish();
        panic!("tcptrace {args:?} did not start: {why}; status {status:?}; stderr:\n{stderr}");
    }
    (child, watch)
}

/// Send `sig` to a child that has not been reaped.
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet, so it
    // cannot have been recycled.
    let rc = unsafe { libc::kill(pid, sig) };
    assert!(
        rc == 0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Kill and reap `child` if it is still running: what every wrapper of a
/// child process does on drop, so that a failing test leaves nothing behind.
pub(crate) fn kill_if_running(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A child process that is killed (and reaped) if dropped while running, so
/// that a failing test leaves nothing behind.
pub struct ChildGuard(pub Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        kill_if_running(&mut self.0);
    }
}

/// A directory of its own under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    #[must_use]
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("{NETNS_PREFIX}{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
