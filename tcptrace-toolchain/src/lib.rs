//! Where the BPF toolchain lives: one crate that xtask (which installs it) and
//! tcptrace's build script (which puts it on the eBPF build's PATH) both use,
//! so both compute the same paths.
//!
//! The cache sits outside `target/` so that a fresh clone reuses it:
//! `$TCPTRACE_CACHE_DIR`, else `$XDG_CACHE_HOME/tcptrace`, else
//! `$HOME/.cache/tcptrace`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// The bpf-linker release known to build against rustc's LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cache root, if a home or cache directory is known.
#[must_use]
pub fn cache_root() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("TCPTRACE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("tcptrace"));
    }
    env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("tcptrace"))
}

/// The LLVM major version of the active rustc, from `rustc -vV`.
#[must_use]
pub fn rustc_llvm_major() -> Option<u32> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    parse_llvm_major(&String::from_utf8_lossy(&out.stdout))
}

/// `LLVM version: 22.1.2` -> 22.
#[must_use]
pub fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

/// Install root of bpf-linker built against LLVM `major`: `<root>/bin/bpf-linker`.
#[must_use]
pub fn linker_root(cache: &Path, major: u32) -> PathBuf {
    cache
        .join("toolchain")
        .join(format!("bpf-linker-{BPF_LINKER_VERSION}-llvm{major}"))
}

/// Where rustc's libLLVM is linked for bpf-linker's build and run-time rpath.
#[must_use]
pub fn llvm_prefix(cache: &Path, major: u32) -> PathBuf {
    cache.join("toolchain").join(format!("llvm-{major}"))
}

/// The cached bpf-linker's bin directory, if the binary is there.
#[must_use]
pub fn cached_linker_bin() -> Option<PathBuf> {
    let bin = linker_root(&cache_root()?, rustc_llvm_major()?).join("bin");
    bin.join("bpf-linker").is_file().then_some(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nLLVM version: 22.1.2\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0"), None);
    }

    #[test]
    fn linker_cache_is_keyed_by_version_and_llvm() {
        let root = linker_root(Path::new("/c"), 22);
        assert_eq!(root, PathBuf::from("/c/toolchain/bpf-linker-0.13.0-llvm22"));
    }
}
