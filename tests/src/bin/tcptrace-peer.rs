//! `tcptrace-peer`: one end of a TCP connection, run as its own process so
//! that the integration tests can check which pid tcptrace names as a socket's
//! owner. Every step prints one line on stdout, so the test can sequence on
//! them; every wait has a timeout, and the process always exits by itself.
//!
//! ```text
//! tcptrace-peer server --addr IP:PORT [--wait-go] [--read-request | --leave-unread]
//!                      [--reply] [--wait-peer-close] [--close-delay-ms N] [--linger0]
//! tcptrace-peer client --addr IP:PORT [--wait-go] [--expect-refused] [--send]
//!                      [--read-reply] [--wait-peer-close] [--close-delay-ms N] [--linger0]
//!                      [--send-bytes N]   (with --send: N bytes of 'x', not the request line)
//!                      [--bind IP:PORT]   (bind there first, with SO_REUSEADDR)
//!                      [--hold]           (once connected, wait for a line on stdin; not
//!                                          with --wait-go)
//! common:              [--timeout-ms N]   (every wait; default 10000; both times
//!                                          TCPTRACE_TEST_SLOWDOWN)
//!                      [--timestamps]     (the client prints `closing <local port> <ns>`
//!                                          before its close(), the server `closed-at
//!                                          <peer port> <ns>` after its close(): ns of
//!                                          CLOCK_MONOTONIC, one clock for both processes)
//!                      [--rename-when-done NAME] (once every socket is closed, the
//!                                          main thread renames itself NAME, before `done`)
//!                      [--connections N]  (N connections at once, each in a thread, each
//!                                          through every step; not with --bind or --hold)
//!                      [--one-by-one]     (client, with --connections: one connection after
//!                                          the other, each closed before the next)
//!                      [--pace-ms N]      (client, with --one-by-one: N ms between them)
//!                      [--no-reuseaddr]   (server: listen without SO_REUSEADDR, which std
//!                                          sets; a failed bind prints `bind-error <errno>`)
//! tcptrace-peer scrape http://IP:PORT/PATH [--timeout-ms N]
//! tcptrace-peer fanout IP BASE N   (one connection to each of ports BASE..BASE+N,
//!                                   the client closing first: N destinations)
//! ```
//!
//! Output lines, in order: `pid <pid>`, then for the server `ready <port>`,
//! `accepted <peer>`, and for the client `connected <local>` (or `refused`),
//! then one line per step (`request`, `unread`, `replied`, `reply`,
//! `peer-closed` or `peer-reset`, `closed`), `renamed NAME` with
//! `--rename-when-done`, and `done` last. Errors go to
//! stderr with exit status 1; bad usage exits 2. With `--connections N` the
//! lines of the N connections interleave (`done` is still last); a client
//! whose `connect()` fails prints `connect-error <errno> <message>` before
//! exiting 1.
//!
//! `scrape` is a minimal HTTP/1.1 GET (for tcptrace's `/metrics` inside a
//! test's namespace): it prints the response body, and exits 0 only on
//! `200 OK`; it prints no `pid` line.
//!
//! std only, except `setsockopt(SO_LINGER)` (`TcpStream::set_linger` is still
//! unstable) and, for `--bind`, a socket made with libc (std cannot bind a
//! socket before `connect()`).

use integration_tests::patient;
use std::{
    io::{self, BufRead as _, ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::ExitCode,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// What the client sends.
const REQUEST: &[u8] = b"request\n";
/// What the server answers.
const REPLY: &[u8] = b"reply\n";

#[derive(Debug, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per command-line switch"
)]
struct Opts {
    server: bool,
    addr: Option<SocketAddr>,
    wait_go: bool,
    send: bool,
    read_request: bool,
    leave_unread: bool,
    reply: bool,
    read_reply: bool,
    wait_peer_close: bool,
    expect_refused: bool,
    linger0: bool,
    close_delay: Duration,
    timeout: Duration,
    /// With `--send`: send this many bytes instead of [`REQUEST`].
    send_bytes: Option<usize>,
    /// Client: bind here (with `SO_REUSEADDR`) before connecting.
    bind: Option<SocketAddr>,
    /// Once done with every socket, the main thread's new comm.
    rename_when_done: Option<String>,
    /// Client: once connected, wait for a line on stdin.
    hold: bool,
    /// How many connections, handled at once (one thread each).
    connections: usize,
    /// Client: make the connections one after the other.
    one_by_one: bool,
    /// Client, with `--one-by-one`: the pause between connections.
    pace: Duration,
    /// Server: listen without `SO_REUSEADDR`.
    no_reuseaddr: bool,
    /// Print when each socket is closed (see the module doc).
    timestamps: bool,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("tcptrace-peer: {msg}");
    eprintln!("usage: tcptrace-peer server|client --addr IP:PORT [options] (see the source)");
    ExitCode::from(2)
}

fn millis(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<Duration, String> {
    args.next()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{flag} needs a number of milliseconds"))
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts {
        timeout: patient(Duration::from_secs(10)),
        connections: 1,
        ..Opts::default()
    };
    o.server = match args.next().as_deref() {
        Some("server") => true,
        Some("client") => false,
        other => return Err(format!("expected server, client or scrape, got {other:?}")),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let v = args.next().ok_or("--addr needs IP:PORT")?;
                o.addr = Some(v.parse().map_err(|e| format!("--addr {v}: {e}"))?);
            }
            "--wait-go" => o.wait_go = true,
            "--send" => o.send = true,
            "--read-request" => o.read_request = true,
            "--leave-unread" => o.leave_unread = true,
            "--reply" => o.reply = true,
            "--read-reply" => o.read_reply = true,
            "--wait-peer-close" => o.wait_peer_close = true,
            "--expect-refused" => o.expect_refused = true,
            "--linger0" => o.linger0 = true,
            "--close-delay-ms" => o.close_delay = millis(&mut args, "--close-delay-ms")?,
            // Scaled like the harness's waits (TCPTRACE_TEST_SLOWDOWN).
            "--timeout-ms" => o.timeout = patient(millis(&mut args, "--timeout-ms")?),
            "--send-bytes" => {
                let n = args
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n > 0 && n <= 1 << 20)
                    .ok_or("--send-bytes needs a number of bytes from 1 to 1048576")?;
                o.send_bytes = Some(n);
            }
            "--bind" => {
                let v = args.next().ok_or("--bind needs IP:PORT")?;
                o.bind = Some(v.parse().map_err(|e| format!("--bind {v}: {e}"))?);
            }
            "--hold" => o.hold = true,
            "--rename-when-done" => {
                let v = args
                    .next()
                    .filter(|v| !v.is_empty() && v.len() < 16 && !v.contains('\0'))
                    .ok_or("--rename-when-done needs a name of 1 to 15 bytes")?;
                o.rename_when_done = Some(v);
            }
            "--one-by-one" => o.one_by_one = true,
            "--pace-ms" => o.pace = millis(&mut args, "--pace-ms")?,
            "--no-reuseaddr" => o.no_reuseaddr = true,
            "--timestamps" => o.timestamps = true,
            "--connections" => {
                o.connections = args
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| (1..=2000).contains(&n))
                    .ok_or("--connections needs a number from 1 to 2000")?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.addr.is_none() {
        return Err("--addr is required".into());
    }
    if o.server && (o.bind.is_some() || o.hold || o.one_by_one || !o.pace.is_zero()) {
        return Err("--bind, --hold, --one-by-one and --pace-ms are client options".into());
    }
    if !o.server && o.no_reuseaddr {
        return Err("--no-reuseaddr is a server option".into());
    }
    if !o.pace.is_zero() && !o.one_by_one {
        return Err("--pace-ms goes with --one-by-one".into());
    }
    if o.hold && o.wait_go {
        return Err("--hold and --wait-go both read stdin: pick one".into());
    }
    if o.connections > 1 && (o.bind.is_some() || o.hold) {
        return Err("--connections does not go with --bind or --hold".into());
    }
    Ok(o)
}

/// Print one progress line and flush it: the test is waiting for it.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    // A test that stopped listening is not our problem: keep going.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Wait for one line on stdin (the test's go-ahead), at most `timeout`.
fn wait_go(timeout: Duration) -> io::Result<()> {
    let (tx, rx) = mpsc::channel();
    // The reader thread may outlive a timeout; the process exits anyway.
    thread::spawn(move || {
        let mut line = String::new();
        let r = io::stdin().lock().read_line(&mut line);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "stdin closed before go",
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(ErrorKind::TimedOut, "no go on stdin")),
    }
}

/// `SO_LINGER {on, 0}`: `close()` then aborts the connection with a RST.
fn set_linger0(s: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = libc::socklen_t::try_from(size_of::<libc::linger>()).expect("small struct");
    // SAFETY: a valid socket fd owned by `s`, and a pointer to a live
    // `linger` of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Accept one connection, polling a non-blocking listener until `timeout`.
fn accept(l: &TcpListener, timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false)?;
                return Ok((s, peer));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "no connection to accept",
                    ));
                }
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Read until EOF (the peer's FIN) or a reset; says which.
fn wait_peer_close(s: &mut TcpStream, timeout: Duration) -> io::Result<()> {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + timeout;
    // Each read returns data, EOF or an error, or times out; the loop is
    // bounded in count and in time.
    for _ in 0..10_000 {
        if Instant::now() >= deadline {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                say("peer-closed");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                say("peer-reset");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("the peer kept sending"))
}

/// The steps after the connection exists, shared by both ends.
fn converse(o: &Opts, s: &mut TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(o.timeout))?;
    s.set_write_timeout(Some(o.timeout))?;
    if o.send {
        match o.send_bytes {
            Some(n) => s.write_all(&vec![b'x'; n])?,
            None => s.write_all(REQUEST)?,
        }
        say("sent");
    }
    if o.read_request {
        let mut buf = [0u8; REQUEST.len()];
        s.read_exact(&mut buf)?;
        say("request");
    }
    if o.leave_unread {
        // peek blocks until data is queued, and leaves it there.
        let mut buf = [0u8; 1];
        if s.peek(&mut buf)? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "no data to leave unread",
            ));
        }
        say("unread");
    }
    if o.reply {
        s.write_all(REPLY)?;
        say("replied");
    }
    if o.read_reply {
        let mut buf = [0u8; REPLY.len()];
        s.read_exact(&mut buf)?;
        say("reply");
    }
    if o.wait_peer_close {
        wait_peer_close(s, o.timeout)?;
    }
    if !o.close_delay.is_zero() {
        thread::sleep(o.close_delay);
    }
    if o.linger0 {
        set_linger0(s)?;
    }
    Ok(())
}

/// One accepted connection, through every step, then closed.
fn serve_one(o: &Opts, mut s: TcpStream, peer: SocketAddr) -> io::Result<()> {
    say(&format!("accepted {peer}"));
    converse(o, &mut s)?;
    drop(s);
    if o.timestamps {
        say(&format!("closed-at {} {}", peer.port(), monotonic_ns()));
    }
    say("closed");
    Ok(())
}

/// Run `f` once per connection, each in a thread of its own; the first error
/// wins. Every thread ends by itself (every step has a timeout).
fn each_in_a_thread<T: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> io::Result<()> + Sync,
) -> io::Result<()> {
    thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| {
                let f = &f;
                scope.spawn(move || f(item))
            })
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a connection thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// A TCP socket of `addr`'s family, made with libc.
fn tcp_socket(addr: SocketAddr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) has no memory preconditions.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listener made with libc and without `SO_REUSEADDR` (std's
/// `TcpListener::bind` sets it on Unix): the way a naive server restarts into
/// EADDRINUSE while its old connections sit in TIME_WAIT.
fn listen_without_reuseaddr(addr: SocketAddr) -> io::Result<TcpListener> {
    use std::os::fd::AsRawFd as _;
    let owned = tcp_socket(addr)?;
    let fd = owned.as_raw_fd();
    let (ss, len) = sockaddr(addr);
    // SAFETY: a valid fd and a sockaddr of the length passed.
    if unsafe { libc::bind(fd, (&raw const ss).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a valid, bound fd.
    if unsafe { libc::listen(fd, 128) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(owned))
}

fn server(o: &Opts, addr: SocketAddr) -> io::Result<()> {
    let bound = if o.no_reuseaddr {
        listen_without_reuseaddr(addr)
    } else {
        TcpListener::bind(addr)
    };
    let listener = bound.inspect_err(|e| {
        say(&format!(
            "bind-error {} {e}",
            e.raw_os_error().unwrap_or_default()
        ));
    })?;
    say(&format!("ready {}", listener.local_addr()?.port()));
    if o.connections == 1 {
        let (s, peer) = accept(&listener, o.timeout)?;
        serve_one(o, s, peer)?;
    } else {
        // Each connection is served as soon as it is accepted, so that its
        // steps (e.g. a close delay after EOF) do not wait for the others.
        thread::scope(|scope| -> io::Result<()> {
            let (tx, rx) = mpsc::channel::<io::Result<()>>();
            let deadline = Instant::now() + o.timeout;
            for _ in 0..o.connections {
                let left = deadline.saturating_duration_since(Instant::now());
                let (s, peer) = accept(&listener, left)?;
                let tx = tx.clone();
                scope.spawn(move || {
                    let _ = tx.send(serve_one(o, s, peer));
                });
            }
            drop(tx);
            // One result per connection: the channel ends when all are in.
            rx.iter().collect::<io::Result<Vec<()>>>().map(drop)
        })?;
    }
    drop(listener);
    Ok(())
}

/// A `sockaddr_in` or `sockaddr_in6` for libc calls.
fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("small"),
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and
            // suitably aligned for it.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).expect("small"),
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, libc::socklen_t::try_from(len).expect("small struct"))
}

/// `socket()`, `SO_REUSEADDR`, `bind(local)`, `connect(addr)` (blocking: on
/// loopback it succeeds or fails at once). Errors name the step.
fn connect_from(local: SocketAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd as _;

    let step = |what: &str, rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
    };
    let owned = tcp_socket(local)?;
    let fd = owned.as_raw_fd();
    let one: libc::c_int = 1;
    let int_len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("small");
    // SAFETY: a valid fd and a pointer to a live c_int of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            int_len,
        )
    };
    step("setsockopt(SO_REUSEADDR)", rc)?;
    let (ss, len) = sockaddr(local);
    // SAFETY: a valid fd and a sockaddr of the length passed.
    let rc = unsafe { libc::bind(fd, (&raw const ss).cast(), len) };
    step(&format!("bind({local})"), rc)?;
    let (ss, len) = sockaddr(addr);
    // SAFETY: as above.
    let rc = unsafe { libc::connect(fd, (&raw const ss).cast(), len) };
    step(&format!("connect({addr})"), rc)?;
    Ok(TcpStream::from(owned))
}

/// One client connection, through every step, then closed.
fn client_one(o: &Opts, addr: SocketAddr) -> io::Result<()> {
    let connected = match o.bind {
        Some(local) => connect_from(local, addr),
        None => TcpStream::connect_timeout(&addr, o.timeout),
    };
    let mut s = match connected {
        Ok(s) => s,
        Err(e) if o.expect_refused && e.kind() == ErrorKind::ConnectionRefused => {
            say("refused");
            return Ok(());
        }
        Err(e) => {
            say(&format!(
                "connect-error {} {e}",
                e.raw_os_error().unwrap_or_default()
            ));
            return Err(e);
        }
    };
    if o.expect_refused {
        return Err(io::Error::other("connected, but expected a refusal"));
    }
    say(&format!("connected {}", s.local_addr()?));
    if o.hold {
        wait_go(o.timeout)?;
        say("go");
    }
    converse(o, &mut s)?;
    if o.timestamps {
        say(&format!(
            "closing {} {}",
            s.local_addr()?.port(),
            monotonic_ns()
        ));
    }
    drop(s);
    say("closed");
    Ok(())
}

/// CLOCK_MONOTONIC in ns: `Instant` does not show its value, and the test
/// compares two processes' readings.
fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec passed; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u128::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(ts.tv_nsec).unwrap_or(0)
}

fn client(o: &Opts, addr: SocketAddr) -> io::Result<()> {
    if o.connections == 1 {
        client_one(o, addr)
    } else if o.one_by_one {
        (0..o.connections).try_for_each(|i| {
            if i > 0 && !o.pace.is_zero() {
                thread::sleep(o.pace);
            }
            client_one(o, addr)
        })
    } else {
        each_in_a_thread(vec![addr; o.connections], |a| client_one(o, a))
    }
}

/// `GET` `url` (`http://IP:PORT/PATH`) over HTTP/1.1; prints the body.
fn scrape(mut args: impl Iterator<Item = String>) -> ExitCode {
    let Some(url) = args.next() else {
        return usage("scrape needs a URL");
    };
    let mut timeout = patient(Duration::from_secs(10));
    while let Some(arg) = args.next() {
        if arg != "--timeout-ms" {
            return usage(&format!("unknown argument {arg}"));
        }
        match millis(&mut args, "--timeout-ms") {
            Ok(t) => timeout = patient(t),
            Err(e) => return usage(&e),
        }
    }
    let Some((host, path)) = url
        .strip_prefix("http://")
        .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
    else {
        return usage(&format!("{url}: expected http://IP:PORT/PATH"));
    };
    let Ok(addr) = host.parse::<SocketAddr>() else {
        return usage(&format!("{url}: expected a numeric IP:PORT"));
    };
    let get = || -> io::Result<(String, String)> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())?;
        // The server closes after its response: read to EOF, bounded in size.
        let mut resp = Vec::new();
        s.take(16 << 20).read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| io::Error::other(format!("no end of headers in {text:?}")))?;
        let status = head.lines().next().unwrap_or_default().to_owned();
        Ok((status, body.to_owned()))
    };
    match get() {
        Ok((status, body)) => {
            print!("{body}");
            let _ = io::stdout().flush();
            if status.split_whitespace().nth(1) == Some("200") {
                ExitCode::SUCCESS
            } else {
                eprintln!("tcptrace-peer: GET {url}: {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("tcptrace-peer: GET {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Set the calling thread's comm (`prctl(PR_SET_NAME)`), what
/// `/proc/PID/task/TID/comm` shows from then on.
fn rename_thread(name: &str) -> io::Result<()> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // (longer names are cut), which `name` is and outlives the call.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fanout IP BASE N`: one connection to each of N ports from BASE on IP,
/// in turn, each closed first by the client: N destinations, each with one
/// client TIME_WAIT socket. One listener at a time, so any fd limit does.
fn fanout(mut args: impl Iterator<Item = String>) -> ExitCode {
    let (Some(ip), Some(base), Some(n)) = (args.next(), args.next(), args.next()) else {
        return usage("fanout needs IP BASE N");
    };
    let (Ok(ip), Ok(base), Ok(n)) = (ip.parse::<IpAddr>(), base.parse::<u16>(), n.parse::<u16>())
    else {
        return usage("fanout: IP BASE N, as an address and two numbers");
    };
    let one = |port: u16| -> io::Result<()> {
        let listener = TcpListener::bind((ip, port))?;
        let client = TcpStream::connect((ip, port))?;
        let (mut served, _) = listener.accept()?;
        drop(client);
        // Read the client's FIN, then close: the client's socket ends in
        // TIME_WAIT.
        let mut buf = [0u8; 1];
        served.set_read_timeout(Some(patient(Duration::from_secs(5))))?;
        let _ = served.read(&mut buf)?;
        Ok(())
    };
    for port in base..base.saturating_add(n) {
        if let Err(e) = one(port) {
            say(&format!("error port {port}: {e}"));
            return ExitCode::FAILURE;
        }
    }
    say(&format!("done {n}"));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("scrape") {
        return scrape(std::env::args().skip(2));
    }
    if std::env::args().nth(1).as_deref() == Some("fanout") {
        return fanout(std::env::args().skip(2));
    }
    let o = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => return usage(&msg),
    };
    say(&format!("pid {}", std::process::id()));
    let Some(addr) = o.addr else {
        return usage("--addr is required");
    };
    let r = (if o.wait_go {
        wait_go(o.timeout)
    } else {
        Ok(())
    })
    .and_then(|()| {
        if o.server {
            server(&o, addr)
        } else {
            client(&o, addr)
        }
    });
    let r = r.and_then(|()| match &o.rename_when_done {
        Some(name) => rename_thread(name).map(|()| say(&format!("renamed {name}"))),
        None => Ok(()),
    });
    match r {
        Ok(()) => {
            say("done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tcptrace-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
