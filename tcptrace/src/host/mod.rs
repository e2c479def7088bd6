//! Everything that reads the running system outside BPF: sock_diag, `/proc`
//! (socket holders, process details, network namespaces), the sysctls,
//! `/proc/net/netstat`, and stack symbolization.

pub mod netstat;
pub mod procs;
pub mod sockdiag;
pub mod symbolize;
pub mod sysctl;
