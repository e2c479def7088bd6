//! `sys_exit_bind` / `sys_exit_connect` (`--timewait` only): a `bind()`
//! that failed with EADDRINUSE or a `connect()` that failed with
//! EADDRNOTAVAIL, sent with the address the caller asked for.

use aya_ebpf::{
    helpers::generated::{self, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tcptrace_common::{
    AF_INET, AF_INET6, Counter, EADDRINUSE, EADDRNOTAVAIL, FailureEvent, RecordKind, SYSCALL_BIND,
    SYSCALL_CONNECT,
};

use crate::{
    config::accepts,
    emit::emit,
    maps::count,
    netns::task_netns,
    task::{current_owner, syscall_args},
    tracepoint::{header, read},
};

/// `bind()` returned EADDRINUSE: the port is held (TIME_WAIT sockets without
/// SO_REUSEADDR on both sides, or a live socket).
#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    if on_sys_exit(&ctx, SYSCALL_BIND, EADDRINUSE).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

/// `connect()` returned EADDRNOTAVAIL: no local port is free for that
/// destination (ephemeral ports exhausted).
#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if on_sys_exit(&ctx, SYSCALL_CONNECT, EADDRNOTAVAIL).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

/// Every bind and connect of every process passes here; the common path is
/// one read of `ret` and a compare.
#[inline(always)]
fn on_sys_exit(ctx: &TracePointContext, syscall: u32, errno: i32) -> Result<(), i64> {
    if config!(emit_failures) == 0 {
        return Ok(());
    }
    let ret: i64 = read(ctx, config!(offsets.sys_exit_ret))?;
    if ret != -i64::from(errno) {
        return Ok(());
    }
    let netns = task_netns();
    if config!(netns_filter) != 0 && netns != config!(netns_filter) {
        return Ok(());
    }
    let mut ev = FailureEvent {
        // SAFETY: no preconditions.
        header: header(RecordKind::Failure, netns, unsafe { bpf_ktime_get_ns() }),
        owner: current_owner(),
        syscall,
        ret: -errno,
        ..FailureEvent::default()
    };
    if let Some([fd, uaddr, len]) = syscall_args() {
        #[expect(clippy::cast_possible_truncation, reason = "fds are ints")]
        {
            ev.fd = fd as u32;
        }
        // sockaddr_in (16 bytes) or sockaddr_in6 (28): family, port (network
        // order), then the v4 address at byte 4 or the v6 one at byte 8.
        let mut sa = [0u8; 28];
        let n = if len >= 28 { 28 } else { 16 };
        // SAFETY: reads at most `len` bytes (16 or 28) of the caller's
        // sockaddr into our buffer; the helper faults safely.
        let r =
            unsafe { generated::bpf_probe_read_user(sa.as_mut_ptr().cast(), n, uaddr as *const _) };
        if r == 0 && len >= 16 {
            let family = u16::from_ne_bytes([sa[0], sa[1]]);
            let port = u16::from_be_bytes([sa[2], sa[3]]);
            if family == AF_INET {
                ev.addr[..4].copy_from_slice(&sa[4..8]);
            } else if family == AF_INET6 && n == 28 {
                ev.addr.copy_from_slice(&sa[8..24]);
            } else {
                return Ok(());
            }
            let (lport, rport) = if syscall == SYSCALL_BIND {
                (port, 0)
            } else {
                (0, port)
            };
            // The other side's port is unknown (0): a filter on it drops
            // the event, `--port` matches the one known.
            if !accepts(family, lport, rport) {
                return Ok(());
            }
            ev.family = family;
            ev.port = port;
        }
    }
    // Rare, and worth printing at once: the reader is woken.
    emit(ev, Counter::FailureEvents, 0);
    Ok(())
}
