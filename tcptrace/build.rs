//! Builds the eBPF object (`tcptrace-ebpf`) with aya-build and the stable
//! toolchain, for `include_bytes_aligned!` in the loader; and names the git
//! commit being built (`TCPTRACE_GIT_COMMIT`, for `--version`).

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    git_commit(&manifest_dir);
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

/// Run git in `dir`; its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // No optional index refresh: `git status` would otherwise rewrite the
    // index it is watched by.
    let out = Command::new("git")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Set `TCPTRACE_GIT_COMMIT`: `git rev-parse --short=12 HEAD`, with
/// `-dirty` when tracked files differ from it; `unknown` outside a git
/// checkout (a source tarball) or without git. Rerun when HEAD moves (a
/// checkout, a commit: HEAD, the ref it points to, packed-refs) or the index
/// changes (`git add`, a commit).
fn git_commit(dir: &Path) {
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    let value = match &commit {
        None => "unknown".to_owned(),
        Some(c) => {
            let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c.clone()
            }
        }
    };
    println!("cargo:rustc-env=TCPTRACE_GIT_COMMIT={value}");
    if commit.is_none() {
        return;
    }
    // A worktree has a git dir of its own (HEAD, index) and shares the refs
    // of the common dir. Only existing paths: cargo reruns on every build
    // for a path that does not exist.
    let path = |args: &[&str]| git(dir, args).map(|p| dir.join(p));
    let git_dir = path(&["rev-parse", "--git-dir"]);
    let common = path(&["rev-parse", "--git-common-dir"]);
    let head_ref = git(dir, &["symbolic-ref", "-q", "HEAD"]);
    let mut watch = Vec::new();
    if let Some(g) = &git_dir {
        watch.extend([g.join("HEAD"), g.join("index")]);
    }
    if let Some(c) = &common {
        watch.push(c.join("packed-refs"));
        if let Some(r) = &head_ref {
            watch.push(c.join(r));
        }
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
