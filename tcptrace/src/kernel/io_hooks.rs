//! Which programs see a process's recv and send on TCP sockets: the
//! tracepoints `sock:sock_recv_length` and `sock:sock_send_length` (Linux
//! 6.3+), or, on older kernels, fexit programs on `tcp_recvmsg` and
//! `tcp_sendmsg` (BPF trampolines, which need the kernel's BTF; the return
//! value through `bpf_get_func_ret`, Linux 5.17+). Chosen at start-up from
//! what tracefs has, and said at `-v` and in `--version -v`.

use aya::{
    Btf, Ebpf,
    programs::{FExit, ProgramError},
};
use thiserror::Error;

/// The recv/send hooks in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoHooks {
    Tracepoints,
    Fexit,
}

/// The fallback's programs, and the kernel functions they attach to.
pub const FEXIT: [(&str, &str); 2] = [
    ("tcp_recvmsg_exit", "tcp_recvmsg"),
    ("tcp_sendmsg_exit", "tcp_sendmsg"),
];

impl IoHooks {
    /// The hooks to use when the tracepoints are `found` or not; tests force
    /// the fallback with `TCPTRACE_IO_FEXIT=1`, as on a kernel before 6.3.
    #[must_use]
    pub fn choose(found: bool) -> Self {
        let forced = std::env::var_os("TCPTRACE_IO_FEXIT").is_some_and(|v| v == "1");
        if found && !forced {
            IoHooks::Tracepoints
        } else {
            IoHooks::Fexit
        }
    }

    /// What `-v` and `--version -v` say.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            IoHooks::Tracepoints => "tracepoints sock:sock_recv_length and sock:sock_send_length",
            IoHooks::Fexit => {
                "fexit on tcp_recvmsg and tcp_sendmsg (this kernel has no \
                 sock:sock_recv_length/sock_send_length, Linux 6.3+)"
            }
        }
    }
}

#[derive(Debug, Error)]
#[error(
    "this kernel has no tracepoint sock:sock_recv_length/sock_send_length (Linux 6.3 or \
     later), and their fallback, fexit on {function} (Linux 5.17 or later with BTF), failed: \
     {why}; leak detection and the owners of accepted sockets need one of them"
)]
pub struct FallbackError {
    function: &'static str,
    why: String,
}

/// Load and attach the fexit fallback.
pub fn attach_fexit(ebpf: &mut Ebpf) -> Result<(), FallbackError> {
    let fail = |function, why: String| FallbackError { function, why };
    let btf = Btf::from_sys_fs().map_err(|e| fail(FEXIT[0].1, format!("reading BTF: {e}")))?;
    for (program, function) in FEXIT {
        let prog: &mut FExit = ebpf
            .program_mut(program)
            .ok_or_else(|| {
                fail(
                    function,
                    format!("program {program} missing (build mismatch)"),
                )
            })?
            .try_into()
            .map_err(|e: ProgramError| fail(function, e.to_string()))?;
        prog.load(function, &btf)
            .map_err(|e| fail(function, verifier(&e)))?;
        prog.attach().map_err(|e| fail(function, e.to_string()))?;
        log::info!("attached fexit {function} (program {program})");
    }
    Ok(())
}

/// A load error with the verifier's last lines, where it has some.
fn verifier(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log:\n{log}");
            // The refusal is the last line before the statistics.
            let stats = ["verification time", "stack depth", "processed "];
            let why = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !stats.iter().any(|s| l.starts_with(s)));
            match why {
                Some(why) => format!("{io_error} (verifier: {why})"),
                None => io_error.to_string(),
            }
        }
        e => e.to_string(),
    }
}
