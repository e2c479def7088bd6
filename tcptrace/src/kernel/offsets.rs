//! Builds the eBPF `CONFIG` offsets from the running kernel's tracepoint
//! formats, and the table of `enum sk_rst_reason` names.

use tcptrace_common::config::{
    ReceiveResetOffsets, SEND_RESET_SOCKADDR, SEND_RESET_SPLIT, SendResetOffsets, SetStateOffsets,
    SockLengthOffsets, TpOffsets,
};

use crate::{
    kernel::tracefs::{Format, FormatError, Tracefs, TracefsError},
    model::reset_reasons::ResetReasons,
};

/// The tracepoints tcptrace attaches to, as (group, name); each eBPF program
/// is named after its tracepoint. The recv/send pair has a fallback
/// ([`crate::kernel::io_hooks`]); the others are needed.
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

/// `tcp_send_reset`'s layout: since Linux 6.10 a `reason` and the
/// endpoints as 28-byte sockaddrs; before, the `tcp_event_sk_skb` class
/// (split addresses, ports and family, no reason).
fn send_reset(f: &Format) -> Result<SendResetOffsets, FormatError> {
    let skaddr = f.offset("skaddr", 8)?;
    let state = f.offset("state", 4)?;
    if f.offset("reason", 4).is_ok() {
        return Ok(SendResetOffsets {
            skaddr,
            state,
            reason: f.offset("reason", 4)?,
            // sizeof(struct sockaddr_in6).
            saddr: f.offset("saddr", 28)?,
            daddr: f.offset("daddr", 28)?,
            layout: SEND_RESET_SOCKADDR,
            ..SendResetOffsets::default()
        });
    }
    Ok(SendResetOffsets {
        skaddr,
        state,
        reason: 0,
        saddr: f.offset("saddr", 4)?,
        daddr: f.offset("daddr", 4)?,
        layout: SEND_RESET_SPLIT,
        sport: f.offset("sport", 2)?,
        dport: f.offset("dport", 2)?,
        family: f.offset("family", 2)?,
        saddr_v6: f.offset("saddr_v6", 16)?,
        daddr_v6: f.offset("daddr_v6", 16)?,
        _pad: 0,
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

/// Every tracepoint layout tcptrace reads, and whether the recv/send
/// tracepoints exist (false before 6.3: their offsets stay 0). A missing
/// tracepoint or field otherwise is an error that names it.
pub fn read(tracefs: &Tracefs) -> Result<(TpOffsets, ResetReasons, bool), TracefsError> {
    let [ss, sr, rr, rl, sl, ds] = TRACEPOINTS.map(|(g, n)| tracefs.format(g, n));
    let (ss, sr, rr, ds) = (ss?, sr?, rr?, ds?);
    let io = match (rl, sl) {
        (Ok(rl), Ok(sl)) => Some((
            with_tp("sock:sock_recv_length", || sock_length(&rl))?,
            with_tp("sock:sock_send_length", || sock_length(&sl))?,
        )),
        (Err(TracefsError::MissingTracepoint { .. }), _)
        | (_, Err(TracefsError::MissingTracepoint { .. })) => None,
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let (recv_length, send_length) = io.unwrap_or_default();
    let offsets = TpOffsets {
        set_state: with_tp("sock:inet_sock_set_state", || set_state(&ss))?,
        send_reset: with_tp("tcp:tcp_send_reset", || send_reset(&sr))?,
        receive_reset: with_tp("tcp:tcp_receive_reset", || receive_reset(&rr))?,
        recv_length,
        send_length,
        destroy_skaddr: with_tp("tcp:tcp_destroy_sock", || ds.offset("skaddr", 8))?,
        sys_exit_ret: 0,
    };
    Ok((
        offsets,
        ResetReasons::from_pairs(sr.symbols("reason")),
        io.is_some(),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
";

    /// Linux 6.10 and later (read from 6.18's tracefs).
    #[test]
    fn reads_the_send_reset_layout_with_a_reason() {
        let text = format!(
            "{HEADER}\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;
"
        );
        let o = send_reset(&Format::parse(&text).unwrap()).unwrap();
        assert_eq!(o.layout, SEND_RESET_SOCKADDR);
        assert_eq!(
            (o.skaddr, o.state, o.reason, o.saddr, o.daddr),
            (16, 24, 28, 32, 60)
        );
    }

    /// Before 6.10: the `tcp_event_sk_skb` class, as 6.1 has it.
    #[test]
    fn reads_the_send_reset_layout_before_6_10() {
        let text = format!(
            "{HEADER}\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
"
        );
        let o = send_reset(&Format::parse(&text).unwrap()).unwrap();
        assert_eq!(o.layout, SEND_RESET_SPLIT);
        assert_eq!(
            (
                o.sport, o.dport, o.family, o.saddr, o.daddr, o.saddr_v6, o.daddr_v6
            ),
            (28, 30, 32, 34, 38, 42, 58)
        );
        let broken = text.replace("saddr_v6", "src_v6");
        assert!(send_reset(&Format::parse(&broken).unwrap()).is_err());
    }
}
