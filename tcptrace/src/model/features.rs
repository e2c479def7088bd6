//! What the running kernel offers tcptrace, as `tcptrace --version -v`
//! reports it: found by `kernel::features` (and the release by
//! `host::uname`) without loading anything, rendered by `report::version`.

/// What one look at the system found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe<T> {
    Found(T),
    Missing,
    /// It could not be read: "needs root" for a permission error, else the
    /// error.
    Unreadable(String),
}

/// The first Linux release with tracepoint `name` (without its group), for
/// the messages that name a missing one.
#[must_use]
pub fn since(name: &str) -> &'static str {
    match name {
        "inet_sock_set_state" => "4.16",
        "tcp_send_reset" | "tcp_destroy_sock" | "tcp_receive_reset" => "4.15",
        "sock_recv_length" | "sock_send_length" => "6.3",
        "sys_exit_bind" | "sys_exit_connect" => "2.6.33",
        _ => "?",
    }
}

/// Whether a missing tracepoint `group:name` has a fallback: the recv/send
/// pair (fexit on `tcp_recvmsg`/`tcp_sendmsg`).
#[must_use]
pub fn has_fallback(name: &str) -> bool {
    matches!(name, "sock:sock_recv_length" | "sock:sock_send_length")
}

/// What a permission error means, for [`Probe::Unreadable`].
pub const NEEDS_ROOT: &str = "needs root";

/// One tracepoint tcptrace attaches to, and whether the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracepoint {
    /// `group:name`.
    pub name: String,
    /// Only `--timewait`'s failed binds and connects need it; tcptrace runs
    /// without.
    pub optional: bool,
    pub found: Probe<()>,
}

/// Everything `--version -v` lists about the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    /// As `uname -r` prints it.
    pub release: String,
    /// The kernel's BTF, at its path.
    pub btf: Probe<String>,
    /// Where tracefs is mounted.
    pub tracefs: Probe<String>,
    /// Every tracepoint tcptrace uses; empty when tracefs is not found.
    pub tracepoints: Vec<Tracepoint>,
    /// `kernel.bpf_stats_enabled`, as the sysctl reads.
    pub bpf_stats: Probe<String>,
}
