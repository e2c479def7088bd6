//! `tcptrace::host::netns` against real network namespaces, as root: one
//! process finds every namespace, reaches each one's sockets, sysctls and
//! netstat from inside it, lets a dead namespace go, and counts what it
//! could not reach. No eBPF: these tests use the library, not the binary.
//! Run with `--test-threads=1` (`sudo cargo xtask test`).

use std::{
    fs,
    io::Read as _,
    net::{TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{ChildGuard, NETNS_PREFIX, Netns as NamedNs, require_root, run_bounded};
use tcptrace::{
    host::{
        netns::{Namespaces, NetnsError},
        netstat,
        sockdiag::Diag,
        sysctl,
    },
    model::netns::{Netns, NetnsSpec},
};
use tcptrace_common::TcpState;

/// The longest any state this file waits for may take.
const SOON: Duration = Duration::from_secs(10);

/// Poll `ok` every 20 ms until it holds; panic after [`SOON`].
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {SOON:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn link_of(pid: u32) -> Option<Netns> {
    let target = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    Netns::from_link(target.to_str()?)
}

fn own() -> Netns {
    link_of(std::process::id()).expect("our own /proc/PID/ns/net")
}

/// The namespace mounted on `/run/netns/NAME`.
fn named(ns: &NamedNs) -> Netns {
    let ino = fs::metadata(Path::new("/run/netns").join(ns.name()))
        .expect("ip netns add made the mount")
        .ino();
    Netns(u32::try_from(ino).expect("namespace inodes fit u32"))
}

fn ip(args: &[&str]) -> bool {
    run_bounded(Command::new("ip").args(args), SOON)
        .status
        .success()
}

/// `ip netns exec NAME sysctl -w KEY=VALUE`.
fn sysctl_in(ns: &NamedNs, key: &str, value: &str) {
    let out = run_bounded(
        Command::new("ip").args([
            "netns",
            "exec",
            ns.name(),
            "sysctl",
            "-w",
            &format!("{key}={value}"),
        ]),
        SOON,
    );
    assert!(out.status.success(), "sysctl {key}: {out:?}");
}

/// A namespace with nothing but processes in it: `unshare -n sh -c SCRIPT`;
/// every process in it is killed on drop, the first one reaped.
struct Unshared {
    child: ChildGuard,
    ns: Netns,
}

impl Unshared {
    /// `sleep 60` alone in a new namespace (`sh` execs it).
    fn sleeper() -> Self {
        Self::run("exec sleep 60")
    }

    fn run(script: &str) -> Self {
        require_root();
        let child = Command::new("unshare")
            .args(["-n", "sh", "-c", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let child = ChildGuard(child);
        let pid = child.id();
        let mut ns = None;
        wait_for("unshare -n entered its namespace", || {
            ns = link_of(pid).filter(|ns| *ns != own());
            ns.is_some()
        });
        Unshared {
            ns: ns.expect("waited for"),
            child,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill and reap the first process: the namespace has no process left
    /// unless the script started more.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every process in the namespace, by a scan of `/proc`.
    fn pids(&self) -> Vec<u32> {
        fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid| link_of(*pid) == Some(self.ns))
            .collect()
    }
}

impl Drop for Unshared {
    fn drop(&mut self) {
        for pid in self.pids() {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) of a process that was in the test's
                // namespace a moment ago.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A socket in CLOSE_WAIT on 127.0.0.1 in the calling thread's namespace:
/// the listener, the server end (its peer closed) and its port.
fn close_wait() -> (TcpListener, TcpStream, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("local address").port();
    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (s, _) = l.accept().expect("accept");
    drop(c);
    (l, s, port)
}

/// Local ports of the CLOSE_WAIT sockets `diag` sees.
fn close_wait_ports(diag: &Diag) -> Vec<u16> {
    let socks = diag.dump(&[TcpState::CloseWait]).expect("sock_diag dump");
    socks.iter().map(|s| s.lport).collect()
}

/// A veth pair whose host end is deleted on drop (if it is still there).
struct Veth(String);

impl Veth {
    /// `vh-N` in tcptrace's namespace, its peer `vc-N` moved into `pid`'s.
    fn into_namespace_of(pid: u32, n: u32) -> Self {
        let host = format!("vh{}-{n}", std::process::id() % 100_000);
        let peer = format!("vc{}-{n}", std::process::id() % 100_000);
        assert!(
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]),
            "ip link add {host}"
        );
        let veth = Veth(host);
        assert!(
            ip(&["link", "set", &peer, "netns", &pid.to_string()]),
            "ip link set {peer} netns {pid}"
        );
        veth
    }

    fn exists(&self) -> bool {
        ip(&["link", "show", "dev", &self.0])
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        if self.exists() {
            let _ = ip(&["link", "del", &self.0]);
        }
    }
}

/// Drop `CAP_SYS_ADMIN` from the calling thread's effective and permitted
/// sets: capabilities are per thread, and threads it starts inherit them.
fn drop_sys_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_ADMIN: u32 = 21;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget(2) with a version 3 header and the two data structs it
    // fills.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_SYS_ADMIN);
    data[0].permitted &= !(1 << CAP_SYS_ADMIN);
    // SAFETY: capset(2) on the calling thread (pid 0) with the sets capget
    // gave, less one capability.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// A namespace made with `ip netns add` is found with its name; one made by
/// `unshare -n` (no name) is found through its process at the next refresh.
#[test]
fn named_and_process_only_namespaces_are_discovered() {
    require_root();
    let named_ns = NamedNs::new();
    let mut n = Namespaces::new().unwrap();
    let blue = named(&named_ns);
    assert!(
        n.alive().any(|ns| ns == blue),
        "{blue} in {:?}",
        n.alive().collect::<Vec<_>>()
    );
    assert_eq!(n.name(blue), Some(named_ns.name()));
    assert_eq!(n.own(), own());
    assert!(n.alive().any(|ns| ns == own()));

    let u = Unshared::sleeper();
    assert!(!n.alive().any(|ns| ns == u.ns), "not before a refresh");
    n.refresh();
    assert!(
        n.alive().any(|ns| ns == u.ns),
        "found through pid {}",
        u.pid()
    );
    assert_eq!(n.name(u.ns), None);
    assert_eq!(n.counts().alive, n.alive().count());
}

/// A CLOSE_WAIT socket inside a namespace is seen through that namespace's
/// socket and not through tcptrace's own, and the other way round.
#[test]
fn sockets_are_seen_only_through_their_namespace() {
    require_root();
    let named_ns = NamedNs::new();
    let mut n = Namespaces::new().unwrap();
    let ns = n
        .resolve(&NetnsSpec::Name(named_ns.name().to_owned()))
        .unwrap();
    let (_l_in, _s_in, port_in) = named_ns.inside(close_wait);
    let (_l_host, _s_host, port_host) = close_wait();

    wait_for("the namespace's CLOSE_WAIT socket", || {
        close_wait_ports(n.diag(ns).unwrap()).contains(&port_in)
    });
    assert!(!close_wait_ports(n.diag(ns).unwrap()).contains(&port_host));
    let here = Diag::here().unwrap();
    wait_for("the host's CLOSE_WAIT socket", || {
        close_wait_ports(&here).contains(&port_host)
    });
    assert!(!close_wait_ports(&here).contains(&port_in));
    let own_ns = n.own();
    assert!(close_wait_ports(n.diag(own_ns).unwrap()).contains(&port_host));
    assert!(!close_wait_ports(n.diag(own_ns).unwrap()).contains(&port_in));
}

/// Sysctls and `TCPTimeWaitOverflow` are the namespace's: a port range set
/// inside shows through `sysctls(ns)` only, and TIME_WAIT sockets refused
/// inside (`tcp_max_tw_buckets=0`) raise the namespace's counter, not the
/// host's.
#[test]
fn sysctls_and_timewait_overflow_are_read_inside_the_namespace() {
    const CLOSED: u64 = 5;
    require_root();
    let named_ns = NamedNs::new();
    sysctl_in(&named_ns, "net.ipv4.ip_local_port_range", "40000 40149");
    sysctl_in(&named_ns, "net.ipv4.tcp_max_tw_buckets", "0");
    let mut n = Namespaces::new().unwrap();
    let ns = named(&named_ns);

    let inner = n.sysctls(ns).unwrap();
    assert_eq!(inner.port_range, Ok((40000, 40149)));
    assert_eq!(inner.max_tw_buckets, Ok(0));
    let host = sysctl::read(Path::new(sysctl::ROOT));
    assert_ne!(host.port_range, Ok((40000, 40149)));
    assert_eq!(n.sysctls(n.own()).unwrap(), host);

    let before_in = n.timewait_overflow(ns).unwrap().expect("netstat inside");
    let before_host = netstat::timewait_overflow().expect("the host's netstat");
    assert_eq!(n.timewait_overflow(n.own()).unwrap(), Some(before_host));
    named_ns.inside(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        for _ in 0..CLOSED {
            // The client closes first: its end would go to TIME_WAIT.
            let c = TcpStream::connect(l.local_addr().expect("address")).expect("connect");
            let (mut s, _) = l.accept().expect("accept");
            drop(c);
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("read to the peer's FIN");
        }
    });
    wait_for("TCPTimeWaitOverflow inside the namespace", || {
        n.timewait_overflow(ns).unwrap().expect("netstat inside") >= before_in + CLOSED
    });
    assert_eq!(netstat::timewait_overflow(), Some(before_host));
}

/// The sock_diag socket tcptrace made inside a namespace is the namespace's
/// last reference once its process is killed: the namespace, and the veth
/// whose peer is in it, stay while the socket is open, and go once a
/// refresh sees no process and closes it. A second namespace, in which no
/// socket was made, loses its veth as soon as its process dies.
#[test]
fn a_dead_namespace_is_let_go_at_the_next_refresh() {
    require_root();
    let mut held = Unshared::sleeper();
    let held_veth = Veth::into_namespace_of(held.pid(), 0);
    let mut control = Unshared::sleeper();
    let control_veth = Veth::into_namespace_of(control.pid(), 1);
    let mut n = Namespaces::new().unwrap();
    n.diag(held.ns).unwrap();
    let closed = n.counts().closed;

    held.kill();
    control.kill();
    wait_for("the veth of a namespace nobody holds goes", || {
        !control_veth.exists()
    });
    thread::sleep(Duration::from_secs(2));
    assert!(held_veth.exists(), "the socket holds the namespace");
    assert!(n.alive().any(|ns| ns == held.ns), "no refresh yet");

    n.refresh();
    assert!(!n.alive().any(|ns| ns == held.ns));
    assert_eq!(n.counts().closed, closed + 1);
    wait_for("the veth goes once the socket is closed", || {
        !held_veth.exists()
    });
}

/// A namespace whose only process exits between a refresh and its use is
/// dropped and counted as vanished; one with two processes is entered
/// through the second when the first has exited, which is counted.
#[test]
fn namespaces_and_processes_that_vanish_are_counted() {
    require_root();
    let mut alone = Unshared::sleeper();
    let pair = Unshared::run("sleep 60 & exec sleep 60");
    let mut pids = Vec::new();
    wait_for("two processes in the namespace", || {
        pids = pair.pids();
        pids.len() == 2
    });
    let mut n = Namespaces::new().unwrap();
    let before = n.counts();

    alone.kill();
    let err = n.diag(alone.ns).unwrap_err();
    assert!(
        matches!(err, NetnsError::Vanished(ns) if ns == alone.ns),
        "{err}"
    );
    assert!(!n.alive().any(|ns| ns == alone.ns));
    let after = n.counts();
    assert_eq!(after.vanished, before.vanished + 1);
    assert_eq!(after.exited, before.exited + 1);

    // The scan keeps pids in /proc order: kill the first.
    let first = *pids.iter().min().expect("two pids");
    // SAFETY: kill(2); the pid was in the namespace a moment ago.
    assert_eq!(
        unsafe { libc::kill(libc::pid_t::try_from(first).unwrap(), libc::SIGKILL) },
        0
    );
    wait_for("the first process left", || link_of(first).is_none());
    n.diag(pair.ns).expect("entered through the second process");
    assert_eq!(n.counts().exited, after.exited + 1);
    assert_eq!(n.counts().vanished, after.vanished);
}

/// A zombie's `/proc/PID/ns/net` cannot be read (it has left its
/// namespaces while `/proc/PID` stays): each is counted as unopenable, and
/// `pid:N` of a zombie says so.
#[test]
fn zombies_links_are_counted_as_unopenable() {
    const ZOMBIES: u64 = 3;
    require_root();
    let mut n = Namespaces::new().unwrap();
    let per_refresh = |n: &mut Namespaces| {
        let before = n.counts().unopenable;
        n.refresh();
        n.counts().unopenable - before
    };
    let without = per_refresh(&mut n);
    let mut zombies: Vec<_> = (0..ZOMBIES)
        .map(|_| Command::new("true").spawn().expect("true"))
        .collect();
    for z in &zombies {
        let stat = format!("/proc/{}/stat", z.id());
        wait_for("a zombie", || {
            fs::read_to_string(&stat).is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
        });
    }
    let with = per_refresh(&mut n);
    let z = zombies[0].id();
    let err = n.resolve(&NetnsSpec::Pid(z)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("process {z} has exited: a zombie is in no network namespace")
    );
    for z in &mut zombies {
        z.wait().expect("reap");
    }
    let reaped = per_refresh(&mut n);
    assert!(
        with >= without + ZOMBIES && reaped + ZOMBIES <= with,
        "unopenable per refresh: {without} before, {with} with {ZOMBIES} zombies, {reaped} after"
    );
}

/// `--netns` names: a `/run/netns` name, `pid:N` and `inode:N` (found by a
/// refresh when it is new), and what each says when it names nothing.
#[test]
fn resolve_names_pids_and_inodes_or_says_what_is_missing() {
    require_root();
    let named_ns = NamedNs::new();
    let mut n = Namespaces::new().unwrap();
    let u = Unshared::sleeper();
    let name = NetnsSpec::Name(named_ns.name().to_owned());
    assert_eq!(n.resolve(&name).unwrap(), named(&named_ns));
    assert_eq!(n.resolve(&NetnsSpec::Inode(u.ns.0)).unwrap(), u.ns);
    assert_eq!(n.resolve(&NetnsSpec::Pid(u.pid())).unwrap(), u.ns);
    assert_eq!(
        n.resolve(&NetnsSpec::Pid(std::process::id())).unwrap(),
        n.own()
    );
    assert!(n.sysctls(u.ns).unwrap().port_range.is_ok());

    let message = |n: &mut Namespaces, spec: NetnsSpec| n.resolve(&spec).unwrap_err().to_string();
    let absent = format!("{NETNS_PREFIX}{}-absent", std::process::id());
    assert_eq!(
        message(&mut n, NetnsSpec::Name(absent.clone())),
        format!("no network namespace /run/netns/{absent}")
    );
    let plain = format!("{NETNS_PREFIX}{}-plain", std::process::id());
    let plain_path = Path::new("/run/netns").join(&plain);
    fs::write(&plain_path, "").unwrap();
    let said = message(&mut n, NetnsSpec::Name(plain.clone()));
    fs::remove_file(&plain_path).unwrap();
    assert_eq!(
        said,
        format!("no network namespace is mounted on /run/netns/{plain}")
    );
    assert_eq!(
        message(&mut n, NetnsSpec::Pid(4_000_000_000)),
        "process 4000000000 does not exist"
    );
    assert_eq!(
        message(&mut n, NetnsSpec::Inode(1)),
        "no process or /run/netns mount is in namespace inode:1"
    );
}

/// Without `CAP_SYS_ADMIN` (dropped on the thread that makes the
/// `Namespaces`, so its entering thread has none either) every other
/// namespace fails with the privilege named, stays tracked, and tcptrace's
/// own namespace answers.
#[test]
fn without_cap_sys_admin_only_the_own_namespace_answers() {
    require_root();
    let named_ns = NamedNs::new();
    let ns = named(&named_ns);
    thread::spawn(move || {
        drop_sys_admin();
        let mut n = Namespaces::new().unwrap();
        let err = n.diag(ns).unwrap_err();
        assert!(matches!(err, NetnsError::Privilege { .. }), "{err:?}");
        assert!(err.to_string().contains("needs CAP_SYS_ADMIN"), "{err}");
        assert!(matches!(n.sysctls(ns), Err(NetnsError::Privilege { .. })));
        assert!(matches!(
            n.timewait_overflow(ns),
            Err(NetnsError::Privilege { .. })
        ));
        assert!(n.alive().any(|a| a == ns), "still tracked");
        let own = n.own();
        n.diag(own).unwrap().dump(&[TcpState::Listen]).unwrap();
        assert!(n.sysctls(own).unwrap().port_range.is_ok());
    })
    .join()
    .expect("the thread without CAP_SYS_ADMIN");
}
