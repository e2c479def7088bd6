//! Builds the eBPF `CONFIG` offsets from the running kernel's tracepoint
//! formats, and the table of `enum sk_rst_reason` names.

use tcptrace_common::config::{
    ReceiveResetOffsets, SendResetOffsets, SetStateOffsets, SockLengthOffsets, TpOffsets,
};

use crate::{
    kernel::tracefs::{Format, FormatError, Tracefs, TracefsError},
    model::reset_reasons::ResetReasons,
};

/// The tracepoints tcptrace attaches to, as (group, name); each eBPF program
/// is named after its tracepoint.
pub const TRACEPOINTS: [(&str, &str); 6] = [
    ("sock", "inet_sock_set_state"),
    ("tcp", "tcp_send_reset"),
    ("tcp", "tcp_receive_reset"),
    ("sock", "sock_recv_length"),
    ("sock", "sock_send_length"),
    ("tcp", "tcp_destroy_sock"),
];

fn with_tp<T>(tp: &str, f: impl FnOnce() -> Result<T, FormatError>) -> Result<T, TracefsError> {
    f().map_err(|source| TracefsError::Format {
        tracepoint: tp.to_owned(),
        source,
    })
}

fn set_state(f: &Format) -> Result<SetStateOffsets, FormatError> {
    Ok(SetStateOffsets {
        skaddr: f.offset("skaddr", 8)?,
        oldstate: f.offset("oldstate", 4)?,
        newstate: f.offset("newstate", 4)?,
        sport: f.offset("sport", 2)?,
        dport: f.offset("dport", 2)?,
        family: f.offset("family", 2)?,
        protocol: f.offset("protocol", 2)?,
        saddr: f.offset("saddr", 4)?,
        daddr: f.offset("daddr", 4)?,
        saddr_v6: f.offset("saddr_v6", 16)?,
        daddr_v6: f.offset("daddr_v6", 16)?,
    })
}

fn send_reset(f: &Format) -> Result<SendResetOffsets, FormatError> {
    Ok(SendResetOffsets {
        skaddr: f.offset("skaddr", 8)?,
        state: f.offset("state", 4)?,
        reason: f.offset("reason", 4)?,
        // sizeof(struct sockaddr_in6): the layout since Linux 6.10.
        saddr: f.offset("saddr", 28)?,
        daddr: f.offset("daddr", 28)?,
    })
}

fn receive_reset(f: &Format) -> Result<ReceiveResetOffsets, FormatError> {
    Ok(ReceiveResetOffsets {
        skaddr: f.offset("skaddr", 8)?,
        sport: f.offset("sport", 2)?,
        dport: f.offset("dport", 2)?,
        family: f.offset("family", 2)?,
        saddr: f.offset("saddr", 4)?,
        daddr: f.offset("daddr", 4)?,
        saddr_v6: f.offset("saddr_v6", 16)?,
        daddr_v6: f.offset("daddr_v6", 16)?,
        sock_cookie: f.offset("sock_cookie", 8)?,
        _pad: 0,
    })
}

fn sock_length(f: &Format) -> Result<SockLengthOffsets, FormatError> {
    Ok(SockLengthOffsets {
        sk: f.offset("sk", 8)?,
        family: f.offset("family", 2)?,
        protocol: f.offset("protocol", 2)?,
        ret: f.offset("ret", 4)?,
    })
}

/// Read every tracepoint layout tcptrace needs. A missing tracepoint or field
/// is an error that names it.
pub fn read(tracefs: &Tracefs) -> Result<(TpOffsets, ResetReasons), TracefsError> {
    let [ss, sr, rr, rl, sl, ds] = TRACEPOINTS.map(|(g, n)| tracefs.format(g, n));
    let (ss, sr, rr, rl, sl, ds) = (ss?, sr?, rr?, rl?, sl?, ds?);
    let offsets = TpOffsets {
        set_state: with_tp("sock:inet_sock_set_state", || set_state(&ss))?,
        send_reset: with_tp("tcp:tcp_send_reset", || send_reset(&sr))?,
        receive_reset: with_tp("tcp:tcp_receive_reset", || receive_reset(&rr))?,
        recv_length: with_tp("sock:sock_recv_length", || sock_length(&rl))?,
        send_length: with_tp("sock:sock_send_length", || sock_length(&sl))?,
        destroy_skaddr: with_tp("tcp:tcp_destroy_sock", || ds.offset("skaddr", 8))?,
        sys_exit_ret: 0,
    };
    Ok((offsets, ResetReasons::from_pairs(sr.symbols("reason"))))
}

/// The syscall-exit tracepoints `--timewait` attaches to, when the kernel has
/// them (`CONFIG_FTRACE_SYSCALLS`).
pub const SYSCALL_TRACEPOINTS: [(&str, &str); 2] = [
    ("syscalls", "sys_exit_bind"),
    ("syscalls", "sys_exit_connect"),
];

/// The offset of `ret` in the syscall-exit records (both share a layout).
pub fn sys_exit_ret(tracefs: &Tracefs) -> Result<u32, TracefsError> {
    let mut offset = None;
    for (g, n) in SYSCALL_TRACEPOINTS {
        let f = tracefs.format(g, n)?;
        let o = with_tp(&format!("{g}:{n}"), || f.offset("ret", 8))?;
        if offset.is_some_and(|prev| prev != o) {
            return Err(TracefsError::Format {
                tracepoint: format!("{g}:{n}"),
                source: FormatError::MissingField(format!(
                    "ret at the offset of the other syscall exits (found {o})"
                )),
            });
        }
        offset = Some(o);
    }
    Ok(offset.unwrap_or(0))
}
