//! Network namespaces: [`Netns`], one per test with `lo` up, deleted on drop,
//! and [`Lab`], a test's namespace with the peers, HTTP scrapes, sysctls and
//! `ss` queries run inside it.

use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{NETNS_PREFIX, peers::Peer, process::run_bounded, require_root, scenario};

fn ip(args: &[&str]) -> Output {
    run_bounded(Command::new("ip").args(args), Duration::from_secs(10))
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Delete namespaces left behind by earlier runs that crashed (their creating
/// process is gone).
fn remove_stale_namespaces() {
    let out = ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A network namespace with `lo` up (127.0.0.1 and `::1`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    #[must_use]
    pub fn new() -> Self {
        static CLEANUP: Once = Once::new();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        CLEANUP.call_once(remove_stale_namespaces);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}{}-{n}", std::process::id());
        ip_ok(&["netns", "add", &name]);
        let ns = Self { name };
        ip_ok(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode, as tcptrace names it (`netns` in JSON and
    /// `/metrics`).
    #[must_use]
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .unwrap_or_else(|e| panic!("stat /run/netns/{}: {e}", self.name))
            .ino()
    }

    /// `args` with `--netns NAME` first: tcptrace limited to this
    /// namespace.
    #[must_use]
    pub fn scoped<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--netns", self.name.as_str()];
        all.extend_from_slice(args);
        all
    }

    /// Run `f` on a thread of its own inside this namespace: the sockets it
    /// makes belong to the namespace. The thread exits afterwards, so it
    /// holds nothing.
    pub fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from(format!("/run/netns/{}", self.name));
        thread::spawn(move || {
            let file = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: setns(2) of this thread into the namespace of an open
            // namespace file.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert!(
                rc == 0,
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            drop(file);
            f()
        })
        .join()
        .expect("the thread inside the namespace")
    }

    /// `ip netns exec NS program`: it execs, so the child's pid is program's.
    #[must_use]
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = ip(&["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A test's namespace and the peer binary to run in it.
pub struct Lab {
    pub ns: Netns,
    peer_bin: PathBuf,
}

/// A [`Lab`] for this test: checks for root, creates a fresh namespace.
/// A macro because `CARGO_BIN_EXE_*` exists only in integration tests.
#[macro_export]
macro_rules! lab {
    () => {
        $crate::Lab::new(env!("CARGO_BIN_EXE_tcptrace-peer"))
    };
}

impl Lab {
    #[must_use]
    pub fn new(peer_bin: &str) -> Self {
        require_root();
        Self {
            ns: Netns::new(),
            peer_bin: PathBuf::from(peer_bin),
        }
    }

    /// Start `tcptrace-peer server ARGS`; returns once it listens, unless
    /// ARGS has `--wait-go` (then call [`Peer::go`] first).
    #[must_use]
    pub fn server(&self, args: &[&str]) -> Peer {
        let mut p = Peer::spawn(&self.ns, &self.peer_bin, "server", args);
        if !args.contains(&"--wait-go") {
            p.wait_line("ready");
        }
        p
    }

    /// Start `tcptrace-peer client ARGS`.
    #[must_use]
    pub fn client(&self, args: &[&str]) -> Peer {
        Peer::spawn(&self.ns, &self.peer_bin, "client", args)
    }

    /// `GET http://ADDR/PATH` from inside the namespace (`tcptrace-peer
    /// scrape`); returns the body. Panics unless the answer is `200 OK`.
    #[must_use]
    pub fn http_get(&self, addr: &str, path: &str) -> String {
        let url = format!("http://{addr}{path}");
        let mut cmd = self.ns.command(&self.peer_bin);
        cmd.args(["scrape", &url]);
        let out = run_bounded(&mut cmd, Duration::from_secs(15));
        assert!(
            out.status.success(),
            "GET {url} in {}: {}; stderr {:?}; body {:?}",
            self.ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("metrics are UTF-8")
    }

    /// `tcptrace-peer fanout IP BASE N`: one connection to each of N ports,
    /// the client closing first, so that N destinations each hold a client
    /// TIME_WAIT socket. Panics unless every connection was made.
    pub fn fanout(&self, ip: &str, base: u16, n: u16) {
        let mut cmd = self.ns.command(&self.peer_bin);
        cmd.args(["fanout", ip, &base.to_string(), &n.to_string()]);
        let out = run_bounded(&mut cmd, Duration::from_mins(1));
        assert!(
            out.status.success(),
            "fanout to {n} ports of {ip}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip netns exec NS sysctl -w KEY=VALUE` (network sysctls are per
    /// namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = run_bounded(
            Command::new("ip").args([
                "netns",
                "exec",
                self.ns.name(),
                "sysctl",
                "-w",
                &format!("{key}={value}"),
            ]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "sysctl -w {key}={value} in {}: {}\n{}",
            self.ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// How many TCP sockets `ss -tan state STATE [FILTER...]` lists in the
    /// namespace.
    #[must_use]
    pub fn ss_count(&self, state: &str, filter: &[&str]) -> usize {
        let out = run_bounded(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    self.ns.name(),
                    "ss",
                    "-Htan",
                    "state",
                    state,
                ])
                .args(filter),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "ss: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// Wait (bounded) until `ss` lists `n` sockets in `state` matching
    /// `filter` in the namespace; panics with what it saw otherwise.
    pub fn wait_ss(&self, state: &str, filter: &[&str], n: usize) {
        let mut seen = 0;
        let deadline = std::time::Instant::now() + crate::patient(Duration::from_secs(10));
        while std::time::Instant::now() < deadline {
            seen = self.ss_count(state, filter);
            if seen == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("expected {n} sockets in {state} ({filter:?}), ss shows {seen}");
    }

    /// The first half of the TIME_WAIT reuse tests: with `tcp_tw_reuse=1`, a
    /// server at `addr` that takes two connections, and a first client from
    /// `bind` that closes first, which leaves one TIME_WAIT socket `bind` ->
    /// `addr` (checked with `ss`). Returns the server, waiting for the second
    /// connection, and when the first one closed (for
    /// [`wait_until_reusable`]).
    #[must_use]
    pub fn timewait_for_reuse(&self, addr: &str, bind: &str) -> (Peer, Instant) {
        self.sysctl("net.ipv4.tcp_tw_reuse", "1");
        let server = self.server(&[
            "--addr",
            addr,
            "--connections",
            "2",
            "--read-request",
            "--wait-peer-close",
            "--timeout-ms",
            "20000",
        ]);
        let first = self.client_from(addr, bind, &[]);
        let closed_at = Instant::now();
        let lines = first.wait_success();
        assert!(lines.iter().any(|l| l == "closed"), "{lines:?}");
        let sport = format!(":{}", scenario::port_of(bind));
        self.wait_ss("time-wait", &["sport", "=", &sport], 1);
        (server, closed_at)
    }

    /// A client bound to `bind` (`SO_REUSEADDR`) that connects to `addr`,
    /// sends the request and closes (`extra`: more client flags); returns
    /// once it is connected, and panics with the kernel's refusal if
    /// `connect()` failed.
    #[must_use]
    pub fn client_from(&self, addr: &str, bind: &str, extra: &[&str]) -> Peer {
        let mut args = vec!["--addr", addr, "--bind", bind, "--send"];
        args.extend_from_slice(extra);
        let mut c = self.client(&args);
        let line = c.wait_line("connect");
        assert!(
            line == format!("connected {bind}"),
            "connect from {bind} (SO_REUSEADDR) to {addr}: {line}"
        );
        c
    }
}

/// `net.ipv4.tcp_tw_reuse_delay`'s default: a TIME_WAIT socket can be reused
/// once its last timestamp is this old.
pub const TW_REUSE_DELAY: Duration = Duration::from_secs(1);

/// Sleep until a TIME_WAIT socket whose connection closed at `closed_at` can
/// be reused ([`TW_REUSE_DELAY`], and half a second of margin).
pub fn wait_until_reusable(closed_at: Instant) {
    let reusable = closed_at + TW_REUSE_DELAY + Duration::from_millis(500);
    thread::sleep(reusable.saturating_duration_since(Instant::now()));
}
