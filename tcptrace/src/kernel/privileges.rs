//! Privilege checks before touching BPF, so that a missing capability is
//! named with its fix instead of surfacing as a bare EPERM from the verifier.

use thiserror::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrivilegeError {
    #[error(
        "missing {missing}: loading tracepoint programs needs root, or CAP_BPF and CAP_PERFMON \
         (CAP_SYS_ADMIN on kernels before 5.8). Run it with sudo, or grant the capabilities: \
         sudo setcap cap_bpf,cap_perfmon,cap_sys_admin,cap_dac_read_search,cap_sys_ptrace+ep \"$(command -v tcptrace)\""
    )]
    Missing { missing: String },
    #[error("cannot read this process's capabilities from /proc/self/status: {0}")]
    Unreadable(String),
}

/// Which required capabilities the effective set `capeff` lacks.
#[must_use]
pub fn missing(capeff: u64) -> Vec<&'static str> {
    let has = |cap: u32| capeff & (1u64 << cap) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut out = Vec::new();
    if !(has(CAP_BPF) || admin) {
        out.push("CAP_BPF");
    }
    if !(has(CAP_PERFMON) || admin) {
        out.push("CAP_PERFMON");
    }
    out
}

/// Fail with a named capability if this process cannot load the tracer.
pub fn check() -> Result<(), PrivilegeError> {
    let status = procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map_err(|e| PrivilegeError::Unreadable(e.to_string()))?;
    let missing = missing(status.capeff);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing {
            missing: missing.join(" and "),
        })
    }
}

/// Lift `RLIMIT_MEMLOCK` for kernels that still charge BPF maps to it (before
/// 5.11 memcg accounting). Failure is harmless on newer kernels.
pub fn raise_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        log::debug!("could not raise RLIMIT_MEMLOCK: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_capability() {
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn error_says_how_to_fix_it() {
        let e = PrivilegeError::Missing {
            missing: "CAP_BPF".into(),
        };
        let s = e.to_string();
        assert!(s.contains("sudo") && s.contains("setcap"), "{s}");
    }
}
