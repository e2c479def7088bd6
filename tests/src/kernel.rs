//! What the running kernel offers, for the tests whose expectations differ
//! by kernel (the kernel matrix runs them on older kernels, see
//! docs/kernels.md). A test that needs what this kernel lacks calls
//! [`unsupported`]: it fails with a line the matrix reports as unsupported,
//! with the reason, and never passes.

use std::fs;

/// The start of the panic message of [`unsupported`]; xtask's matrix
/// results (`xtask/src/kernel/results.rs`) look for the same text.
pub const UNSUPPORTED: &str = "unsupported on this kernel: ";

/// Fail the calling test as unsupported on this kernel, saying why.
pub fn unsupported(why: &str) -> ! {
    panic!("{UNSUPPORTED}{why}")
}

/// The running kernel's release as (major, minor), `(0, 0)` if unreadable.
#[must_use]
pub fn release() -> (u32, u32) {
    let text = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = text
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether `tcp:tcp_send_reset` has its `reason` field and fires for a
/// reset sent without a socket (both Linux 6.10): from the tracepoint's
/// format where tracefs is mounted, else from the release.
#[must_use]
pub fn send_reset_has_reason() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|dir| fs::read_to_string(format!("{dir}/events/tcp/tcp_send_reset/format")).ok())
        .map_or_else(
            || release() >= (6, 10),
            |format| format.contains(" reason;"),
        )
}

/// The reset reason a test expects: `kernel`'s on kernels whose
/// `tcp_send_reset` has the field, none before (tcptrace never invents one).
#[must_use]
pub fn sent_reset_reason(kernel: &'static str) -> Option<&'static str> {
    send_reset_has_reason().then_some(kernel)
}
