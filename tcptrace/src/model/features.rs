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
