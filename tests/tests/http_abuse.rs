//! `--prometheus` under abuse: idle connections past the process's file
//! descriptor limit, request headers sent one byte a second, an `accept`
//! that fails with EMFILE; through each a real scrape answers within
//! [`SCRAPE_WITHIN`] and the rings drain with no loss while connections
//! churn on another port. And `/healthz`, 404 and 405.
//!
//! tcptrace runs inside each test's namespace (`ip netns exec`), limited to
//! it, with `--port` on the churn's port; the test's own connections to the
//! server are made inside the namespace by a thread that enters it
//! ([`Netns::inside`]), and its file descriptor limit is changed from
//! outside with prlimit(2), as `prlimit --pid` does.
//!
//! Needs root; run with `--test-threads=1`.

use std::{
    io::{self, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    EXIT_TIMEOUT, Lab, Metrics, ModeTracer, Peer, is_skipped_runs, lab, scenario::port_of,
    unexplained_losses,
};
use tcptrace::runtime::serve::{FD_RESERVE, HEADER_TIMEOUT, MAX_CONNECTIONS};

/// How long a scrape may take while the server is being abused.
const SCRAPE_WITHIN: Duration = Duration::from_secs(2);
/// The churn's connections: one after the other, this far apart, for
/// longer than any test.
const CHURN_CONNECTIONS: usize = 2000;
const CHURN_PACE_MS: &str = "10";

/// tcptrace `--hist` in `lab`'s namespace serving `/metrics` on `metrics`,
/// tracing `churn`'s port only, reporting every second.
fn start(lab: &Lab, metrics: &str, churn: &str) -> ModeTracer {
    start_every(lab, metrics, churn, "1")
}

/// [`start`], reporting every `interval`.
fn start_every(lab: &Lab, metrics: &str, churn: &str, interval: &str) -> ModeTracer {
    let port = port_of(churn).to_string();
    ModeTracer::start(
        &lab.ns,
        &["-i", interval, "--port", &port, "--prometheus", metrics],
    )
}

/// Connections to `addr` one after the other, [`CHURN_PACE_MS`] apart, each
/// with a request, closed by the client first; killed when dropped.
fn churn(lab: &Lab, addr: &str) -> (Peer, Peer) {
    let n = CHURN_CONNECTIONS.to_string();
    let server = lab.server(&[
        "--addr",
        addr,
        "--connections",
        &n,
        "--read-request",
        "--wait-peer-close",
        "--timeout-ms",
        "120000",
    ]);
    let client = lab.client(&[
        "--addr",
        addr,
        "--connections",
        &n,
        "--send",
        "--one-by-one",
        "--pace-ms",
        CHURN_PACE_MS,
        "--timeout-ms",
        "120000",
    ]);
    (server, client)
}

/// `n` connections to `addr`, made inside `lab`'s namespace; they send
/// nothing.
fn connect(lab: &Lab, addr: &str, n: usize) -> Vec<TcpStream> {
    let addr: SocketAddr = addr.parse().expect("a numeric address");
    lab.ns.inside(move || {
        (0..n)
            .map(|i| {
                TcpStream::connect_timeout(&addr, SCRAPE_WITHIN)
                    .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"))
            })
            .collect()
    })
}

/// `METHOD PATH` on a fresh connection to `addr` in `lab`'s namespace, each
/// step bounded by [`SCRAPE_WITHIN`]: the status code and the body.
fn request(lab: &Lab, addr: &str, method: &str, path: &str) -> io::Result<(u16, String)> {
    let sock: SocketAddr = addr.parse().expect("a numeric address");
    let mut s = lab
        .ns
        .inside(move || TcpStream::connect_timeout(&sock, SCRAPE_WITHIN))?;
    s.set_read_timeout(Some(SCRAPE_WITHIN))?;
    s.set_write_timeout(Some(SCRAPE_WITHIN))?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.take(16 << 20).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no end of headers in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// `GET /metrics`, which must answer 200 within [`SCRAPE_WITHIN`] (`what`:
/// the abuse going on, for the message).
fn scrape(lab: &Lab, addr: &str, what: &str, tracer: &ModeTracer) -> Metrics {
    let started = Instant::now();
    let answer = request(lab, addr, "GET", "/metrics");
    let took = started.elapsed();
    match answer {
        Ok((200, body)) if took < SCRAPE_WITHIN => Metrics::parse(&body),
        other => panic!(
            "GET /metrics with {what}: {:?} after {took:?}, expected 200 within \
             {SCRAPE_WITHIN:?}; stderr:\n{}",
            other.map(|(s, _)| s),
            tracer.stderr()
        ),
    }
}

/// Scrapes (each within [`SCRAPE_WITHIN`]) until the page shows the churn
/// traced (it is refreshed every second), then no loss on it.
fn assert_no_loss(lab: &Lab, addr: &str, what: &str, tracer: &ModeTracer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = scrape(lab, addr, what, tracer);
        let transitions: f64 = (m.matching("tcptrace_transitions_total", &[]).iter())
            .map(|s| s.value)
            .sum();
        if transitions > 0.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the churn is not traced:\n{}",
            m.text
        );
        thread::sleep(Duration::from_millis(200));
    };
    let lost = m.matching("tcptrace_lost_events_total", &[]);
    assert!(!lost.is_empty(), "no loss counters:\n{}", m.text);
    for s in lost {
        let reason = (s.labels.iter()).find_map(|(k, v)| (k == "reason").then_some(v.as_str()));
        assert!(
            s.value == 0.0 || reason.is_some_and(is_skipped_runs),
            "{s:?}:\n{}",
            m.text
        );
    }
}

/// Stop tracer; its exit summary counts no loss but what interrupts cause
/// ([`unexplained_losses`]).
fn assert_clean_stop(tracer: ModeTracer) {
    let run = tracer.terminate(EXIT_TIMEOUT);
    assert!(run.status.success(), "{run}");
    assert_eq!(unexplained_losses(&run.stderr), [], "{run}");
}

/// File descriptors `pid` has open.
fn open_fds(pid: u32) -> u64 {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd");
    dir.count().try_into().expect("small")
}

/// Set `pid`'s soft `RLIMIT_NOFILE` to `soft`; returns the old soft limit.
fn set_nofile(pid: u32, soft: u64) -> u64 {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) reading into a valid rlimit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &raw mut old) };
    assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit(2) from a valid rlimit.
    let rc = unsafe {
        libc::prlimit(
            pid,
            libc::RLIMIT_NOFILE,
            &raw const new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
    old.rlim_cur
}

/// CPU time `pid` has used (utime + stime of `/proc/PID/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let (_, fields) = stat.rsplit_once(')').expect("(comm)");
    // Fields 14 and 15 of stat(5), counted after the comm's field 2.
    let ticks: u64 = (fields.split_whitespace().skip(11).take(2))
        .map(|f| f.parse::<u64>().expect("clock ticks"))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("CLK_TCK");
    Duration::from_millis(ticks * 1000 / hz)
}

/// Idle connections, more than the file descriptors left under a lowered
/// limit: the server keeps its reserve, closes the oldest idle connection
/// for each new one, and a scrape gets in. (A server that holds every idle
/// connection until it times out leaves the scrape behind them in the
/// backlog.)
#[test]
fn idle_connections_past_the_fd_limit_leave_room_for_a_scrape() {
    const METRICS: &str = "127.0.0.1:29901";
    const CHURN: &str = "127.0.0.1:29902";
    /// Descriptors left for the server's connections, past its reserve.
    const SPARE: u64 = 16;
    const IDLE: usize = 100;
    let lab = lab!();
    let tracer = start(&lab, METRICS, CHURN);
    let _churn = churn(&lab, CHURN);
    let pid = tracer.pid();
    let old = set_nofile(pid, open_fds(pid) + FD_RESERVE + SPARE);
    let idle = connect(&lab, METRICS, IDLE);
    thread::sleep(Duration::from_millis(300));
    let what = format!("{IDLE} idle connections and {SPARE} descriptors to spare");
    scrape(&lab, METRICS, &what, &tracer);
    // And again, once more idle connections have come after the first.
    let more = connect(&lab, METRICS, IDLE);
    thread::sleep(Duration::from_millis(300));
    assert_no_loss(&lab, METRICS, &what, &tracer);
    drop((idle, more));
    set_nofile(pid, old);
    assert_clean_stop(tracer);
}

/// Connections that send `GET /metr` and then one byte a second, never
/// ending their headers, more of them than the server's connection cap:
/// scrapes get in all along, and the server closes every slow connection
/// within its header timeout (a server that waits for the headers as long
/// as bytes come keeps them all).
#[test]
fn slow_request_headers_are_cut_off() {
    const METRICS: &str = "127.0.0.1:29911";
    const CHURN: &str = "127.0.0.1:29912";
    const SLOW: usize = MAX_CONNECTIONS + MAX_CONNECTIONS / 2;
    /// Endless: a header line that never ends.
    const TRICKLE: &[u8] = b"ics HTTP/1.1\r\nX-Slow: ";
    let lab = lab!();
    let tracer = start(&lab, METRICS, CHURN);
    let _churn = churn(&lab, CHURN);
    let mut slow = connect(&lab, METRICS, SLOW);
    let connected = Instant::now();
    for s in &mut slow {
        let _ = s.write_all(b"GET /metr");
        s.set_nonblocking(true).expect("nonblocking");
    }
    // When the server closed each one, as this side saw it (a read of EOF
    // or a reset, or a failed write).
    let mut closed: Vec<Option<Duration>> = vec![None; SLOW];
    let deadline = HEADER_TIMEOUT + Duration::from_secs(2);
    let mut second = 0;
    while connected.elapsed() < deadline {
        let byte = TRICKLE.get(second).copied().unwrap_or(b'a');
        for (s, c) in slow.iter_mut().zip(&mut closed) {
            if c.is_none() && (s.write(&[byte]).is_err() || peer_closed(s)) {
                *c = Some(connected.elapsed());
            }
        }
        let what = format!("{SLOW} connections sending a byte a second");
        scrape(&lab, METRICS, &what, &tracer);
        second += 1;
        let next = Duration::from_secs(second.try_into().expect("small"));
        thread::sleep(next.saturating_sub(connected.elapsed()));
    }
    for (s, c) in slow.iter_mut().zip(&mut closed) {
        if c.is_none() && peer_closed(s) {
            *c = Some(connected.elapsed());
        }
    }
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        open, 0,
        "{open} of {SLOW} slow connections still open {deadline:?} after they connected \
         (header timeout {HEADER_TIMEOUT:?}); closed at {closed:?}"
    );
    assert_no_loss(&lab, METRICS, "the slow connections gone", &tracer);
    assert_clean_stop(tracer);
}

/// Whether the server has closed `s` (nonblocking): EOF or a reset, after
/// whatever it answered.
fn peer_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// With no file descriptor left, `accept` fails with EMFILE while
/// connections wait in the backlog: the server backs off (the tracer uses
/// little CPU instead of retrying at once), logs it once, and answers a
/// scrape soon after descriptors are back. The report comes every minute:
/// reading the histograms for a report needs descriptors too, and a
/// report that cannot be made ends the run.
#[test]
fn failing_accept_backs_off_instead_of_spinning() {
    const METRICS: &str = "127.0.0.1:29921";
    const CHURN: &str = "127.0.0.1:29922";
    const MEASURED: Duration = Duration::from_secs(3);
    /// A liveness bound, not a speed test: one core is 100%.
    const MAX_CPU_PERCENT: u128 = 30;
    let lab = lab!();
    let tracer = start_every(&lab, METRICS, CHURN, "60");
    let _churn = churn(&lab, CHURN);
    let pid = tracer.pid();
    // The kernel hands out the lowest free descriptor and refuses one at or
    // past the limit: with stdin, stdout and stderr open, a limit of 3
    // refuses every new one, whatever holes the tracer's leave.
    let old = set_nofile(pid, 3);
    let waiting = connect(&lab, METRICS, 4);
    thread::sleep(Duration::from_millis(500));
    let before = cpu_time(pid);
    thread::sleep(MEASURED);
    let used = cpu_time(pid).saturating_sub(before);
    set_nofile(pid, old);
    let percent = used.as_millis() * 100 / MEASURED.as_millis();
    eprintln!("tcptrace used {used:?} of CPU in {MEASURED:?} while accept failed");
    assert!(
        percent < MAX_CPU_PERCENT,
        "tcptrace used {used:?} of CPU in {MEASURED:?} ({percent}%) while accept failed; \
         stderr:\n{}",
        tracer.stderr()
    );
    let m = scrape(&lab, METRICS, "descriptors just given back", &tracer);
    drop(waiting);
    let stderr = tracer.stderr();
    let warned = stderr.matches("accept failed").count();
    assert_eq!(warned, 1, "one warning for the burst:\n{stderr}");
    // The ring's losses only: while descriptors were out, the tracer's own
    // reads that need one (map lookups for the page) failed, and may be
    // counted as losses of their own.
    let lost = m.int("tcptrace_lost_events_total", &[("reason", "ringbuf_full")]);
    assert_eq!(lost, 0, "{}", m.text);
    let run = tracer.terminate(EXIT_TIMEOUT);
    assert!(run.status.success(), "{run}");
    assert_eq!(
        integration_tests::loss(&run.stderr, "ring-buffer full"),
        0,
        "{run}"
    );
}

/// `/healthz` says the programs are attached and the rings drained;
/// another path is 404, another method 405.
#[test]
fn healthz_and_other_requests() {
    const METRICS: &str = "127.0.0.1:29931";
    const CHURN: &str = "127.0.0.1:29932";
    let lab = lab!();
    let tracer = start(&lab, METRICS, CHURN);
    let get = |method: &str, path: &str| {
        request(&lab, METRICS, method, path)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; stderr:\n{}", tracer.stderr()))
    };
    let (status, body) = get("GET", "/healthz");
    assert_eq!(status, 200, "{body}");
    let programs: u64 = body
        .strip_prefix("ok: ")
        .and_then(|b| b.split_once(" programs attached, events drained "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("/healthz: {body:?}"));
    assert!(programs >= 1, "{body}");
    assert!(body.ends_with(" s ago\n"), "{body:?}");
    assert_eq!(get("GET", "/metrics").0, 200);
    assert_eq!(get("GET", "/").0, 404);
    assert_eq!(get("GET", "/metricsx").0, 404);
    assert_eq!(get("POST", "/metrics").0, 405);
    assert_eq!(get("DELETE", "/healthz").0, 405);
    assert_clean_stop(tracer);
}
