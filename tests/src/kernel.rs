//! What the running kernel offers, for the tests whose expectations differ
//! by kernel (the kernel matrix runs them on older kernels, see
//! docs/kernels.md). A test that needs what this kernel lacks calls
//! [`unsupported`]: it fails with a line the matrix reports as unsupported,
//! with the reason, and never passes.

use std::{fs, path::Path, process::Command};

/// The start of the panic message of [`unsupported`]; xtask's matrix
/// results (`xtask/src/kernel/results.rs`) look for the same text.
pub const UNSUPPORTED: &str = "unsupported on this kernel: ";

/// Fail the calling test as unsupported on this kernel, saying why.
pub fn unsupported(why: &str) -> ! {
    panic!("{UNSUPPORTED}{why}")
}

/// The tracepoint's `format` file, `None` when the kernel lacks it. Mounts
/// tracefs first when it is not mounted (as tcptrace itself does).
fn format_of(system: &str, name: &str) -> Option<String> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if !Path::new(TRACEFS).join("events").is_dir() {
        let mounted = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", TRACEFS])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "cannot mount tracefs at {TRACEFS}: tests need root"
        );
    }
    fs::read_to_string(format!("{TRACEFS}/events/{system}/{name}/format")).ok()
}

/// Whether the kernel has the tracepoint `system:name`.
#[must_use]
pub fn has_tracepoint(system: &str, name: &str) -> bool {
    format_of(system, name).is_some()
}

/// Whether `tcp:tcp_send_reset` has its `reason` field and fires for a
/// reset sent without a socket (both Linux 6.10).
#[must_use]
pub fn send_reset_has_reason() -> bool {
    format_of("tcp", "tcp_send_reset").is_some_and(|format| format.contains(" reason;"))
}

/// The reset reason a test expects: `kernel`'s on kernels whose
/// `tcp_send_reset` has the field, none before (tcptrace never invents one).
#[must_use]
pub fn sent_reset_reason(kernel: &'static str) -> Option<&'static str> {
    send_reset_has_reason().then_some(kernel)
}

/// Whether the kernel counts the runs of a tracepoint program it skips
/// because another BPF program runs on the CPU (`recursion_misses` of
/// tracepoint programs, Linux 6.7): before, such a loss is silent.
#[must_use]
pub fn counts_skipped_tracepoint_runs() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}
