//! tracefs not mounted: tcptrace must mount it itself. Run in a private mount
//! namespace (`unshare --mount`) where tracefs is unmounted first, so the host
//! is untouched. Needs root; run with `--test-threads=1` like every root test.

use std::process::Command;

use integration_tests::{require_root, tracer_bin};

#[test]
fn mounts_tracefs_when_it_is_not_mounted() {
    require_root();
    let bin = tracer_bin();
    // In a private mount namespace: unmount tracefs (and its debugfs alias)
    // if present, check it is gone, then run tcptrace for one second.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         umount /sys/kernel/debug 2>/dev/null; \
         if [ -d /sys/kernel/tracing/events ]; then echo 'tracefs still mounted' >&2; exit 99; fi; \
         {} -v -d 1 --port 1; rc=$?; \
         [ -d /sys/kernel/tracing/events ] || {{ echo 'tracefs not mounted afterwards' >&2; exit 98; }}; \
         exit $rc",
        bin.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("mounted tracefs at /sys/kernel/tracing"),
        "tcptrace should say it mounted tracefs:\n{stderr}"
    );
    assert!(stderr.contains("tcptrace: tracing"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
