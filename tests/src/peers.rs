//! The processes a test drives: `tcptrace-peer`, one end of a TCP connection
//! sequenced through its stdout lines, and `leaky_server`, the C server that
//! leaks `CLOSE_WAIT` sockets for the `--closewait-leaks` tests.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    EXIT_TIMEOUT, LINE_TIMEOUT, Netns,
    process::{TempDir, kill_if_running, run_bounded, slurp, wait_exit},
    workspace_root,
};

/// A running `tcptrace-peer`. Killed on drop if still running.
pub struct Peer {
    role: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Peer {
    pub(crate) fn spawn(ns: &Netns, bin: &Path, role: &'static str, args: &[&str]) -> Self {
        let mut cmd = ns.command(bin);
        cmd.arg(role)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Self {
            role,
            stdin: child.stdin.take(),
            stderr: Some(slurp(child.stderr.take().expect("piped"))),
            child,
            lines,
            seen: Vec::new(),
        };
        let pid_line = p.wait_line("pid ");
        assert_eq!(
            pid_line,
            format!("pid {}", p.pid()),
            "the peer's own pid must be the spawned pid (ip netns exec execs)"
        );
        p
    }

    /// The peer's pid (`ip netns exec` execs the peer in place).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the next line starting with `prefix` (earlier lines are kept
    /// for messages); returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + crate::patient(LINE_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("nothing within {LINE_TIMEOUT:?}"),
                        RecvTimeoutError::Disconnected => "it exited".to_owned(),
                    };
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                    panic!(
                        "{} {} never printed {prefix:?}: {why}; stdout so far {:?}; stderr {:?}",
                        self.role,
                        self.pid(),
                        self.seen,
                        stderr.unwrap_or_default()
                    );
                }
            }
        }
    }

    /// The go-ahead for a peer started with `--wait-go`.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("go() once");
        stdin.write_all(b"go\n").expect("writing go to the peer");
        self.stdin = None;
    }

    /// Wait for the peer to exit successfully; returns all its stdout lines.
    #[expect(
        clippy::must_use_candidate,
        reason = "the lines are for tests that check them; waiting is the point"
    )]
    pub fn wait_success(mut self) -> Vec<String> {
        let what = format!("{} {}", self.role, self.pid());
        let status = wait_exit(&mut self.child, &what, EXIT_TIMEOUT);
        // The writer is gone: the channel drains and then disconnects.
        let deadline = Instant::now() + crate::patient(EXIT_TIMEOUT);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            status.success(),
            "{what} failed: {status}; stdout {:?}; stderr {stderr:?}",
            self.seen
        );
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// Whether `program` is an executable file on `$PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// `tests/peers/leaky_server.c`, compiled with frame pointers and debug info
/// into a temporary directory (removed on drop).
///
/// `leaky_server PORT [SECONDS]`: PORT goes to `leaky_eof_handler` (reads to
/// EOF, never closes), PORT+1 to `leaky_noread_handler` (one `recv` of at
/// most [`LEAKY_RECV_BUF`] bytes, never another, never closes), PORT+2 to
/// `good_handler` (reads to EOF, closes). Single-threaded: every client must
/// send and close for the next one to be served.
pub struct LeakyServerBin {
    _dir: Option<TempDir>,
    bin: PathBuf,
}

/// The buffer of `leaky_noread_handler`'s single `recv`.
pub const LEAKY_RECV_BUF: u64 = 256;

impl LeakyServerBin {
    /// Compile it with `cc`. Panics (never skips) without a C compiler.
    #[must_use]
    pub fn build() -> Self {
        Self::build_from("leaky_server")
    }

    /// Compile `tests/peers/NAME.c` the same way, into `NAME`.
    #[must_use]
    pub fn build_from(name: &str) -> Self {
        assert!(
            on_path("cc"),
            "no cc on PATH: the CLOSE_WAIT leak tests compile tests/peers/leaky_server.c; \
             install a C compiler (apt-get install gcc)"
        );
        let dir = TempDir::new("leaky");
        let bin = dir.path().join(name);
        let src = workspace_root().join(format!("tests/peers/{name}.c"));
        let out = run_bounded(
            Command::new("cc")
                .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
                .arg(&bin)
                .arg(&src),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success() && bin.is_file(),
            "cc {}: {}\n{}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            _dir: Some(dir),
            bin,
        }
    }

    /// A binary built elsewhere (e.g. a rewritten copy of one built here).
    #[must_use]
    pub fn at(bin: PathBuf) -> Self {
        Self { _dir: None, bin }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.bin
    }

    /// `ip netns exec NS leaky_server PORT SECONDS`; returns once it listens.
    /// It lives `seconds` times `TCPTRACE_TEST_SLOWDOWN` ([`crate::patient`]).
    #[must_use]
    pub fn start(&self, ns: &Netns, port: u16, seconds: u32) -> LeakyServer {
        self.start_named(ns, port, seconds, None)
    }

    /// [`LeakyServerBin::start`], renamed `comm` (any bytes but NUL, at
    /// most 15 kept: `prctl(PR_SET_NAME)`) before it listens; `comm` is in
    /// its command line too.
    #[must_use]
    pub fn start_named(
        &self,
        ns: &Netns,
        port: u16,
        seconds: u32,
        comm: Option<&[u8]>,
    ) -> LeakyServer {
        let seconds = crate::patient(std::time::Duration::from_secs(seconds.into())).as_secs();
        let mut args = vec![port.to_string().into(), seconds.to_string().into()];
        if let Some(comm) = comm {
            args.push(OsStr::from_bytes(comm).to_owned());
        }
        self.spawn_ready(ns, &args)
    }

    /// `ip netns exec NS BIN ARGS`; returns once it prints `ready <pid>`.
    #[must_use]
    pub fn start_with(&self, ns: &Netns, args: &[&str]) -> LeakyServer {
        let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        self.spawn_ready(ns, &args)
    }

    fn spawn_ready(&self, ns: &Netns, args: &[std::ffi::OsString]) -> LeakyServer {
        let port = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = ns.command(&self.bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let mut server = LeakyServer {
            stderr: None,
            child,
        };
        let stdout = server.child.stdout.take().expect("piped");
        server.stderr = Some(slurp(server.child.stderr.take().expect("piped")));
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(crate::patient(LINE_TIMEOUT))
            .unwrap_or_default();
        if line.trim() != format!("ready {}", server.pid()) {
            let _ = server.child.kill();
            let status = server.child.wait();
            let stderr = server.stderr.take().map(|h| h.join().unwrap_or_default());
            panic!(
                "leaky_server {port} did not print \"ready {}\" (ip netns exec execs) \
                 within {LINE_TIMEOUT:?}: got {line:?}; status {status:?}; stderr {stderr:?}",
                server.pid()
            );
        }
        server
    }
}

/// A running `leaky_server`; killed on drop if still running.
pub struct LeakyServer {
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl LeakyServer {
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (at most `timeout`) for it to exit by itself, successfully.
    pub fn wait_success(mut self, timeout: Duration) {
        let what = format!("leaky_server {}", self.pid());
        let status = wait_exit(&mut self.child, &what, timeout);
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            status.success(),
            "{what} failed: {status}; stderr {stderr:?}"
        );
    }
}

impl Drop for LeakyServer {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}
