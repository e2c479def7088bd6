//! Loopback load for tcptrace's benchmarks. Every loop is bounded in time and
//! count, and every address is the one given (the harness runs it inside a
//! network namespace it made).
//!
//! ```text
//! tcptrace-load serve      --addr 127.0.0.1:PORT [--threads N] [--seconds S]
//! tcptrace-load churn      --addr 127.0.0.1:PORT [--threads N] [--seconds S]
//! tcptrace-load keepalive  --addr 127.0.0.1:PORT [--threads N] [--seconds S]
//! tcptrace-load hold-serve --addr 127.0.0.1:PORT [--ports K] [--count N] [--seconds S]
//! tcptrace-load hold       --addr 127.0.0.1:PORT [--ports K] [--count N] [--threads T] [--rate R] [--seconds S]
//! tcptrace-load trickle    --addr 127.0.0.1:PORT [--rate R] [--seconds S]
//! ```
//! churn: connect, send a 1-byte request, read the 1-byte reply; the server
//! closes, the client reads the end and closes. The server's side takes the
//! TIME_WAIT, so the client's ephemeral ports are free again at once (no
//! search through ports held by the client's own TIME_WAIT sockets). Blocking
//! sockets on dedicated threads, no option set and nothing allocated per
//! connection: the loop is a plain C client's (socket, connect, write, read,
//! read, close), which is what lets it reach the machine's rate.
//! keepalive: one connection per thread, 16-byte request/reply in a loop.
//! Clients print one JSON line: `{"connections":N,"requests":N,"seconds":S}`.
//!
//! trickle: a server and its client in one process, R churn connections a
//! second (1 by default, at most 1000), each closed by the client first, so
//! that a TIME_WAIT socket is left per connection; prints the client's line.
//!
//! hold-serve / hold: a CLOSE_WAIT leak at scale. The server listens on ports
//! PORT..PORT+K-1 and keeps every accepted socket open, never reading or
//! closing it. The client opens N connections spread over those ports
//! (R per second in all when `--rate` is given),
//! half-closes each (`shutdown(SHUT_WR)`) and keeps its fd: the server's
//! sockets sit in CLOSE_WAIT, the client's in FIN_WAIT2 (not orphaned, so no
//! `tcp_fin_timeout` ends them). Both print `{"held":N,...}` once all N are
//! held, then hold them for `--seconds` (or until killed) and exit, which
//! closes them. N is at most 200000; the open-file limit is raised to fit
//! (root may raise it up to `fs.nr_open`). Ephemeral ports are shared
//! between destinations, so K ports multiply the room `ip_local_port_range`
//! gives; the harness also widens that range in its namespace.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
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
/// At most this many connections held (hold modes).
const MAX_HELD: u64 = 200_000;
/// A hold client gives up after this many failed connects.
const MAX_CONNECT_FAILURES: u64 = 1000;

struct Args {
    mode: String,
    addr: SocketAddr,
    threads: usize,
    seconds: f64,
    /// Hold modes: listening ports, from `addr`'s port up.
    ports: u16,
    /// Hold modes: connections to hold.
    count: u64,
    /// Hold client: connections opened per second over all threads and
    /// workers; 0 for as fast as possible.
    rate: f64,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: tcptrace-load serve|churn|keepalive|hold-serve|hold|trickle --addr A")?;
    let mut addr = None;
    let mut threads = 2;
    let mut seconds = 5.0;
    let mut ports: u16 = 1;
    let mut count: u64 = 1000;
    let mut rate = 0.0;
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|e| format!("--addr: {e}"))?),
            "--threads" => threads = value.parse().map_err(|e| format!("--threads: {e}"))?,
            "--seconds" => seconds = value.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--ports" => ports = value.parse().map_err(|e| format!("--ports: {e}"))?,
            "--count" => count = value.parse().map_err(|e| format!("--count: {e}"))?,
            "--rate" => rate = value.parse().map_err(|e| format!("--rate: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let addr: SocketAddr = addr.ok_or("--addr is required")?;
    let ports = ports.clamp(1, 64);
    if u32::from(addr.port()) + u32::from(ports) > 65_536 || addr.port() == 0 {
        return Err(format!("--addr port and --ports {ports} run past 65535"));
    }
    if count == 0 || count > MAX_HELD {
        return Err(format!("--count must be from 1 to {MAX_HELD}"));
    }
    Ok(Args {
        mode,
        addr,
        threads: threads.clamp(1, 256),
        seconds: f64::clamp(seconds, 0.1, 3600.0),
        ports,
        count,
        rate: f64::clamp(rate, 0.0, 1e7),
    })
}

/// The churn client's request: one byte, answered with one byte and a close.
const CHURN_REQUEST: u8 = b'c';

/// Serve one accepted connection: a churn request (one byte,
/// [`CHURN_REQUEST`]) gets one byte back and the server's close, without a
/// socket option set; anything else is a keep-alive or trickle client,
/// answered with 16 bytes per request until it closes.
fn serve_accepted(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(1) if buf[0] == CHURN_REQUEST => {
            let _ = s.write(b"r");
        }
        Ok(0) | Err(_) => {}
        Ok(_) => {
            if s.write_all(&[b'r'; 16]).is_ok() {
                serve_conn(s);
            }
        }
    }
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
    // A deep accept queue (capped by net.core.somaxconn): a churn burst
    // must not wait for SYN retransmits.
    // SAFETY: listen(2) on a socket this process owns.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 4096) };
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
                    serve_accepted(s);
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

/// One churn connection: connect, a 1-byte request, the 1-byte reply, then
/// the server's close read before this side closes. Blocking calls, no
/// socket option, no allocation.
fn churn_fast(addr: &SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let mut buf = [0u8; 2];
    // The reply, then the end (0); a read may return both bytes' worth of
    // news at once only as the reply, so read until the end.
    let ok = s.write(&[CHURN_REQUEST]).is_ok_and(|n| n == 1)
        && s.read(&mut buf).is_ok_and(|n| n == 1)
        && s.read(&mut buf).is_ok_and(|n| n == 0);
    drop(s);
    ok
}

/// The churn client: each thread runs [`churn_fast`] in a loop and counts
/// locally; the counts are summed once, at the end. A thread blocked past
/// the deadline (a server gone mid-connection) does not hold the answer
/// up: the process prints and exits after a grace period.
fn churn_client(a: &Args) {
    let stop = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    for _ in 0..a.threads {
        let (stop, conns, done, addr) = (
            Arc::clone(&stop),
            Arc::clone(&conns),
            Arc::clone(&done),
            a.addr,
        );
        thread::spawn(move || {
            let (mut ops, mut ok) = (0u64, 0u64);
            while ops < MAX_OPS_PER_THREAD && !stop.load(Ordering::Relaxed) {
                ok += u64::from(churn_fast(&addr));
                ops += 1;
            }
            conns.fetch_add(ok, Ordering::Relaxed);
            done.fetch_add(1, Ordering::Release);
        });
    }
    thread::sleep(Duration::from_secs_f64(a.seconds));
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let grace = Instant::now() + Duration::from_secs(5);
    let threads = u64::try_from(a.threads).unwrap_or(u64::MAX);
    while done.load(Ordering::Acquire) < threads && Instant::now() < grace {
        thread::sleep(Duration::from_millis(1));
    }
    let n = conns.load(Ordering::Relaxed);
    println!("{{\"connections\":{n},\"requests\":{n},\"seconds\":{secs:.3}}}");
    std::process::exit(0);
}

/// The keep-alive client: one connection per thread, request/reply in a loop.
fn keepalive_client(a: &Args) {
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

/// The trickle mode: serve `addr` and connect to it `rate` times a second
/// until `--seconds` have passed; dies with its parent.
fn trickle(a: &Args) -> Result<(), String> {
    die_with_parent();
    let l = TcpListener::bind(a.addr).map_err(|e| format!("bind {}: {e}", a.addr))?;
    // One connection at a time: the client closes first, then the handler
    // reads the end and closes (at most 30 s on a stuck one).
    thread::spawn(move || {
        let cap = usize::try_from(MAX_OPS_PER_THREAD).unwrap_or(usize::MAX);
        for s in l.incoming().take(cap).flatten() {
            serve_conn(s);
        }
    });
    let rate = if a.rate > 0.0 {
        a.rate.min(1000.0)
    } else {
        1.0
    };
    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.seconds);
    let mut conns = 0u64;
    for n in 0..MAX_OPS_PER_THREAD {
        #[expect(clippy::cast_precision_loss, reason = "a count of connections")]
        let due = Duration::from_secs_f64(n as f64 / rate);
        if due >= limit {
            break;
        }
        thread::sleep(due.saturating_sub(start.elapsed()));
        conns += u64::from(churn_once(a.addr));
    }
    println!(
        "{{\"connections\":{conns},\"requests\":{conns},\"seconds\":{:.3}}}",
        start.elapsed().as_secs_f64()
    );
    // The handler thread may sit in accept().
    std::process::exit(0);
}

/// Raise `RLIMIT_NOFILE` to hold `fds` descriptors: the soft limit up to the
/// hard one, and the hard one too when allowed (`CAP_SYS_RESOURCE`, up to
/// `fs.nr_open`).
fn raise_nofile(fds: u64) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur >= fds {
        return Ok(());
    }
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let want = libc::rlimit {
        rlim_cur: fds,
        rlim_max: lim.rlim_max.max(fds),
    };
    if want.rlim_max > nr_open {
        return Err(format!(
            "{fds} open files are needed but fs.nr_open is {nr_open}; use more --ports (one process per port)"
        ));
    }
    // SAFETY: setrlimit reads one rlimit it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) } != 0 {
        return Err(format!(
            "raising RLIMIT_NOFILE to {fds} (hard limit {}): {}; use more --ports (one process per port)",
            lim.rlim_max,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Hold the process (and so every socket it keeps) until `deadline`, then
/// exit, which closes them all.
fn hold_until(deadline: Instant) -> ! {
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
    std::process::exit(0);
}

/// Die with the parent: the workers of a hold mode must not outlive it.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number, nothing else.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// `{"held":N,...}` from a worker.
fn held_of(line: &str) -> Option<u64> {
    line.split("\"held\":")
        .nth(1)?
        .split([',', '}'])
        .next()?
        .parse()
        .ok()
}

/// Run a hold mode as one worker process per port: a process can hold no
/// more sockets than its open-file limit, and without `CAP_SYS_RESOURCE` that
/// limit cannot rise past the hard one. Each worker gets its port and its
/// share of `count`; the sum of their `held` is printed as one line.
fn hold_workers(a: &Args, serve: bool) -> Result<(), String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.seconds);
    let exe = std::env::current_exe().map_err(|e| format!("finding myself: {e}"))?;
    let k = u64::from(a.ports);
    let threads = a.threads.div_ceil(usize::from(a.ports)).max(1);
    let mut workers = Vec::new();
    for i in 0..a.ports {
        let share = a.count / k + u64::from(u64::from(i) < a.count % k);
        let addr = SocketAddr::new(a.addr.ip(), a.addr.port() + i);
        let mut child = std::process::Command::new(&exe)
            .arg(&a.mode)
            .args(["--addr", &addr.to_string(), "--ports", "1"])
            .args(["--count", &share.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--rate", &(a.rate / f64::from(a.ports)).to_string()])
            .args(["--seconds", &a.seconds.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting a worker: {e}"))?;
        let out = child.stdout.take().ok_or("no worker stdout")?;
        workers.push((child, BufReader::new(out).lines()));
    }
    if serve {
        for (_, lines) in &mut workers {
            if !matches!(lines.next(), Some(Ok(l)) if l == "ready") {
                return Err("a server worker did not start".to_owned());
            }
        }
        println!("ready");
    }
    let (mut held, mut failed) = (0, 0);
    for (_, lines) in &mut workers {
        match lines.next() {
            Some(Ok(l)) => {
                held += held_of(&l).unwrap_or(0);
                failed += l
                    .split("\"failed\":")
                    .nth(1)
                    .and_then(|r| r.split([',', '}']).next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            _ => return Err("a worker ended without a summary".to_owned()),
        }
    }
    println!(
        "{{\"held\":{held},\"failed\":{failed},\"processes\":{k},\"seconds\":{:.3}}}",
        start.elapsed().as_secs_f64()
    );
    // The workers hold the sockets; they die with this process.
    hold_until(deadline);
}

/// Accept on one port and keep each socket open, unread.
fn hold_serve(a: &Args) -> Result<(), String> {
    die_with_parent();
    if a.ports > 1 {
        return hold_workers(a, true);
    }
    raise_nofile(a.count + 64)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.seconds);
    let l = TcpListener::bind(a.addr).map_err(|e| format!("bind {}: {e}", a.addr))?;
    // A second listen() on a listening socket only raises its backlog
    // (capped by net.core.somaxconn): connects can come faster than one
    // accept loop drains a small queue.
    // SAFETY: listen(2) on a socket this process owns.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 4096) };
    println!("ready");
    let mut kept = Vec::new();
    let mut held: u64 = 0;
    while held < a.count && Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => {
                kept.push(s);
                held += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                eprintln!("tcptrace-load: accept: {e}");
                break;
            }
            Err(_) => {}
        }
    }
    println!(
        "{{\"held\":{held},\"seconds\":{:.3}}}",
        start.elapsed().as_secs_f64()
    );
    // Keep the sockets until the process exits.
    hold_until(deadline);
}

/// Open `count` connections to one port, half-close each and keep it.
fn hold_client(a: &Args) -> Result<(), String> {
    die_with_parent();
    if a.ports > 1 {
        return hold_workers(a, false);
    }
    raise_nofile(a.count + 64)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.seconds);
    let failed = Arc::new(AtomicU64::new(0));
    let threads = u64::try_from(a.threads).unwrap_or(1);
    let mut handles = Vec::new();
    for t in 0..threads {
        let (addr, failed) = (a.addr, Arc::clone(&failed));
        let share = a.count / threads + u64::from(t < a.count % threads);
        // One connection every `gap` on this thread, when paced.
        #[expect(clippy::cast_precision_loss, reason = "a handful of threads")]
        let gap = (a.rate > 0.0).then(|| Duration::from_secs_f64(threads as f64 / a.rate));
        handles.push(thread::spawn(move || {
            let mut kept = Vec::new();
            let mut n = 0;
            let mut next = Instant::now();
            while n < share
                && failed.load(Ordering::Relaxed) < MAX_CONNECT_FAILURES
                && Instant::now() < deadline
            {
                if let Some(gap) = gap {
                    thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += gap;
                }
                match TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .and_then(|s| s.shutdown(std::net::Shutdown::Write).map(|()| s))
                {
                    Ok(s) => {
                        kept.push(s);
                        n += 1;
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("tcptrace-load: connect {addr}: {e}");
                        }
                    }
                }
            }
            kept
        }));
    }
    let mut kept = Vec::new();
    for h in handles {
        kept.extend(h.join().unwrap_or_default());
    }
    println!(
        "{{\"held\":{},\"failed\":{},\"seconds\":{:.3}}}",
        kept.len(),
        failed.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    hold_until(deadline);
}

fn main() {
    let r = parse().and_then(|a| match a.mode.as_str() {
        "hold-serve" => hold_serve(&a),
        "hold" => hold_client(&a),
        "serve" => serve(&a),
        "churn" => {
            churn_client(&a);
            Ok(())
        }
        "keepalive" => {
            keepalive_client(&a);
            Ok(())
        }
        "trickle" => trickle(&a),
        other => Err(format!("unknown mode {other}")),
    });
    if let Err(e) = r {
        eprintln!("tcptrace-load: {e}");
        std::process::exit(2);
    }
}
