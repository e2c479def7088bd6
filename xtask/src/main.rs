//! `cargo xtask`: the project's build and test entry points. It sets up the
//! BPF toolchain on its own (rust-src, bpf-linker against rustc's own LLVM,
//! cached outside `target/`), so a fresh machine needs only cargo.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bpf_stack;
mod dist;
mod kernel;
mod layers;
mod netns;
mod procstat;
mod scale;
mod setup;
mod soak;

#[derive(Parser)]
#[command(about = "tcptrace build, run and test tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install rust-src and build bpf-linker against rustc's LLVM (cached).
    Setup,
    /// Set up the toolchain and build tcptrace.
    Build {
        /// Build the optimised binary (target/release/tcptrace).
        #[arg(long)]
        release: bool,
    },
    /// The release artefacts: the binary, its man page (section 8), bash,
    /// zsh and fish completions, and a Debian package of them (with the
    /// systemd unit of deploy/systemd when the tree has one). Prints the
    /// paths.
    Dist {
        /// Where to put them [default: target/dist].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Build tcptrace and run it as root (through sudo when not root).
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for tcptrace, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Benchmarks (root): throughput with no tracer, tcptrace and bpftrace,
    /// interleaved; then tcptrace's memory and CPU with 100k held
    /// connections; then its CPU with 1, 50 and 200 network namespaces.
    /// Writes docs/benchmarks.md and docs/benchmarks.json.
    /// With `--baseline REV`, the throughput stage also runs tcptrace built
    /// from REV, and compares each program's kernel ns/call with it.
    Bench {
        /// Rounds of every configuration (medians are over rounds), in
        /// every stage but scale.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds of each load phase (churn, then keep-alive).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Run one stage only and update only its table: `throughput`,
        /// `scale` (100k held connections, about 2-4 minutes), or `netns`
        /// (tcptrace --timewait and --hist in the host namespace for 20 s a
        /// run, with 1, 50 and 200 namespaces made, each with `lo` up and an
        /// idle process; idle, then min(N, 10) with 5 connections/s of
        /// TIME_WAIT churn; --rounds runs of each; about 5 minutes a round).
        #[arg(long, value_enum, value_name = "STAGE")]
        only: Option<bench::Stage>,
        /// Also run tcptrace built from this git revision (e.g. a commit
        /// hash), in a worktree under the target directory: its stream,
        /// `--hist`, `--closewait-leaks` and `--timewait` as rows of their
        /// own ("baseline REV: ...") in the same rounds, and a table of
        /// kernel ns/call against this tree's (within 5%?). Throughput
        /// stage only.
        #[arg(long, value_name = "REV")]
        baseline: Option<String>,
    },
    /// Soak (root): tcptrace's leak mode and `--timewait` under churn and
    /// short-lived leakers for N minutes, sampling RSS, fds, CPU and kernel
    /// map occupancy every 10 s into docs/benchmarks.md; fails when any of
    /// RSS, fds or a map grew more than 5% over the last two thirds.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Check the userspace crate's layering (model, kernel, host, report,
    /// analyses, runtime, cli) and the source files' sizes; the rules are in
    /// xtask/src/layers/mod.rs.
    LintLayers {
        /// The userspace source root [default: tcptrace/src].
        #[arg(long, value_name = "DIR")]
        src: Option<PathBuf>,
        /// The eBPF source root, checked for file size only
        /// [default: tcptrace-ebpf/src].
        #[arg(long, value_name = "DIR")]
        ebpf_src: Option<PathBuf>,
        /// The kernel/user ABI crate's source root, checked for file size
        /// only [default: tcptrace-common/src].
        #[arg(long, value_name = "DIR")]
        common_src: Option<PathBuf>,
    },
    /// Check that no eBPF program's worst chain of BPF-to-BPF calls needs
    /// more than the 512 bytes of stack that kernels before 6.13 allow
    /// (frames rounded up to 32 bytes); the rules are in
    /// `xtask/src/bpf_stack/mod.rs`. Builds tcptrace (debug) for its object.
    LintBpfStack {
        /// Check this eBPF object instead of the one the build makes.
        #[arg(long, value_name = "FILE")]
        object: Option<PathBuf>,
    },
    /// Run every test: formatting, the layer check, the eBPF stack check,
    /// lints, unit tests, then the root integration tests. With `--kernel`,
    /// only the root integration tests, on that kernel (see
    /// docs/kernels.md).
    Test {
        /// Run the root integration tests on this kernel instead: `6.1` (the
        /// newest Debian linux-image-6.1.*-amd64-unsigned), a release
        /// (`6.1.0-57-amd64`) or a kernel image's path, booted under qemu
        /// (software emulation) with virtme-ng; or `host`, the running
        /// kernel. Results: target/kernel-matrix/RELEASE.json.
        #[arg(long, value_name = "VERSION|PATH|host")]
        kernel: Option<String>,
        /// With --kernel: only these test files (e.g. lifecycle,hist)
        /// [default: all but dist and deploy].
        #[arg(
            long,
            value_name = "TESTFILE,...",
            value_delimiter = ',',
            requires = "kernel"
        )]
        only: Option<Vec<String>>,
        /// With --kernel: test tcptrace's release build (what ships; under
        /// emulation it starts in ~10 s where the debug build takes ~35 s).
        #[arg(long, requires = "kernel")]
        release: bool,
        /// With --kernel: the time limit of each test file, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 1800, requires = "kernel")]
        file_timeout: u64,
        /// Extra arguments for the integration-test harness (e.g. a test name).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Write docs/kernels.md's support table from the result files of
    /// `cargo xtask test --kernel` (target/kernel-matrix/*.json).
    KernelTable,
    /// The kernel matrix's runner on the kernel under test (run by
    /// `test --kernel` inside the VM).
    #[command(hide = true)]
    KernelGuest { plan: PathBuf },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace)
/// when set, else `target/` in the workspace.
pub(crate) fn target_dir() -> PathBuf {
    let root = workspace_root();
    env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d))
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Run `cmd`, failing with its description if it does not succeed.
pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn build(release: bool) -> Result<PathBuf> {
    setup::ensure()?;
    let mut c = cargo();
    c.args(["build", "--package", "tcptrace"]);
    if release {
        c.arg("--release");
    }
    status(&mut c)?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("tcptrace"))
}

/// Run `program args` as root: directly when root, else through sudo.
fn as_root(program: &Path, args: &[OsString]) -> Command {
    if is_root() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        eprintln!("xtask: not root; running through sudo");
        let mut c = Command::new("sudo");
        c.arg("--preserve-env=TCPTRACE_BIN,RUST_LOG,PATH")
            .arg(program)
            .args(args);
        c
    }
}

fn run(args: Args) -> Result<()> {
    match args.task {
        Task::Setup => setup::ensure(),
        Task::Build { release } => {
            let bin = build(release)?;
            eprintln!("xtask: built {}", bin.display());
            Ok(())
        }
        Task::Dist { out } => dist::run(out),
        Task::Run { release, args } => {
            let bin = build(release)?;
            let st = as_root(&bin, &args)
                .status()
                .with_context(|| format!("failed to start {}", bin.display()))?;
            // Hand tcptrace's own exit code through.
            std::process::exit(st.code().unwrap_or(1));
        }
        Task::LintLayers {
            src,
            ebpf_src,
            common_src,
        } => {
            let default = layers::Roots::default();
            layers::lint(&layers::Roots {
                src: src.unwrap_or(default.src),
                ebpf_src: ebpf_src.unwrap_or(default.ebpf_src),
                common_src: common_src.unwrap_or(default.common_src),
            })
        }
        Task::LintBpfStack { object } => {
            let object = match object {
                Some(o) => o,
                None => bpf_stack::built_object()?,
            };
            bpf_stack::lint(&object)
        }
        Task::Test {
            kernel: Some(k),
            only,
            release,
            file_timeout,
            args,
        } => {
            if !args.is_empty() {
                bail!("--kernel runs whole test files (--only): no harness arguments after --");
            }
            kernel::test(&kernel::Request {
                kernel: &k,
                only: only.as_deref(),
                release,
                file_timeout: std::time::Duration::from_secs(file_timeout),
            })
        }
        Task::Test { args, .. } => test(&args),
        Task::KernelTable => kernel::write_table(),
        Task::KernelGuest { plan } => kernel::guest::run(&kernel::guest::read_plan(&plan)?),
        Task::Bench {
            rounds,
            seconds,
            only,
            baseline,
        } => bench::run(rounds.max(1), seconds, only, baseline.as_deref()),
        Task::Soak { minutes } => soak::run(minutes),
    }
}

fn test(extra: &[OsString]) -> Result<()> {
    setup::ensure()?;
    eprintln!("xtask: [1/6] formatting");
    status(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("code is not formatted: run `cargo fmt --all`")?;

    eprintln!("xtask: [2/6] layers (docs/ARCHITECTURE.md) and module sizes");
    layers::lint(&layers::Roots::default())?;

    // Before any kernel loads it: the verifier of kernels before 6.13
    // refuses a program whose call chain needs more than 512 bytes of stack.
    eprintln!("xtask: [3/6] build, and the eBPF programs' stack depth");
    bpf_stack::lint(&bpf_stack::built_object()?)?;

    // The eBPF crate is left out: it builds for the BPF target only, through
    // the tcptrace build script.
    eprintln!("xtask: [4/6] lints (clippy, warnings are errors)");
    setup::ensure_clippy()?;
    status(cargo().args([
        "clippy",
        "--package",
        "xtask",
        "--package",
        "tcptrace",
        "--package",
        "tcptrace-common",
        "--package",
        "tcptrace-toolchain",
        "--package",
        "integration-tests",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems: fix them (see above)")?;

    eprintln!("xtask: [5/6] unit tests (no kernel needed)");
    status(cargo().args([
        "test",
        "--package",
        "tcptrace-common",
        "--package",
        "tcptrace",
        "--package",
        "tcptrace-toolchain",
        "--package",
        "xtask",
    ]))?;

    eprintln!("xtask: [6/6] root integration tests (real eBPF, real sockets, network namespaces)");
    let bin = build(false)?;
    // Build the test binaries unprivileged, then run only the harness as root.
    status(cargo().args(["test", "--package", "integration-tests", "--no-run"]))?;
    if !is_root() {
        eprintln!(
            "xtask: the integration tests need root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN); \
             they will run through sudo and FAIL, not skip, without it"
        );
    }
    let cargo_bin = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // --no-fail-fast: one failing test file does not hide the others'
    // results, so that one CI run shows every failure.
    let mut args: Vec<OsString> = [
        "test",
        "--package",
        "integration-tests",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]
    .map(OsString::from)
    .to_vec();
    args.extend(extra.iter().cloned());
    let mut c = as_root(Path::new(&cargo_bin), &args);
    c.current_dir(workspace_root()).env("TCPTRACE_BIN", &bin);
    status(&mut c)
}
