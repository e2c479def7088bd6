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
//! common:              [--timeout-ms N]   (every wait; default 10000)
//! ```
//!
//! Output lines, in order: `pid <pid>`, then for the server `ready <port>`,
//! `accepted <peer>`, and for the client `connected <local>` (or `refused`),
//! then one line per step (`request`, `unread`, `replied`, `reply`,
//! `peer-closed` or `peer-reset`, `closed`), and `done` last. Errors go to
//! stderr with exit status 1; bad usage exits 2.
//!
//! std only, except one `setsockopt(SO_LINGER)`: `TcpStream::set_linger` is
//! still unstable.

use std::{
    io::{self, BufRead as _, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
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
        timeout: Duration::from_secs(10),
        ..Opts::default()
    };
    o.server = match args.next().as_deref() {
        Some("server") => true,
        Some("client") => false,
        other => return Err(format!("expected server or client, got {other:?}")),
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
            "--timeout-ms" => o.timeout = millis(&mut args, "--timeout-ms")?,
            "--send-bytes" => {
                let n = args
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n > 0 && n <= 1 << 20)
                    .ok_or("--send-bytes needs a number of bytes from 1 to 1048576")?;
                o.send_bytes = Some(n);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.addr.is_none() {
        return Err("--addr is required".into());
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

fn server(o: &Opts, addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    say(&format!("ready {}", listener.local_addr()?.port()));
    let (mut s, peer) = accept(&listener, o.timeout)?;
    say(&format!("accepted {peer}"));
    converse(o, &mut s)?;
    drop(s);
    say("closed");
    drop(listener);
    Ok(())
}

fn client(o: &Opts, addr: SocketAddr) -> io::Result<()> {
    let mut s = match TcpStream::connect_timeout(&addr, o.timeout) {
        Ok(s) => s,
        Err(e) if o.expect_refused && e.kind() == ErrorKind::ConnectionRefused => {
            say("refused");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if o.expect_refused {
        return Err(io::Error::other("connected, but expected a refusal"));
    }
    say(&format!("connected {}", s.local_addr()?));
    converse(o, &mut s)?;
    drop(s);
    say("closed");
    Ok(())
}

fn main() -> ExitCode {
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
