//! The recv/send hooks on kernels without `sock:sock_recv_length` and
//! `sock:sock_send_length` (before 6.3): fexit programs on `tcp_recvmsg`
//! and `tcp_sendmsg`, which userspace loads instead of the tracepoints'.
//! Only TCP sockets reach these functions, the socket is their first
//! argument, and the return value comes through `bpf_get_func_ret` (5.17+)
//! whatever the function's argument count (`tcp_recvmsg` lost one in 5.19).
//! `sendfile`/`splice` paths that bypass them are not seen.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::fexit,
    programs::FExitContext,
};
use tcptrace_common::Counter;

use super::io::on_tcp_io;
use crate::maps::count;

#[fexit(function = "tcp_recvmsg")]
pub fn tcp_recvmsg_exit(ctx: FExitContext) -> i32 {
    io_exit(&ctx, true);
    0
}

#[fexit(function = "tcp_sendmsg")]
pub fn tcp_sendmsg_exit(ctx: FExitContext) -> i32 {
    io_exit(&ctx, false);
    0
}

#[inline(always)]
fn io_exit(ctx: &FExitContext, is_recv: bool) {
    // The argument as a number: read straight from the context it would be
    // a typed pointer to `struct sock`, on which the verifier refuses the
    // arithmetic the pair cache's hash does.
    // SAFETY: the context is the traced function's arguments, one u64 each;
    // the helper copies the first.
    let Ok(sk) = (unsafe { bpf_probe_read_kernel(ctx.as_ptr().cast::<u64>()) }) else {
        count(Counter::ReadErrors);
        return;
    };
    let Ok(ret) = ctx.ret::<i32>() else {
        count(Counter::ReadErrors);
        return;
    };
    #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid")]
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    on_tcp_io(ctx, tgid, sk, ret, is_recv);
}
