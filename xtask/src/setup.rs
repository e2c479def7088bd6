//! BPF toolchain set-up on stable Rust, idempotent:
//! 1. `rust-src`, so the eBPF build can `-Z build-std=core` (build.rs sets
//!    `RUSTC_BOOTSTRAP=1` for that build only);
//! 2. bpf-linker built against rustc's *own* libLLVM (it must match rustc's
//!    LLVM major, and distributions rarely ship that LLVM), cached outside
//!    `target/` so a fresh clone reuses it.
//!
//! Every step that fails says what failed and the command to do it by hand.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

use tcptrace_toolchain as toolchain;

use crate::status;

fn sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running `rustc --print sysroot` (is Rust installed?)")?;
    if !out.status.success() {
        bail!("`rustc --print sysroot` failed");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn ensure_rust_src(sysroot: &Path) -> Result<()> {
    let core = sysroot.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src");
    status(Command::new("rustup").args(["component", "add", "rust-src"]))
        .context("installing rust-src failed; install it by hand: rustup component add rust-src")
}

/// Install clippy if this toolchain lacks it (a minimal rustup profile).
pub fn ensure_clippy() -> Result<()> {
    let present = crate::cargo()
        .args(["clippy", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing clippy");
    status(Command::new("rustup").args(["component", "add", "clippy"]))
        .context("installing clippy failed; install it by hand: rustup component add clippy")
}

/// rustc's shared libLLVM, e.g. `libLLVM.so.22.1-rust-1.95.0-stable`.
fn rustc_libllvm(sysroot: &Path) -> Result<PathBuf> {
    let lib = sysroot.join("lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        anyhow!(
            "no libLLVM*.so in {}: this rustc does not ship its LLVM as a shared library, \
             so bpf-linker cannot be built against it; install bpf-linker by hand \
             (cargo install bpf-linker) with an LLVM of the same major version as `rustc -vV`",
            lib.display()
        )
    })
}

fn ensure_bpf_linker(sysroot: &Path) -> Result<()> {
    if let Some(bin) = toolchain::cached_linker_bin() {
        log_found(&bin);
        return Ok(());
    }
    let cache = toolchain::cache_root()
        .ok_or_else(|| anyhow!("neither HOME nor XDG_CACHE_HOME nor TCPTRACE_CACHE_DIR is set"))?;
    let major = toolchain::rustc_llvm_major()
        .ok_or_else(|| anyhow!("cannot read the LLVM version from `rustc -vV`"))?;
    let libllvm = rustc_libllvm(sysroot)?;
    let prefix = toolchain::llvm_prefix(&cache, major);
    let root = toolchain::linker_root(&cache, major);
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    // bpf-linker's build links `-lLLVM` from $LLVM_PREFIX/lib and keeps an
    // rpath there, so both names point at rustc's library and must stay.
    let file_name = libllvm
        .file_name()
        .ok_or_else(|| anyhow!("bad libLLVM path {}", libllvm.display()))?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(file_name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    }
    let version = toolchain::BPF_LINKER_VERSION;
    let manual = format!(
        "LLVM_PREFIX={} cargo install bpf-linker --version {version} --no-default-features \
         --features llvm-{major} --root {}",
        prefix.display(),
        root.display()
    );
    eprintln!(
        "xtask: building bpf-linker {version} against rustc's LLVM {major} (about 1-2 minutes, once)"
    );
    status(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--locked", "--version", version])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .arg("--root")
            .arg(&root),
    )
    .with_context(|| format!("building bpf-linker failed; to do it by hand: {manual}"))?;
    let bin = toolchain::cached_linker_bin()
        .ok_or_else(|| anyhow!("bpf-linker built but not found under {}", root.display()))?;
    log_found(&bin);
    Ok(())
}

fn log_found(bin: &Path) {
    if std::env::var_os("XTASK_VERBOSE").is_some() {
        eprintln!("xtask: bpf-linker at {}", bin.display());
    }
}

/// Make sure everything the eBPF build needs is installed.
pub fn ensure() -> Result<()> {
    let sysroot = sysroot()?;
    ensure_rust_src(&sysroot)?;
    ensure_bpf_linker(&sysroot)
}
