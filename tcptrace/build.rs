//! Builds the eBPF object (`tcptrace-ebpf`) with aya-build and the stable
//! toolchain, for `include_bytes_aligned!` in the loader.

use std::{env, ffi::OsString, path::PathBuf};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("..").join("tcptrace-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to tcptrace-ebpf")?;

    // bpf-linker: on PATH, or in the cache that `cargo xtask setup` fills.
    let mut path = env::var_os("PATH").unwrap_or_default();
    if let Some(bin) = tcptrace_toolchain::cached_linker_bin() {
        let mut p = OsString::from(bin);
        p.push(":");
        p.push(&path);
        path = p;
    }
    let found = env::split_paths(&path).any(|d| d.join("bpf-linker").is_file());
    if !found && env::var_os("AYA_BUILD_SKIP").is_none() {
        bail!(
            "bpf-linker not found on PATH or in the tcptrace cache.\n\
             Run `cargo xtask setup` (it builds bpf-linker against rustc's own LLVM), \
             or use `cargo xtask build`."
        );
    }
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=TCPTRACE_CACHE_DIR");

    // SAFETY: build scripts are single-threaded here; the variables only reach
    // the child cargo that aya-build spawns for the eBPF crate. RUSTC_BOOTSTRAP
    // lets stable rustc take `-Z build-std=core` for the bpfel target, for the
    // eBPF build only; the userspace build stays plain stable.
    unsafe {
        env::set_var("PATH", &path);
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    // Build with the toolchain that is building us (rustup sets this), not nightly.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tcptrace-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
