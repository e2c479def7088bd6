//! What tcptrace does on a kernel that lacks what a mode needs: a missing
//! tracepoint is named with the first release that has it, and the recv/send
//! tracepoints (Linux 6.3+) fall back to fexit on `tcp_recvmsg` and
//! `tcp_sendmsg`, announced, or refused with both reasons. The older kernels
//! themselves run in `cargo xtask test --kernel`; here the host's kernel is
//! made to look older: the fallback forced with `TCPTRACE_IO_FEXIT=1`, and
//! tracefs replaced, in a private mount namespace, by a copy without one
//! tracepoint. Needs root.

use std::{process::Command, time::Duration};

use integration_tests::{patient, require_root, tracer_bin};

/// `tcptrace ARGS` with `env`, killed past 20 s (its runs are of 1 s).
fn run(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    require_root();
    let out = Command::new("timeout")
        .arg(patient(Duration::from_secs(20)).as_secs().to_string())
        .arg(tracer_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("timeout (coreutils) runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Leak mode needs recv/send hooks: with the tracepoints out of the way it
/// either runs on the fallback and says so, or stops with both reasons (the
/// development kernels refuse BPF trampolines).
#[test]
fn the_recv_send_fallback_is_announced_or_refused_with_both_reasons() {
    let env = [("TCPTRACE_IO_FEXIT", "1")];
    let (code, stderr) = run(&env, &["--closewait-leaks", "-d", "1", "--port", "1", "-v"]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code == Some(0) {
        assert!(
            stderr.contains("recv/send hooks: fexit on tcp_recvmsg and tcp_sendmsg"),
            "{stderr}"
        );
        assert!(stderr.contains("attached fexit tcp_recvmsg"), "{stderr}");
    } else {
        assert_eq!(code, Some(1), "{stderr}");
        for what in [
            "sock:sock_recv_length",
            "Linux 6.3 or later",
            "fexit on tcp_recvmsg",
            "failed: ",
        ] {
            assert!(stderr.contains(what), "no {what:?} in:\n{stderr}");
        }
    }
    // Modes without recv/send hooks do not need either.
    let (code, stderr) = run(&env, &["--hist", "-d", "1", "--port", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// A tracefs without `sock:inet_sock_set_state` (a copy of the real one's
/// other formats that tcptrace reads, those the kernel has, bind-mounted
/// over it in a private mount namespace): the error
/// names the tracepoint and the first release that has it.
#[test]
fn a_missing_tracepoint_is_named_with_the_release_that_has_it() {
    require_root();
    let script = format!(
        "set -e; mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing; \
         fake=$(mktemp -d); \
         for tp in tcp/tcp_send_reset tcp/tcp_receive_reset tcp/tcp_destroy_sock \
                   sock/sock_recv_length sock/sock_send_length; do \
           [ -e /sys/kernel/tracing/events/$tp/format ] || continue; \
           mkdir -p $fake/events/$tp; cp /sys/kernel/tracing/events/$tp/format $fake/events/$tp/; \
         done; \
         mount --bind $fake /sys/kernel/tracing; \
         set +e; {} -d 1 --port 1; echo \"exit=$?\" >&2",
        tracer_bin().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exit=1"), "{stderr}");
    for what in ["sock:inet_sock_set_state", "Linux 4.16 or later"] {
        assert!(stderr.contains(what), "no {what:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}
