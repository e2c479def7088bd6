//! One tcptrace in the host namespace sees every network namespace and
//! names containers: a CLOSE_WAIT leak older than tcptrace in another
//! namespace; containers in leak groups, stream events and `/metrics`
//! (a cgroup v2 `docker-<id>.scope` made by the test, and a v1-only one);
//! a dead namespace let go; `--netns`; and bad input (a `--netns` naming
//! nothing, a kernel without BTF, unreadable `ns/net` links).
//!
//! Needs root; run with `--test-threads=1` (the tests share kernel state).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    LeakReport, LeakTracer, LeakyServerBin, Metrics, Netns, Tracer, lab, promtool_check,
    run_bounded,
};

/// How long a test waits for the report or event it expects.
const WAIT: Duration = Duration::from_secs(15);

/// The inode of a namespace made by `ip netns add`.
fn inode(ns: &Netns) -> u64 {
    std::fs::metadata(format!("/run/netns/{}", ns.name()))
        .expect("the namespace's /run/netns mount")
        .ino()
}

/// The first mount point in this process's mountinfo of a file system of
/// type `fstype` whose super options include `option` (any, when `None`).
fn mount_point(fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split_whitespace();
        let fs = post.next() == Some(fstype);
        let opt = option.is_none_or(|o| post.nth(1).is_some_and(|s| s.split(',').any(|x| x == o)));
        let mount = pre.split_whitespace().nth(4)?;
        (fs && opt).then(|| PathBuf::from(mount))
    })
}

/// The cgroup2 mount, from this process's mountinfo.
fn cgroup2_mount() -> PathBuf {
    mount_point("cgroup2", None).expect("a cgroup2 mount (the container tests need one)")
}

/// A cgroup v1 hierarchy: this machine's `pids` one, or where a kernel
/// booted with cgroup v2 alone has none, a named hierarchy the test mounts
/// (and unmounts on drop). tcptrace reads any v1 line of `/proc/PID/cgroup`.
struct V1Hierarchy {
    root: PathBuf,
    mounted: Option<integration_tests::TempDir>,
}

impl V1Hierarchy {
    fn new() -> Self {
        if let Some(root) = mount_point("cgroup", Some("pids")) {
            return V1Hierarchy {
                root,
                mounted: None,
            };
        }
        let dir = integration_tests::TempDir::new("cgroup-v1");
        let out = run_bounded(
            Command::new("mount")
                .args(["-t", "cgroup", "-o", "none,name=tcptrace-it", "cgroup"])
                .arg(dir.path()),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "mounting a named cgroup v1 hierarchy (no v1 pids one here): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        V1Hierarchy {
            root: dir.path().to_path_buf(),
            mounted: Some(dir),
        }
    }
}

impl Drop for V1Hierarchy {
    fn drop(&mut self) {
        if self.mounted.is_some() {
            let _ = run_bounded(
                Command::new("umount").arg(&self.root),
                Duration::from_secs(10),
            );
        }
    }
}

/// A cgroup made by the test that looks like a container's, removed on
/// drop (once its processes have left or exited).
struct FakeContainer {
    /// The directories made, innermost last.
    dirs: Vec<PathBuf>,
    id: String,
}

impl FakeContainer {
    /// `<root>/tcptrace-it-<pid>/<leaf(id)>`.
    fn new(root: &Path, leaf: impl Fn(&str) -> String) -> Self {
        let id = format!(
            "{:0>64x}",
            (u128::from(std::process::id()) << 64) | 0x00c0_ffee
        );
        let outer = root.join(format!("tcptrace-it-{}", std::process::id()));
        let inner = outer.join(leaf(&id));
        std::fs::create_dir_all(&inner)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", inner.display()));
        FakeContainer {
            dirs: vec![outer, inner],
            id,
        }
    }

    /// Move process `pid` into it.
    fn enter(&self, pid: u32) {
        let procs = self.dirs[1].join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("writing {pid} to {}: {e}", procs.display()));
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        // rmdir fails while a process is in it: give exiting ones a moment.
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Every group of `pid` in `reports` ([`LeakReport::of_pid`] of each).
fn groups_of(reports: &[LeakReport], pid: u32) -> Vec<integration_tests::LeakGroup> {
    reports
        .iter()
        .flat_map(|r| r.of_pid(pid))
        .cloned()
        .collect()
}

/// `GET /metrics` from tcptrace's endpoint on the host's loopback.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// `/metrics` once `done` accepts it, or the last page after [`WAIT`] (times
/// `TCPTRACE_TEST_SLOWDOWN`).
fn scrape_until(port: u16, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + integration_tests::patient(WAIT);
    loop {
        let page = scrape(port);
        if done(&page) || Instant::now() >= deadline {
            return page;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// `n` clients that send more than the leaky server reads, then close:
/// their sockets stay in CLOSE_WAIT with data unread.
fn leak(lab: &integration_tests::Lab, port: u16, n: usize) {
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..n {
        let lines = lab
            .client(&["--addr", &addr, "--send", "--send-bytes", "1000"])
            .wait_success();
        assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
    }
    let filter = format!("sport = :{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.ss_count("close-wait", &[&filter]) < n {
        assert!(
            Instant::now() < deadline,
            "{n} CLOSE_WAIT sockets on {port}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_leak_older_than_tcptrace_in_another_namespace_names_its_owner_and_namespace() {
    const PORT: u16 = 31_201;
    let bin = LeakyServerBin::build();
    let lab = lab!();
    let server = bin.start(&lab.ns, PORT, 30);
    // The noread handler is on PORT + 1.
    leak(&lab, PORT + 1, 3);
    let host_ss = run_bounded(
        Command::new("ss").args([
            "-Htn",
            "state",
            "close-wait",
            &format!("sport = :{}", PORT + 1),
        ]),
        Duration::from_secs(5),
    );
    assert!(
        String::from_utf8_lossy(&host_ss.stdout).trim().is_empty(),
        "the leak is in the test's namespace, not the host's"
    );

    let port = (PORT + 1).to_string();
    let tracer = LeakTracer::start_host(&["--json", "--min-age", "1s", "-i", "1", "--port", &port]);
    let found = tracer.wait_for_report(WAIT, |r: &LeakReport| !r.of_pid(server.pid()).is_empty());
    let run = tracer.stop();
    assert!(
        found.is_some(),
        "no group of pid {} in:\n{run}",
        server.pid()
    );
    let groups = groups_of(&run.reports(), server.pid());
    for g in &groups {
        assert_eq!(g.netns(), Some(inode(&lab.ns)), "{g}");
        assert_eq!(g.count(), 3, "{g}");
        assert!(g.age_lower_bound(), "older than tcptrace: {g}");
    }
    run.assert_clean_exit();
}

/// Leak groups and `/metrics` name the container of a leaking server that
/// the test placed in `cgroup`: a v2 `docker-<id>.scope`, or (`v1`) a
/// `/docker/<id>` directory of the v1 `pids` hierarchy with the server in
/// the v2 root, as a runtime that uses only v1 hierarchies leaves it.
fn container_is_named_in_leak_groups_and_metrics(port: u16, v1: bool) {
    const METRICS: u16 = 31_299;
    let bin = LeakyServerBin::build();
    let lab = lab!();
    // Declared before the container, so dropped after it.
    let v1_root = v1.then(V1Hierarchy::new);
    let container = if let Some(h) = &v1_root {
        FakeContainer::new(&h.root, |id| format!("docker/{id}"))
    } else {
        FakeContainer::new(&cgroup2_mount(), |id| format!("docker-{id}.scope"))
    };
    let server = bin.start(&lab.ns, port, 30);
    container.enter(server.pid());
    if v1 {
        // The v2 id is the root's, as for every process a v1-only runtime
        // places.
        std::fs::write(
            cgroup2_mount().join("cgroup.procs"),
            server.pid().to_string(),
        )
        .expect("move to the v2 root");
    }
    let metrics = format!("127.0.0.1:{METRICS}");
    let noread = (port + 1).to_string();
    // /metrics comes with --hist (the leak gauges ride along).
    let tracer = LeakTracer::start_host(&[
        "--hist",
        "--json",
        "--min-age",
        "1s",
        "-i",
        "1",
        "--port",
        &noread,
        "--prometheus",
        &metrics,
    ]);
    // --container keeps the groups of the container its prefix names only.
    let short = &container.id[..12];
    let leak_args = |filter: &'static str, value: &str| {
        LeakTracer::start_host(&[
            "--json",
            "--min-age",
            "1s",
            "-i",
            "1",
            "--port",
            &noread,
            filter,
            value,
        ])
    };
    let kept = leak_args("--container", short);
    let dropped = leak_args("--container", "ffff0000");
    leak(&lab, port + 1, 2);
    let found = tracer.wait_for_report(WAIT, |r: &LeakReport| !r.of_pid(server.pid()).is_empty());
    let kept_found =
        kept.wait_for_report(WAIT, |r: &LeakReport| !r.of_pid(server.pid()).is_empty());
    let (kept, dropped) = (kept.stop(), dropped.stop());
    assert!(kept_found.is_some(), "--container {short}:\n{kept}");
    assert!(
        dropped
            .reports()
            .iter()
            .all(|r| r.of_pid(server.pid()).is_empty()),
        "--container ffff0000:\n{dropped}"
    );
    let ns = inode(&lab.ns).to_string();
    let labels = [
        ("comm", "leaky_server"),
        ("container", container.id.as_str()),
        ("netns", ns.as_str()),
    ];
    // The gauge follows the reports: the first to find the leak may hold
    // one socket only, the second not yet past --min-age.
    let page = scrape_until(METRICS, |page| {
        Metrics::parse(page).get("tcptrace_closewait_leaked_sockets", &labels) == Some(2.0)
    });
    let run = tracer.stop();
    assert!(found.is_some(), "no group of pid {}:\n{run}", server.pid());
    let groups = groups_of(&run.reports(), server.pid());
    for g in &groups {
        assert_eq!(g.container_id(), Some(container.id.as_str()), "{g}");
        assert_eq!(g.netns(), Some(inode(&lab.ns)), "{g}");
    }
    promtool_check(&page);
    let m = Metrics::parse(&page);
    assert_eq!(
        m.int("tcptrace_closewait_leaked_sockets", &labels),
        2,
        "{page}"
    );
    assert!(
        m.get("tcptrace_closewait_oldest_leak_seconds", &labels)
            .unwrap_or(0.0)
            > 0.0,
        "{page}"
    );
    run.assert_clean_exit();
}

#[test]
fn a_container_is_named_in_leak_groups_and_metrics() {
    container_is_named_in_leak_groups_and_metrics(31_211, false);
}

#[test]
fn a_container_of_v1_hierarchies_only_is_named_too() {
    container_is_named_in_leak_groups_and_metrics(31_221, true);
}

/// The stream names the container of an owner from the cgroup id the
/// kernel noted: the client has exited before its events are printed
/// (tcptrace is stopped with SIGSTOP while it runs), so `/proc` cannot.
#[test]
fn a_stream_event_names_the_container_of_an_owner_that_has_exited() {
    const PORT: u16 = 31_231;
    let lab = lab!();
    let container = FakeContainer::new(&cgroup2_mount(), |id| format!("docker-{id}.scope"));
    let addr = format!("127.0.0.1:{PORT}");
    let _server = lab.server(&["--addr", &addr, "--read-request"]);
    let port = PORT.to_string();
    let tracer = Tracer::start(&["--port", &port]);
    let mut client = lab.client(&["--addr", &addr, "--send", "--wait-go"]);
    let client_pid = client.pid();
    container.enter(client_pid);
    let tcptrace = libc::pid_t::try_from(tracer.pid()).expect("a pid");
    // SAFETY: kill(2) of the tracer this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(tcptrace, libc::SIGSTOP) }, 0);
    client.go();
    let lines = client.wait_success();
    assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
    assert!(
        !Path::new(&format!("/proc/{client_pid}")).exists(),
        "the client has exited before tcptrace prints"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(tcptrace, libc::SIGCONT) }, 0);
    let ns = inode(&lab.ns);
    let seen = tracer.wait_for(|evs| {
        evs.iter()
            .any(|e| e.pid() == Some(client_pid) && e.container().is_some())
    });
    let trace = tracer.stop();
    assert!(
        seen,
        "no event of client {client_pid} with a container:\n{trace}"
    );
    let mine: Vec<_> = trace
        .events
        .iter()
        .filter(|e| e.pid() == Some(client_pid))
        .collect();
    assert!(!mine.is_empty(), "{trace}");
    for e in mine {
        assert_eq!(e.container(), Some(container.id.as_str()), "{e:?}");
        assert_eq!(e.netns(), Some(ns), "{e:?}");
    }
}

/// `ip link show DEV` succeeds.
fn link_exists(dev: &str) -> bool {
    run_bounded(
        Command::new("ip").args(["link", "show", dev]),
        Duration::from_secs(5),
    )
    .status
    .success()
}

/// A namespace whose only process is tcptrace's start-up find, with the
/// peer of a veth pair in it: tcptrace makes a sock_diag socket there at
/// start-up (the leak seed), which would keep the namespace, and the host
/// end of the veth, alive for ever; once its process exits, the next
/// refresh lets it go and the veth disappears.
#[test]
fn a_namespace_whose_last_process_exits_is_let_go_while_tcptrace_runs() {
    let host_end = format!("vh-it{}", std::process::id() % 100_000);
    let inner_end = format!("vc-it{}", std::process::id() % 100_000);
    let mut sleeper = integration_tests::ChildGuard(
        Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .spawn()
            .expect("unshare -n sleep"),
    );
    let pid = sleeper.0.id().to_string();
    // unshare execs sleep once the namespace exists.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
        == std::fs::read_link("/proc/self/ns/net").ok()
    {
        assert!(Instant::now() < deadline, "unshare made no namespace");
        thread::sleep(Duration::from_millis(20));
    }
    let ip = |args: &[&str]| {
        let out = run_bounded(Command::new("ip").args(args), Duration::from_secs(5));
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", &inner_end,
    ]);
    ip(&["link", "set", &inner_end, "netns", &pid]);
    assert!(link_exists(&host_end));

    let tracer = LeakTracer::start_host(&["--json", "--min-age", "1h", "-i", "1", "--port", "1"]);
    sleeper.0.kill().expect("kill the namespace's last process");
    let _ = sleeper.0.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while link_exists(&host_end) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let gone = !link_exists(&host_end);
    let run = tracer.stop();
    if !gone {
        ip(&["link", "del", &host_end]);
    }
    assert!(
        gone,
        "{host_end} outlived its namespace's last process:\n{run}"
    );
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("tcptrace: network namespaces:"))
        .unwrap_or_else(|| panic!("no namespaces line:\n{run}"));
    assert!(
        integration_tests::number_before(line, " let go") >= 1,
        "{line}"
    );
}

/// `--netns` keeps one namespace's events and leaks and drops another's
/// on the same port.
#[test]
fn netns_limits_the_stream_and_leaks_to_one_namespace() {
    const PORT: u16 = 31_241;
    let bin = LeakyServerBin::build();
    let (a, b) = (lab!(), lab!());
    let (server_a, server_b) = (bin.start(&a.ns, PORT, 30), bin.start(&b.ns, PORT, 30));
    let port = (PORT + 1).to_string();
    let stream = Tracer::start(&["--netns", b.ns.name(), "--port", &port]);
    let leaks = LeakTracer::start_host(&[
        "--netns",
        b.ns.name(),
        "--json",
        "--min-age",
        "1s",
        "-i",
        "1",
        "--port",
        &port,
    ]);
    leak(&a, PORT + 1, 2);
    leak(&b, PORT + 1, 2);
    let found = leaks.wait_for_report(WAIT, |r: &LeakReport| !r.of_pid(server_b.pid()).is_empty());
    // B's events: its clients' (the server's own may have no owner yet:
    // its CLOSE_WAIT can come before its first recv names it).
    let b_inode = inode(&b.ns);
    let b_events = stream.wait_for(|evs| evs.iter().any(|e| e.netns() == Some(b_inode)));
    let (leaks, stream) = (leaks.stop(), stream.stop());
    assert!(
        found.is_some() && b_events,
        "B's leak and events:\n{leaks}\n{stream}"
    );
    assert!(
        stream.events.iter().all(|e| e.netns() == Some(b_inode)),
        "only B's events:\n{stream}"
    );
    let groups: Vec<_> = leaks.reports().into_iter().flat_map(|r| r.groups).collect();
    assert!(groups.iter().all(|g| g.netns() == Some(b_inode)), "{leaks}");
    assert!(
        groups.iter().all(|g| g.pid() != Some(server_a.pid())),
        "A's leak is not B's:\n{leaks}"
    );
}

/// A `--netns` that names nothing is an error that says what is missing,
/// before anything is loaded.
#[test]
fn a_netns_naming_nothing_is_a_clear_error() {
    integration_tests::require_root();
    for (spec, want) in [
        (
            "tcptrace-it-none",
            "no network namespace /run/netns/tcptrace-it-none",
        ),
        ("pid:4000000000", "process 4000000000 does not exist"),
        (
            "inode:1",
            "no process or /run/netns mount is in namespace inode:1",
        ),
    ] {
        let out = run_bounded(
            Command::new(integration_tests::tracer_bin()).args(["--netns", spec, "-d", "1"]),
            Duration::from_secs(20),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--netns {spec}: {err}");
        assert!(
            err.contains(&format!("--netns {spec}")) && err.contains(want),
            "--netns {spec}: {err}"
        );
        assert!(!err.contains("tracing"), "nothing was loaded: {err}");
    }
}

/// Without the kernel's BTF (`TCPTRACE_BTF` names a file that is not
/// there), tcptrace says so once and traces on, every event without a
/// namespace; `--netns`, which needs it, is an error.
#[test]
fn a_kernel_without_btf_is_named_once_and_tracing_goes_on() {
    const PORT: u16 = 31_251;
    let lab = lab!();
    let addr = format!("127.0.0.1:{PORT}");
    let _server = lab.server(&["--addr", &addr, "--read-request"]);
    let port = PORT.to_string();
    let missing = "/nonexistent/tcptrace-it-btf";
    let tracer = Tracer::start_env(&[("TCPTRACE_BTF", missing)], &["--port", &port]);
    let lines = lab.client(&["--addr", &addr, "--send"]).wait_success();
    assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
    let seen = tracer.wait_for(|evs| evs.iter().any(|e| e.dport() == PORT));
    let trace = tracer.stop();
    assert!(seen, "events go on without BTF:\n{trace}");
    assert!(trace.events.iter().all(|e| e.netns().is_none()), "{trace}");
    assert_eq!(
        trace.stderr.matches(missing).count(),
        1,
        "named once:\n{}",
        trace.stderr
    );
    let out = run_bounded(
        Command::new(integration_tests::tracer_bin())
            .env("TCPTRACE_BTF", missing)
            .args(["--netns", lab.ns.name(), "-d", "1"]),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--netns needs") && err.contains(missing),
        "{err}"
    );
}

/// `--hist --by container`: the kernel splits dwells by namespace, and the
/// report names each namespace by the container of a process in it.
#[test]
fn hist_by_container_names_each_namespace_by_its_container() {
    const PORT: u16 = 31_261;
    let lab = lab!();
    let container = FakeContainer::new(&cgroup2_mount(), |id| format!("docker-{id}.scope"));
    let addr = format!("127.0.0.1:{PORT}");
    let server = lab.server(&["--addr", &addr, "--read-request", "--connections", "3"]);
    container.enter(server.pid());
    // The server exits after its connections: a process that stays in the
    // namespace and the container names it at every report.
    let mut stays = integration_tests::ChildGuard(
        lab.ns
            .command(Path::new("/bin/sleep"))
            .arg("60")
            .spawn()
            .expect("sleep in the namespace"),
    );
    container.enter(stays.0.id());
    let port = PORT.to_string();
    let tracer = integration_tests::ModeTracer::start_with(
        Command::new(integration_tests::tracer_bin()),
        "--hist",
        &["--by", "container", "--json", "-i", "1", "--port", &port],
    );
    let lines = lab
        .client(&["--addr", &addr, "--send", "--connections", "3"])
        .wait_success();
    assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
    let named = tracer.wait_for_report(WAIT, |r| {
        r.groups("ESTABLISHED").contains_key(container.id.as_str())
    });
    let run = tracer.stop();
    assert!(
        named.is_some(),
        "no ESTABLISHED group named {}:\n{run}",
        container.id
    );
    let report = named.expect("checked");
    let g = report.groups("ESTABLISHED")[container.id.as_str()];
    assert_eq!(g.by(), Some("container"), "{run}");
    assert!(g.count() >= 3, "the server's and clients' sockets: {run}");
    let _ = stays.0.kill();
}
