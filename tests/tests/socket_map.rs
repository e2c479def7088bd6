//! `--max-sockets`: the socket map's size, and what a full map does (evict
//! the least recently used entries) and says (the exit summary's
//! `socket map` line). Needs root; run with `sudo cargo xtask test -- socket_map`.

use std::{
    io,
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use integration_tests::{EXIT_TIMEOUT, signal, spawn_tracer_raw, stderr_line, wait_exit};

/// The exit summary's `tcptrace: socket map: L of C entries in use (W in
/// CLOSE_WAIT), E evicted, ...` line.
struct SocketMapLine {
    live: u64,
    capacity: u64,
    close_wait: u64,
    evicted: u64,
}

fn socket_map_line(stderr: &str) -> SocketMapLine {
    let line = stderr_line(stderr, "tcptrace: socket map: ", "");
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(n.len() >= 4, "{line}");
    assert!(line.contains("in CLOSE_WAIT"), "{line}");
    assert!(line.contains("MiB of kernel memory"), "{line}");
    SocketMapLine {
        live: n[0],
        capacity: n[1],
        close_wait: n[2],
        evicted: n[3],
    }
}

/// Run tcptrace with `args` while `open` opens connections and keeps them,
/// then stop it with SIGINT: its stderr, with the exit summary. The
/// connections close after tcptrace has exited.
fn stderr_after<T>(args: &[&str], open: impl FnOnce() -> T) -> String {
    let (mut child, stderr) = spawn_tracer_raw(args);
    let mut out = child.stdout.take().expect("stdout");
    let drain = thread::spawn(move || io::copy(&mut out, &mut io::sink()));
    let connections = open();
    // The last transitions reach the map before the exit summary reads it.
    thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, "tcptrace", EXIT_TIMEOUT);
    let _ = drain.join();
    let err = stderr();
    assert!(status.success(), "{status}:\n{err}");
    drop(connections);
    err
}

/// `n` loopback connections, both ends kept; the client half-closes those
/// for which `half_close(i)` holds (their server ends go to CLOSE_WAIT).
fn hold_connections(n: usize, half_close: impl Fn(usize) -> bool) -> Vec<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    (0..n)
        .map(|i| {
            let client = TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            if half_close(i) {
                client
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
            }
            (client, server)
        })
        .collect()
}

/// Raise this process's soft open-file limit to `n` (or its hard limit).
fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the one rlimit given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 && lim.rlim_cur < n {
            lim.rlim_cur = n.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
    assert!(
        lim.rlim_cur >= n,
        "this test needs {n} open files; the hard limit is {}",
        lim.rlim_max
    );
}

/// A 1024-entry map and 1500 held loopback connections (3000 sockets): the
/// map never holds more than its size, and at least the 1976 sockets that
/// did not fit are counted as evicted.
#[test]
fn a_full_socket_map_evicts_and_counts_it() {
    raise_nofile(3100);
    let err = stderr_after(&["--hist", "-i", "1h", "--max-sockets", "1024"], || {
        hold_connections(1500, |_| false)
    });
    let m = socket_map_line(&err);
    assert_eq!(m.capacity, 1024, "{err}");
    assert!(m.live <= 1024, "{err}");
    assert!(m.evicted >= 3000 - 1024, "{err}");
}

/// `--hist` keeps sockets in the lean store: most in the table, which the
/// exit summary counts through a mapping of it, the rest in the LRU map.
/// 300 held connections, 100 of them half-closed by the client (their
/// server ends sit in `CLOSE_WAIT`): all 600 sockets are counted, and the 100
/// in CLOSE_WAIT (other work on the machine can only add to both).
#[test]
fn the_lean_store_counts_every_held_socket_and_close_wait() {
    raise_nofile(700);
    let err = stderr_after(&["--hist", "-i", "1h"], || {
        hold_connections(300, |i| i % 3 == 0)
    });
    let m = socket_map_line(&err);
    assert_eq!(m.capacity, 131_072, "{err}");
    assert!(m.live >= 600, "{err}");
    assert!(m.close_wait >= 100, "{err}");
}

/// The default map holds 131072 sockets; an impossible size is a usage error.
#[test]
fn the_default_map_and_bad_sizes() {
    let err = stderr_after(&["--hist", "-i", "1h"], || ());
    assert_eq!(socket_map_line(&err).capacity, 131_072, "{err}");

    let out = integration_tests::run_bounded(
        std::process::Command::new(integration_tests::tracer_bin()).args(["--max-sockets", "0"]),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("from 1024 to 16777216"), "{err}");
}
