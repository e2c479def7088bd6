//! Filters, each checked against an unfiltered tracer watching the same
//! connection at the same time: the filtered run must print exactly the
//! unfiltered events that match, nothing more, nothing less.
//!
//! Needs root, and the tests share kernel state (tracepoints are global):
//! run with `--test-threads=1`, e.g. `sudo cargo xtask test`, or
//! `cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1`.

use integration_tests::{
    Event, Trace, Tracer, lab,
    scenario::{ActiveClose, Conn, active_close_done, assert_active_close},
};

/// What identifies an event across two tracers (timestamps differ: each
/// program reads the clock itself).
fn key(e: &Event) -> (String, String, u16, u16, String, String, Option<u32>) {
    (
        e.kind().to_owned(),
        e.skaddr().to_owned(),
        e.sport(),
        e.dport(),
        e.old_state().to_owned(),
        e.new_state().to_owned(),
        e.pid(),
    )
}

/// Where a filter applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// In the eBPF programs: dropped events never reach userspace.
    Kernel,
    /// In userspace: every event is received, and the summary counts the
    /// dropped ones as filtered out.
    User,
}

/// Assert that `filtered` printed exactly the events of `all` that `keep`
/// accepts (order across sockets may differ between ring buffers), and that
/// its summary accounts for the others where the filter applies.
fn assert_subset(all: &Trace, filtered: &Trace, side: Side, keep: impl Fn(&Event) -> bool) {
    let mut want: Vec<_> = all.events.iter().filter(|e| keep(e)).map(key).collect();
    let mut got: Vec<_> = filtered.events.iter().map(key).collect();
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "filtered {:?}:\n{filtered}\nunfiltered:\n{all}",
        filtered.args
    );
    let (records, printed, dropped) = filtered.summary_counts();
    assert_eq!(printed, filtered.events.len() as u64, "{}", filtered.stderr);
    match side {
        Side::User => {
            assert_eq!(records, all.events.len() as u64, "{}", filtered.stderr);
            assert_eq!(dropped, records - printed, "{}", filtered.stderr);
        }
        Side::Kernel => {
            assert_eq!(records, printed, "{}", filtered.stderr);
            assert_eq!(dropped, 0, "{}", filtered.stderr);
        }
    }
}

/// Run an [`ActiveClose`] on `addr` under an unfiltered tracer and one tracer
/// per entry of `filtered`; returns the connection and all traces, the
/// unfiltered one first (already checked against the exact lifecycle).
fn traced_active_close(addr: &str, filtered: &[&[&str]], pid_arg: bool) -> (Conn, Vec<Trace>) {
    let lab = lab!();
    let port = addr.rsplit(':').next().expect("a port");
    let sc = ActiveClose::new(&lab, addr);
    let spid = sc.server_pid().to_string();
    let all = Tracer::start(&["--port", port]);
    let others: Vec<Tracer> = filtered
        .iter()
        .map(|args| {
            let mut a = args.to_vec();
            if pid_arg {
                a.extend(["-p", &spid]);
            }
            a.extend(["--port", port]);
            Tracer::start(&a)
        })
        .collect();
    let conn = sc.run();
    all.wait_for(|evs| active_close_done(&conn, evs));
    let mut traces = vec![all.stop()];
    traces.extend(others.into_iter().map(Tracer::stop));
    for t in &traces {
        t.assert_clean_exit();
    }
    assert_active_close(&traces[0], &conn, "ipv4", "127.0.0.1");
    (conn, traces)
}

/// Test 6a: `-p <server pid>` prints only the events whose owner is the
/// server: its listener's two and its child's last three. The child's first
/// two (owner still unknown) and every client event are filtered out.
#[test]
fn pid_filter_shows_only_server_owned_events() {
    let (conn, t) = traced_active_close("127.0.0.1:29201", &[&[]], true);
    let (all, by_pid) = (&t[0], &t[1]);
    let server = Some(conn.server);
    for e in &by_pid.events {
        assert_eq!(e.pid(), server, "-p {} printed {e}", conn.server);
    }
    let mut got: Vec<_> = by_pid
        .events
        .iter()
        .map(|e| (e.sport(), e.dport(), e.old_state(), e.new_state()))
        .collect();
    got.sort_unstable();
    let (p, c) = (conn.port, conn.client_port);
    let mut want = vec![
        (p, 0, "CLOSE", "LISTEN"),
        (p, 0, "LISTEN", "CLOSE"),
        (p, c, "ESTABLISHED", "CLOSE_WAIT"),
        (p, c, "CLOSE_WAIT", "LAST_ACK"),
        (p, c, "LAST_ACK", "CLOSE"),
    ];
    want.sort_unstable();
    assert_eq!(got, want, "-p {}:\n{by_pid}", conn.server);
    assert_subset(all, by_pid, Side::User, |e| e.pid() == server);
}

/// Test 6b: `--state CLOSE_WAIT` prints only the transitions into and out of
/// `CLOSE_WAIT`: the server child's ESTABLISHED -> `CLOSE_WAIT` -> `LAST_ACK`.
#[test]
fn state_filter_shows_only_close_wait_transitions() {
    let (conn, t) = traced_active_close("127.0.0.1:29202", &[&["--state", "CLOSE_WAIT"]], false);
    let (all, by_state) = (&t[0], &t[1]);
    let got: Vec<_> = by_state
        .events
        .iter()
        .map(|e| (e.sport(), e.dport(), e.transition(), e.pid()))
        .collect();
    let (p, c, s) = (conn.port, conn.client_port, Some(conn.server));
    assert_eq!(
        got,
        [
            (p, c, ("ESTABLISHED", "CLOSE_WAIT"), s),
            (p, c, ("CLOSE_WAIT", "LAST_ACK"), s),
        ],
        "--state CLOSE_WAIT:\n{by_state}"
    );
    assert_subset(all, by_state, Side::User, |e| {
        e.old_state() == "CLOSE_WAIT" || e.new_state() == "CLOSE_WAIT"
    });
}

/// `-6` drops IPv4 sockets in the kernel: nothing reaches userspace.
#[test]
fn ipv6_filter_drops_ipv4() {
    let (_, t) = traced_active_close("127.0.0.1:29203", &[&["-6"]], false);
    let v6 = &t[1];
    assert!(v6.events.is_empty(), "-6 printed IPv4 events:\n{v6}");
    assert_eq!(v6.summary_counts(), (0, 0, 0), "{}", v6.stderr);
}

/// `--lport` keeps the server side (listener and child), `--rport` the
/// client side; both are kernel filters, so nothing is filtered in userspace.
#[test]
fn lport_and_rport_filters_pick_a_side() {
    let (conn, t) = traced_active_close(
        "127.0.0.1:29204",
        &[&["--lport", "29204"], &["--rport", "29204"]],
        false,
    );
    let (all, local, remote) = (&t[0], &t[1], &t[2]);
    // The client's CLOSE -> SYN_SENT has local port 0 and remote port 29204.
    assert_subset(all, local, Side::Kernel, |e| e.sport() == conn.port);
    assert_eq!(local.events.len(), 7, "listener 2 + child 5:\n{local}");
    assert_subset(all, remote, Side::Kernel, |e| e.dport() == conn.port);
    assert_eq!(remote.events.len(), 5, "the client's 5:\n{remote}");
}

/// Port lists, as tcpstates takes them: three servers on ports A, B and C
/// in one namespace, each with one connection that the client closes
/// first. `-L A,B` prints the server sides of A and B (listener and child,
/// 7 events each) and nothing of C; `-D` with a full list of
/// `MAX_PORTS` (8) ports, A and B last, prints the client sides of A and B
/// (5 each); `--port A --port C` (repeated) both sides of A and C. All
/// three are kernel filters: nothing is dropped in userspace.
#[test]
fn port_lists_keep_each_listed_port_and_no_other() {
    const PORTS: [u16; 3] = [29205, 29206, 29207];
    let lab = lab!();
    let ns = lab.ns.name();
    let [a, b, c] = PORTS.map(|p| p.to_string());
    let scenarios: Vec<ActiveClose> = PORTS
        .iter()
        .map(|p| ActiveClose::new(&lab, &format!("127.0.0.1:{p}")))
        .collect();
    // Six ports nothing listens on, then B and A: a list of 8, matched at
    // its last entries.
    let remote = format!("29208,29209,29210,29211,29212,29213,{b},{a}");
    let all = Tracer::start(&["--netns", ns]);
    let filtered = [
        Tracer::start(&["--netns", ns, "-L", &format!("{a},{b}")]),
        Tracer::start(&["--netns", ns, "-D", &remote]),
        Tracer::start(&["--netns", ns, "--port", &a, "--port", &c]),
    ];
    let conns: Vec<Conn> = scenarios.into_iter().map(ActiveClose::run).collect();
    all.wait_for(|evs| conns.iter().all(|c| active_close_done(c, evs)));
    let all = all.stop();
    let [local, remote, either] = filtered.map(Tracer::stop);
    for t in [&all, &local, &remote, &either] {
        t.assert_clean_exit();
    }
    // The unfiltered run saw every port's sides, C's included: what the
    // filtered runs lack, they dropped.
    for p in PORTS {
        let server = all.events.iter().filter(|e| e.sport() == p).count();
        let client = all.events.iter().filter(|e| e.dport() == p).count();
        assert_eq!((server, client), (7, 5), "port {p}:\n{all}");
    }
    let [pa, pb, pc] = PORTS;
    assert_subset(&all, &local, Side::Kernel, |e| {
        [pa, pb].contains(&e.sport())
    });
    assert_eq!(local.events.len(), 14, "A's and B's server sides:\n{local}");
    assert_subset(&all, &remote, Side::Kernel, |e| {
        [pa, pb].contains(&e.dport())
    });
    assert_eq!(remote.events.len(), 10, "A's and B's clients:\n{remote}");
    assert_subset(&all, &either, Side::Kernel, |e| {
        [pa, pc].contains(&e.sport()) || [pa, pc].contains(&e.dport())
    });
    assert_eq!(either.events.len(), 24, "both sides of A and C:\n{either}");
}
