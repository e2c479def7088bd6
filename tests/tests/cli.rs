//! The command line and hostile conditions: bad flags, a closed stdout, no
//! privileges, a run that ends by itself.
//!
//! Most of these need root (they load the eBPF programs, or switch to an
//! unprivileged user), and the tests share kernel state: run with
//! `--test-threads=1`, e.g. `sudo cargo xtask test`, or
//! `cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1`.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    READY, lab, require_root, run_bounded, scenario::local_port, signal, spawn_tracer_raw,
    tracer_bin, wait_exit,
};

const SHORT: Duration = Duration::from_secs(30);
/// How soon tcptrace must notice a closed stdout once it has events to write.
const PROMPTLY: Duration = Duration::from_secs(5);

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An unknown flag is a usage error (exit 2) that names the flag.
#[test]
fn unknown_flag_exits_2_and_names_it() {
    let out = run_bounded(Command::new(tracer_bin()).arg("--no-such-flag"), SHORT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

/// `-d 0` is refused as a usage error (exit 2).
#[test]
fn zero_duration_exits_2() {
    let out = run_bounded(Command::new(tracer_bin()).args(["-d", "0"]), SHORT);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--duration"), "{err}");
    assert!(err.contains("greater than zero"), "{err}");
}

/// A duration no timer can hold, for `-d` or `-i`, is a usage error (exit
/// 2) that names the flag and the bound, not a panic when the timer starts.
#[test]
fn durations_beyond_the_bound_exit_2() {
    for (args, flag) in [
        (&["-d", "18446744073709551615"][..], "--duration"),
        (
            &["-i", "18446744073709551615", "--closewait-leaks"],
            "--interval",
        ),
    ] {
        let out = run_bounded(Command::new(tracer_bin()).args(args), SHORT);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(err.contains("at most 10 years"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A bad `--netns`, `--container` or `--cgroup` is a usage error (exit 2)
/// that names the flag and says what to write instead; nothing is loaded.
#[test]
fn bad_scope_values_exit_2_and_say_what_to_write() {
    for (args, wants) in [
        (
            &["--netns", "42"][..],
            &["--netns", "pid:42", "inode:42"][..],
        ),
        (&["--netns", "a/b"], &["--netns", "/run/netns"]),
        (&["--container", ""], &["--container", "empty container id"]),
        (
            &["--container", "/system.slice/x"],
            &["--container", "--cgroup"],
        ),
        (&["--cgroup", ""], &["--cgroup", "empty cgroup path"]),
        (
            &["--cgroup", "relative/path"],
            &["--cgroup", "starts with '/'"],
        ),
        (
            &["--cgroup", "/sys/fs/cgroup/system.slice"],
            &["--cgroup", "mount point"],
        ),
    ] {
        let out = run_bounded(Command::new(tracer_bin()).args(args), SHORT);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for want in wants {
            assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
        }
        assert!(!err.contains(READY), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

/// A bad port list is a usage error (exit 2) that names the flag and what
/// it takes, and loads nothing: more than 8 different ports, an empty
/// item, 0, a port past 65535, a name.
#[test]
fn bad_port_lists_exit_2_and_say_what_to_write() {
    for (args, wants) in [
        (
            &["-L", "1,2,3,4,5,6,7,8,9"][..],
            &["--lport", "at most 8 different ports, 9 given"][..],
        ),
        (
            &["--port", "1,2,3,4", "--port", "5,6,7,8,9,1"],
            &["--port", "at most 8 different ports, 9 given"],
        ),
        (&["-D", "80,,443"], &["--rport", "an empty port"]),
        (&["--lport", "0"], &["--lport", "out of range"]),
        (&["--port", "65536"], &["--port", "out of range"]),
        (&["-D", "https"], &["--rport", "not a port number"]),
    ] {
        let out = run_bounded(Command::new(tracer_bin()).args(args), SHORT);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for want in wants {
            assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
        }
        assert!(!err.contains(READY), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

/// `-d 1` stops by itself after about a second: exit 0, ready line first,
/// then the summary.
#[test]
fn duration_ends_the_run_with_a_summary() {
    require_root();
    let start = Instant::now();
    let out = run_bounded(
        Command::new(tracer_bin()).args(["-d", "1", "--port", "29302"]),
        SHORT,
    );
    let took = start.elapsed();
    let err = stderr_of(&out);
    assert!(out.status.success(), "{}: {err}", out.status);
    assert!(took >= Duration::from_secs(1), "stopped after {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let lines: Vec<&str> = err.lines().collect();
    let ready = lines.iter().position(|l| l.starts_with(READY));
    let events = lines
        .iter()
        .position(|l| l.starts_with("tcptrace: ") && l.contains(" events ("));
    let losses = lines
        .iter()
        .position(|l| l.starts_with("tcptrace: losses: "));
    assert!(
        matches!((ready, events, losses), (Some(r), Some(e), Some(l)) if r < e && e < l),
        "expected the ready line, then the summary:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Text output: the header line only (no traffic on the port).
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.starts_with("TIME(UTC)"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// Without `CAP_BPF` and `CAP_PERFMON` tcptrace says which capability is missing
/// and how to get it, and exits 1 without tracing.
#[test]
fn unprivileged_user_is_told_what_is_missing() {
    require_root();
    let bin = tracer_bin();
    let out = run_bounded(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(["--port", "29303"]),
        SHORT,
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("tcptrace: "), "{err}");
    assert!(err.contains("CAP_BPF"), "{err}");
    assert!(err.contains("CAP_PERFMON"), "{err}");
    assert!(err.contains("sudo"), "says how to fix it: {err}");
    assert!(err.contains("setcap"), "says how to fix it: {err}");
    assert!(!err.contains(READY), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A reader that goes away (`tcptrace | head`) is not an error: the next
/// write fails with EPIPE and tcptrace exits 0 at once, without a panic,
/// after the exit summary.
#[test]
fn closed_stdout_exits_0_promptly() {
    let lab = lab!();
    let (mut child, stderr) = spawn_tracer_raw(&["--port", "29301"]);
    drop(child.stdout.take());
    // One connection on the port: its first event's write hits the closed pipe.
    let server = lab.server(&["--addr", "127.0.0.1:29301", "--wait-peer-close"]);
    let mut client = lab.client(&["--addr", "127.0.0.1:29301"]);
    let _ = local_port(&client.wait_line("connected "));
    client.wait_success();
    server.wait_success();
    let deadline = Instant::now() + PROMPTLY;
    let mut exited = None;
    while exited.is_none() && Instant::now() < deadline {
        exited = child.try_wait().expect("try_wait");
        thread::sleep(Duration::from_millis(20));
    }
    let Some(status) = exited else {
        let _ = child.kill();
        let status = wait_exit(&mut child, "tcptrace", Duration::from_secs(5));
        panic!(
            "tcptrace still ran {PROMPTLY:?} after traffic with a closed stdout ({status}):\n{}",
            stderr()
        );
    };
    let err = stderr();
    assert!(status.success(), "{status}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with(READY)
            || l.starts_with("tcptrace: losses: ")
            || l.starts_with("tcptrace: socket map: ")
            || l.starts_with("tcptrace: network namespaces: ")
            || l.starts_with("tcptrace: kernel cost per call: ")
            || (l.starts_with("tcptrace: ") && l.contains(" events ("))),
        "a closed stdout is not an error:\n{err}"
    );
    // Every way out ends with the summary, the loss line included.
    for want in ["tcptrace: losses: ", " events ("] {
        assert!(
            err.contains(want),
            "no {want:?} after a closed stdout:\n{err}"
        );
    }
}

/// The first Ctrl-C asks for the final report; when that cannot come (here
/// stdout is a pipe nobody reads, full, so the event loop is stuck in
/// `write`), a second Ctrl-C exits at once, with 130 and a line that says
/// the final report was skipped.
#[test]
fn a_second_ctrl_c_exits_at_once() {
    let lab = lab!();
    let (mut child, stderr) = spawn_tracer_raw(&["--json", "--port", "29304"]);
    // 200 connections, ten transitions each, some 300 bytes of JSON per
    // transition: far more than the pipe's 64 KiB, never read.
    let server = lab.server(&[
        "--addr",
        "127.0.0.1:29304",
        "--connections",
        "200",
        "--read-request",
        "--wait-peer-close",
    ]);
    let client = lab.client(&[
        "--addr",
        "127.0.0.1:29304",
        "--connections",
        "200",
        "--one-by-one",
        "--send",
    ]);
    client.wait_success();
    server.wait_success();
    thread::sleep(Duration::from_millis(500));
    signal(&child, libc::SIGINT);
    thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "with stdout full, the first Ctrl-C cannot finish the run:\n{}",
        "(still running is the premise of this test)"
    );
    let t = Instant::now();
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, "tcptrace", Duration::from_secs(10));
    let took = t.elapsed();
    let err = stderr();
    assert!(
        took < Duration::from_secs(2),
        "the second Ctrl-C took {took:?}:\n{err}"
    );
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("again: exiting without the final report"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
