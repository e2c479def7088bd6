//! Everything that reads the running system outside BPF: sock_diag, `/proc`
//! (socket holders, process details, network namespaces), every network
//! namespace of the host (a sock_diag socket, sysctls and netstat in each),
//! cgroups (paths by v2 id, owners' v1 paths and in-namespace pids), the
//! sysctls, `/proc/net/netstat`, stack symbolization, the kernel's
//! release and the local time zone.

pub mod cgroup;
pub mod jvm;
pub mod localtime;
pub mod netns;
pub mod netstat;
pub mod procs;
pub mod sockdiag;
pub mod symbolize;
pub mod sysctl;
pub mod uname;
