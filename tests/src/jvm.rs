//! [`JavaServer`]: `tests/peers/LeakServer.java` on Debian's `OpenJDK` 17,
//! run the way a container runs it: in the test's network namespace, in a
//! mount namespace with a `/tmp` of its own (where its perf map and attach
//! files go) and in a pid namespace of its own (it sees itself as pid 2,
//! under a shell as init).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{
    ChildGuard, LINE_TIMEOUT, Netns, need,
    process::{run_bounded, slurp},
    workspace_root,
};

/// The pid the server sees itself as: its namespace's init is the shell.
pub const NSPID: u32 = 2;

/// The compiled peer, in a directory outside `/tmp` (the server's `/tmp`
/// is a tmpfs of its own). Removed on drop.
pub struct JavaClasses(PathBuf);

impl JavaClasses {
    /// `javac` the peer; needs Debian's openjdk-17-jdk-headless.
    #[must_use]
    pub fn build() -> Self {
        need("javac", "openjdk-17-jdk-headless");
        let dir = PathBuf::from(format!("/var/tmp/tcptrace-it-java-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let src = workspace_root().join("tests/peers/LeakServer.java");
        let out = run_bounded(
            Command::new("javac").arg("-d").arg(&dir).arg(&src),
            Duration::from_mins(2),
        );
        assert!(
            out.status.success(),
            "javac {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `java LeakServer client 127.0.0.1 PORT COUNT LEN` in `ns`, to the end.
    pub fn clients(&self, ns: &Netns, port: u16, count: u32, len: u32) {
        let out = run_bounded(
            Command::new("ip")
                .args(["netns", "exec", ns.name(), "java", "-cp"])
                .arg(&self.0)
                .args(["LeakServer", "client", "127.0.0.1"])
                .args([port.to_string(), count.to_string(), len.to_string()]),
            Duration::from_mins(2),
        );
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
            "java client: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for JavaClasses {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server. Killed on drop (with its namespaces).
pub struct JavaServer {
    pid: u32,
    _child: ChildGuard,
}

impl JavaServer {
    /// Start it on 127.0.0.1:`port` in `ns` with the JVM options `opts`;
    /// returns once it listens.
    #[must_use]
    pub fn start(ns: &Netns, classes: &JavaClasses, port: u16, opts: &[&str]) -> Self {
        let tag = format!("tcptrace-it-{}-{port}", std::process::id());
        let java = format!(
            "mount -t tmpfs tmpfs /tmp && java {} -cp {} LeakServer 127.0.0.1 {port} {tag} & wait",
            opts.join(" "),
            classes.path().display()
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(["unshare", "--mount", "--propagation", "private", "--pid"])
            .args(["--fork", "--mount-proc", "--kill-child", "sh", "-c", &java])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the Java server");
        let stdout = child.stdout.take().expect("piped");
        let stderr = slurp(child.stderr.take().expect("piped"));
        let child = ChildGuard(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let listening = rx.recv_timeout(LINE_TIMEOUT * 2);
        if listening.as_deref() != Ok("listening") {
            drop(child);
            panic!(
                "the Java server did not start: {listening:?}; stderr: {}",
                stderr.join().unwrap_or_default()
            );
        }
        let pid = host_pid(&tag);
        Self { pid, _child: child }
    }

    /// The server's pid in the host's pid namespace.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A path in the server's own `/tmp`, as the host reaches it.
    #[must_use]
    pub fn tmp(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/tmp/{name}", self.pid))
    }

    /// The names in the server's `/tmp`.
    #[must_use]
    pub fn tmp_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp(""))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The host pid of the `java` whose command line holds `tag`.
fn host_pid(tag: &str) -> u32 {
    let deadline = Instant::now() + LINE_TIMEOUT;
    while Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.first().is_some_and(|a| a.ends_with(b"java")) && args.contains(&tag.as_bytes())
            {
                return pid;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("no java process with {tag} in its command line");
}
