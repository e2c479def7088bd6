//! Loopback load for tcptrace's benchmarks. Every loop is bounded in time and
//! count, and every address is the one given (the harness runs it inside a
//! network namespace it made).
//!
//! ```text
//! tcptrace-load serve     --addr 127.0.0.1:PORT [--threads N] [--seconds S]
//! tcptrace-load churn     --addr 127.0.0.1:PORT [--threads N] [--seconds S]
//! tcptrace-load keepalive --addr 127.0.0.1:PORT [--threads N] [--seconds S]
//! ```
//! churn: connect, send a 16-byte request, read the 16-byte reply, close.
//! keepalive: one connection per thread, request/reply in a loop.
//! Clients print one JSON line: `{"connections":N,"requests":N,"seconds":S}`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// At most this many operations per thread, whatever the duration.
const MAX_OPS_PER_THREAD: u64 = 50_000_000;

struct Args {
    mode: String,
    addr: SocketAddr,
    threads: usize,
    seconds: f64,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: tcptrace-load serve|churn|keepalive --addr A")?;
    let mut addr = None;
    let mut threads = 2;
    let mut seconds = 5.0;
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|e| format!("--addr: {e}"))?),
            "--threads" => threads = value.parse().map_err(|e| format!("--threads: {e}"))?,
            "--seconds" => seconds = value.parse().map_err(|e| format!("--seconds: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        mode,
        addr: addr.ok_or("--addr is required")?,
        threads: threads.clamp(1, 256),
        seconds: f64::clamp(seconds, 0.1, 3600.0),
    })
}

fn serve_conn(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if s.write_all(&[b'r'; 16]).is_err() {
                    return;
                }
            }
        }
    }
}

fn serve(a: &Args) -> Result<(), String> {
    let l = TcpListener::bind(a.addr).map_err(|e| format!("bind {}: {e}", a.addr))?;
    println!("ready");
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    // Enough handler threads for every keep-alive client plus churn.
    let l = Arc::new(l);
    let mut handles = Vec::new();
    for _ in 0..a.threads {
        let l = Arc::clone(&l);
        handles.push(thread::spawn(move || {
            let _ = l.set_nonblocking(false);
            while Instant::now() < deadline {
                if let Ok((s, _)) = l.accept() {
                    serve_conn(s);
                }
            }
        }));
    }
    // The process exits at the deadline even if accepts are blocked.
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
    std::process::exit(0);
}

fn churn_once(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = [0u8; 16];
    s.write_all(&[b'q'; 16]).is_ok() && s.read_exact(&mut reply).is_ok()
}

fn client(a: &Args, keepalive: bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(AtomicU64::new(0));
    let reqs = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..a.threads {
        let (stop, conns, reqs, addr) = (
            Arc::clone(&stop),
            Arc::clone(&conns),
            Arc::clone(&reqs),
            a.addr,
        );
        handles.push(thread::spawn(move || {
            let mut ops = 0;
            if keepalive {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                    return;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut reply = [0u8; 16];
                while !stop.load(Ordering::Relaxed) && ops < MAX_OPS_PER_THREAD {
                    if s.write_all(&[b'q'; 16]).is_err() || s.read_exact(&mut reply).is_err() {
                        return;
                    }
                    reqs.fetch_add(1, Ordering::Relaxed);
                    ops += 1;
                }
            } else {
                while !stop.load(Ordering::Relaxed) && ops < MAX_OPS_PER_THREAD {
                    if churn_once(addr) {
                        conns.fetch_add(1, Ordering::Relaxed);
                        reqs.fetch_add(1, Ordering::Relaxed);
                    }
                    ops += 1;
                }
            }
        }));
    }
    thread::sleep(Duration::from_secs_f64(a.seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"connections\":{},\"requests\":{},\"seconds\":{secs:.3}}}",
        conns.load(Ordering::Relaxed),
        reqs.load(Ordering::Relaxed)
    );
}

fn main() {
    let r = parse().and_then(|a| match a.mode.as_str() {
        "serve" => serve(&a),
        "churn" => {
            client(&a, false);
            Ok(())
        }
        "keepalive" => {
            client(&a, true);
            Ok(())
        }
        other => Err(format!("unknown mode {other}")),
    });
    if let Err(e) = r {
        eprintln!("tcptrace-load: {e}");
        std::process::exit(2);
    }
}
