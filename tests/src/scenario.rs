//! Connection scenarios shared by several tests, and the exact events
//! tcptrace must print for them.

use std::time::Duration;

use crate::{Event, Lab, Peer, Trace};

/// How long the server waits between the client's FIN and its own `close()`:
/// the lower bound of the `CLOSE_WAIT` dwell.
pub const CLOSE_DELAY: Duration = Duration::from_millis(200);
/// A generous upper bound for that dwell on a loaded machine.
pub const DWELL_CEILING: Duration = Duration::from_secs(5);
/// What the peers of an [`ActiveClose`] call themselves once done.
pub const RENAMED: &str = "renamed-peer";

/// The two processes of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub server: u32,
    pub client: u32,
    /// The client's local (ephemeral) port.
    pub client_port: u16,
    /// The server's listening port.
    pub port: u16,
}

/// The port of an `IP:PORT` or `[IP6]:PORT` address.
#[must_use]
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// Client C closes first: C connects and sends a request; server S reads it
/// and replies; C reads the reply (so S has done I/O on its socket before any
/// FIN) and closes; S reads EOF, waits [`CLOSE_DELAY`], closes, and closes its
/// listener.
///
/// The server is started (and its pid known) before the tracer, but it only
/// listens once [`ActiveClose::run`] gives it the go-ahead, so a tracer started
/// in between sees the whole story, from `CLOSE -> LISTEN`.
///
/// Both peers rename themselves [`RENAMED`] once their sockets are closed:
/// a comm read from /proc when the records are printed, rather than the
/// comm tcptrace noted at the transitions, shows up as that name (or as
/// none, once the peer has exited).
pub struct ActiveClose<'a> {
    lab: &'a Lab,
    addr: String,
    server: Peer,
}

impl<'a> ActiveClose<'a> {
    #[must_use]
    pub fn new(lab: &'a Lab, addr: &str) -> Self {
        let delay = CLOSE_DELAY.as_millis().to_string();
        // The go-ahead may come after tcptrace runs (two, in some tests)
        // have loaded, each within READY_TIMEOUT: the peer waits as long.
        let server = lab.server(&[
            "--timeout-ms",
            "60000",
            "--addr",
            addr,
            "--wait-go",
            "--read-request",
            "--reply",
            "--wait-peer-close",
            "--close-delay-ms",
            &delay,
            "--rename-when-done",
            RENAMED,
        ]);
        Self {
            lab,
            addr: addr.to_owned(),
            server,
        }
    }

    /// The server's pid, known before it listens.
    #[must_use]
    pub fn server_pid(&self) -> u32 {
        self.server.pid()
    }

    /// Run the connection to its end; both processes have exited on return.
    #[must_use]
    pub fn run(mut self) -> Conn {
        self.server.go();
        self.server.wait_line("ready");
        let mut client = self.lab.client(&[
            "--addr",
            &self.addr,
            "--send",
            "--read-reply",
            "--rename-when-done",
            RENAMED,
        ]);
        let client_port = local_port(&client.wait_line("connected "));
        let conn = Conn {
            server: self.server.pid(),
            client: client.pid(),
            client_port,
            port: port_of(&self.addr),
        };
        let renamed = format!("renamed {RENAMED}");
        let lines = client.wait_success();
        assert!(lines.iter().any(|l| l == "reply"), "client: {lines:?}");
        assert!(lines.contains(&renamed), "client: {lines:?}");
        let lines = self.server.wait_success();
        assert!(
            lines.iter().any(|l| l == "peer-closed"),
            "server: {lines:?}"
        );
        assert!(lines.contains(&renamed), "server: {lines:?}");
        conn
    }
}

/// The port of a `connected IP:PORT` line.
#[must_use]
pub fn local_port(line: &str) -> u16 {
    port_of(line.trim_start_matches("connected "))
}

/// Whether the last transitions of an [`ActiveClose`] have been printed.
#[must_use]
pub fn active_close_done(c: &Conn, events: &[Event]) -> bool {
    let has = |sport: u16, dport: u16, old: &str, new: &str| {
        events.iter().any(|e| {
            e.is_state() && e.sport() == sport && e.dport() == dport && e.transition() == (old, new)
        })
    };
    has(c.client_port, c.port, "FIN_WAIT2", "CLOSE")
        && has(c.port, c.client_port, "LAST_ACK", "CLOSE")
        && has(c.port, 0, "LISTEN", "CLOSE")
}

/// The exact events of an [`ActiveClose`] on `family` (`ipv4`/`ipv6`) over
/// `ip` (`127.0.0.1`/`::1`).
pub fn assert_active_close(t: &Trace, c: &Conn, family: &str, ip: &str) {
    let (s, cl) = (Some(c.server), Some(c.client));

    let client = t.socket("client", |k| k.has_ports(c.client_port, c.port));
    client.assert_transitions(
        "client",
        &[
            ("CLOSE", "SYN_SENT"),
            ("SYN_SENT", "ESTABLISHED"),
            ("ESTABLISHED", "FIN_WAIT1"),
            ("FIN_WAIT1", "FIN_WAIT2"),
            ("FIN_WAIT2", "CLOSE"),
        ],
    );
    // Every transition names the client, including those that ran in softirq
    // in the server's context (SYN_SENT -> ESTABLISHED, FIN_WAIT2 -> CLOSE).
    client.assert_pids("client", &[cl; 5]);

    let child = t.socket("server child", |k| k.has_ports(c.port, c.client_port));
    child.assert_transitions(
        "server child",
        &[
            ("LISTEN", "SYN_RECV"),
            ("SYN_RECV", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE_WAIT"),
            ("CLOSE_WAIT", "LAST_ACK"),
            ("LAST_ACK", "CLOSE"),
        ],
    );
    // Unknown until the server's first recv; ESTABLISHED -> CLOSE_WAIT runs
    // in the client's context on loopback and must still name the server.
    child.assert_pids("server child", &[None, None, s, s, s]);
    assert_eq!(child.events[2].owner_source(), "io", "{child}");
    assert_eq!(child.events[3].owner_source(), "syscall", "{child}");

    let listener = t.socket("listener", |k| k.is_listener_on(c.port));
    listener.assert_transitions("listener", &[("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")]);
    listener.assert_pids("listener", &[s, s]);

    for sock in [&client, &child, &listener] {
        assert_eq!(
            sock.events[0].dwell(),
            None,
            "a socket's first dwell is unknown:\n{sock}"
        );
        for e in &sock.events[1..] {
            assert!(
                e.dwell().is_some(),
                "dwell known after the first transition:\n{sock}"
            );
        }
        for e in &sock.events {
            assert_eq!(e.family(), family, "{e}");
            assert_eq!(e.saddr(), ip, "{e}");
            // The comm at the transition, from the comm cache: the peers
            // renamed themselves (RENAMED) right after their last close.
            if e.pid().is_some() {
                assert_eq!(e.comm(), Some("tcptrace-peer"), "{e}");
            }
        }
    }
    // Every socket but the listener has the peer's address, except the
    // child's first transition before Linux 6.2x: the kernel sets the
    // child's state (LISTEN -> SYN_RECV) while the child still holds the
    // listener's clone of the remote address, `0.0.0.0:0` or `[::]:0`.
    for e in client.events.iter().chain(&child.events) {
        if e.transition() == ("LISTEN", "SYN_RECV") && e.dport() == 0 {
            assert_eq!(
                e.daddr(),
                if ip.contains(':') { "::" } else { "0.0.0.0" },
                "{e}"
            );
        } else {
            assert_eq!(e.daddr(), ip, "{e}");
        }
    }

    let dwell = child
        .event("CLOSE_WAIT", "LAST_ACK")
        .dwell()
        .expect("checked above");
    assert!(
        dwell >= CLOSE_DELAY && dwell < DWELL_CEILING,
        "CLOSE_WAIT lasted {dwell:?}: the server closed {CLOSE_DELAY:?} after EOF\n{child}"
    );

    assert_eq!(t.resets().count(), 0, "an orderly close sends no RST:\n{t}");
    assert_eq!(t.sockets().len(), 3, "only these three sockets:\n{t}");
}

/// How the clients of [`active_closes`] connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clients {
    /// All at once, one thread each.
    AtOnce,
    /// One after the other, each closed before the next connects. (The
    /// server still serves them concurrently.)
    OneByOne,
}

/// `n` connections to one `tcptrace-peer server --connections n` on `addr`,
/// from one `tcptrace-peer client --connections n`: each client sends the
/// request and closes first; the server reads the request, reads EOF, waits
/// `close_delay` (each connection in a thread of its own, so each close is
/// `close_delay` after its own EOF) and closes, then closes its listener.
/// Both processes have exited on return; returns the clients' local ports
/// (distinct).
///
/// The clients end in TIME_WAIT (they closed first).
#[must_use]
pub fn active_closes(
    lab: &Lab,
    addr: &str,
    n: usize,
    close_delay: Duration,
    clients: Clients,
) -> Vec<u16> {
    active_closes_timed(lab, addr, n, close_delay, clients).ports
}

/// What [`active_closes_timed`] saw.
pub struct ActiveCloses {
    /// The clients' local ports, sorted.
    pub ports: Vec<u16>,
    /// Per connection, from the client's `close()` call to the return of the
    /// server's: each server socket's CLOSE_WAIT lies within it.
    pub close_wait_bounds: Vec<Duration>,
}

/// [`active_closes`], with the bound of each CLOSE_WAIT from both peers'
/// CLOCK_MONOTONIC readings (`--timestamps`).
#[must_use]
pub fn active_closes_timed(
    lab: &Lab,
    addr: &str,
    n: usize,
    close_delay: Duration,
    clients: Clients,
) -> ActiveCloses {
    let count = n.to_string();
    let delay = close_delay.as_millis().to_string();
    let server = lab.server(&[
        "--addr",
        addr,
        "--connections",
        &count,
        "--read-request",
        "--wait-peer-close",
        "--close-delay-ms",
        &delay,
        "--timeout-ms",
        "20000",
        "--timestamps",
    ]);
    let mut args = vec![
        "--addr",
        addr,
        "--connections",
        &count,
        "--send",
        "--timeout-ms",
        "20000",
        "--timestamps",
    ];
    if clients == Clients::OneByOne && n > 1 {
        args.push("--one-by-one");
    }
    let client = lab.client(&args);
    let lines = client.wait_success();
    let mut ports: Vec<u16> = lines
        .iter()
        .filter(|l| l.starts_with("connected "))
        .map(|l| local_port(l))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), n, "{n} distinct client ports: {lines:?}");
    let closed = lines.iter().filter(|l| *l == "closed").count();
    assert_eq!(closed, n, "every client closed: {lines:?}");
    let closing = stamps(&lines, "closing ");
    let lines = server.wait_success();
    let eofs = lines.iter().filter(|l| *l == "peer-closed").count();
    assert_eq!(
        eofs, n,
        "the server read EOF on every connection: {lines:?}"
    );
    let closed_at = stamps(&lines, "closed-at ");
    let close_wait_bounds = ports
        .iter()
        .map(|p| {
            let (Some(&from), Some(&to)) = (closing.get(p), closed_at.get(p)) else {
                panic!("no close timestamps of port {p}: {closing:?} {closed_at:?}");
            };
            let ns = to.checked_sub(from).unwrap_or_else(|| {
                panic!("port {p}: the server closed before the client: {from} > {to}")
            });
            Duration::from_nanos(u64::try_from(ns).expect("under 584 years"))
        })
        .collect();
    ActiveCloses {
        ports,
        close_wait_bounds,
    }
}

/// `PREFIX<port> <ns>` lines, by port.
fn stamps(lines: &[String], prefix: &str) -> std::collections::HashMap<u16, u128> {
    lines
        .iter()
        .filter_map(|l| {
            let (port, ns) = l.strip_prefix(prefix)?.split_once(' ')?;
            Some((port.parse().ok()?, ns.parse().ok()?))
        })
        .collect()
}

/// The restart scenario: a server without `SO_REUSEADDR` at `addr` closes
/// `n` connections first and exits, leaving `n` `TIME_WAIT` sockets on its
/// port (checked with `ss`); a new instance then fails to bind with
/// `EADDRINUSE`. Returns the first server's pid and the restarted server.
#[must_use]
pub fn failed_restart(lab: &Lab, addr: &str, n: u64) -> (u32, Peer) {
    let count = n.to_string();
    let server = lab.server(&[
        "--addr",
        addr,
        "--no-reuseaddr",
        "--connections",
        &count,
        "--read-request",
        "--reply",
    ]);
    let server_pid = server.pid();
    let client = lab.client(&[
        "--addr",
        addr,
        "--connections",
        &count,
        "--send",
        "--read-reply",
        "--wait-peer-close",
    ]);
    client.wait_success();
    server.wait_success();
    let port = format!(":{}", port_of(addr));
    let held = lab.ss_count("time-wait", &["sport", "=", &port]);
    assert_eq!(
        held as u64, n,
        "the server closed first: {n} TIME_WAIT on its port"
    );
    let mut restarted = lab.server(&["--addr", addr, "--no-reuseaddr", "--wait-go"]);
    restarted.go();
    let line = restarted.wait_line("bind-error");
    assert!(line.starts_with("bind-error 98 "), "{line}");
    (server_pid, restarted)
}

/// `n` clients of a leaky server on 127.0.0.1:`port`, each sending and
/// closing first; returns once `ss` shows the server's `n` CLOSE_WAIT
/// sockets.
pub fn closewait_leak(lab: &Lab, port: u16, n: u64) {
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..n {
        let lines = lab.client(&["--addr", &addr, "--send"]).wait_success();
        assert!(lines.iter().any(|l| l == "closed"), "client: {lines:?}");
    }
    lab.wait_ss(
        "close-wait",
        &["sport", "=", &format!(":{port}")],
        usize::try_from(n).expect("a count of sockets"),
    );
}
