use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use super::*;

/// sock_diag needs no privilege to list this namespace's sockets: make a
/// real CLOSE_WAIT and a real timewait socket on loopback and find them.
#[test]
fn finds_real_close_wait_and_timewait_sockets() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"x").unwrap();
    drop(c); // client closes first: server socket -> CLOSE_WAIT
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let cw = dump(&[TcpState::CloseWait]).unwrap();
        if let Some(d) = cw.into_iter().find(|d| d.lport == port) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no CLOSE_WAIT socket on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(found.state, Some(TcpState::CloseWait));
    assert!(found.inode != 0);
    assert!(
        found.recv_queue >= 1,
        "unread byte + FIN: {}",
        found.recv_queue
    );
    let mut buf = [0u8; 8];
    while s.read(&mut buf).unwrap() > 0 {}
    drop(s);
    // The client did the active close: its side becomes a timewait socket.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tw = dump_timewait().unwrap();
        if let Some(t) = tw.iter().find(|t| t.rport == port) {
            assert_eq!(t.state, Some(TcpState::TimeWait));
            assert_eq!(t.inode, 0);
            let left = t.timer_expires_ms.unwrap();
            assert!(left > 50_000 && left <= 60_000, "timer {left} ms");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no timewait socket to port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An exact lookup finds a live connection by its 4-tuple, from either
/// end, and finds nothing for a tuple no socket holds.
#[test]
fn held_tuples_finds_live_connections_only() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let tuple_of =
        |a: std::net::SocketAddr, b: std::net::SocketAddr| (a.ip(), a.port(), b.ip(), b.port());
    let client = tuple_of(c.local_addr().unwrap(), c.peer_addr().unwrap());
    let server = tuple_of(s.local_addr().unwrap(), s.peer_addr().unwrap());
    // The client's tuple with a port nobody uses.
    let unheld = (client.0, client.1, client.2, 9);
    assert_eq!(
        held_tuples(&[client, unheld, server]).unwrap(),
        vec![true, false, true]
    );
    assert!(held_tuples(&[]).unwrap().is_empty());
}

/// One socket answers request after request. A dump stopped half-way (here
/// by a visitor that panics on its first socket) is read to its end before
/// the next request: the kernel would refuse a new dump (EBUSY) otherwise.
#[test]
fn one_socket_serves_many_requests_even_after_a_stopped_dump() {
    const CONNECTIONS: usize = 300; // 600 sockets: more than one datagram
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let pairs: Vec<(TcpStream, TcpStream)> = (0..CONNECTIONS)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            let (s, _) = l.accept().unwrap();
            (c, s)
        })
        .collect();
    let ours = |d: &DiagSocket| d.lport == addr.port() || d.rport == addr.port();
    let diag = Diag::here().unwrap();
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        diag.dump_with(&[TcpState::Established], |_| panic!("stop the dump"))
    }));
    assert!(stopped.is_err());
    assert!(diag.unfinished.get().is_some(), "the dump was left unread");
    for _ in 0..3 {
        let n = diag
            .dump(&[TcpState::Established])
            .unwrap()
            .iter()
            .filter(|d| ours(d))
            .count();
        assert_eq!(n, 2 * CONNECTIONS);
        assert!(diag.unfinished.get().is_none());
        let (c, s) = &pairs[0];
        let tuple = (
            c.local_addr().unwrap().ip(),
            c.local_addr().unwrap().port(),
            s.local_addr().unwrap().ip(),
            s.local_addr().unwrap().port(),
        );
        assert_eq!(diag.held_tuples(&[tuple]).unwrap(), vec![true]);
    }
}

/// A small dump stopped on its first socket: the next request answers, and
/// in bounded time (the rest of the dump is read without waiting for
/// replies that may never come).
#[test]
fn a_small_dump_stopped_on_its_first_socket_does_not_block_the_next_request() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let diag = Diag::here().unwrap();
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            diag.dump_with(&[TcpState::Listen], |_| panic!("stop the dump"))
        }));
        assert!(stopped.is_err());
        let listeners = diag.dump(&[TcpState::Listen]).unwrap();
        tx.send(listeners.iter().any(|d| d.lport == port)).unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
}
