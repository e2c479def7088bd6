//! The release artefacts (`cargo xtask dist`) and what the binary says about
//! itself (`--version`, `--version -v`).
//!
//! `dist_package_installs_and_documents_every_flag` does a release build
//! (several minutes on a cold target directory): it builds the package,
//! extracts it into a scratch root (`dpkg -x`, no install on the host), runs
//! the extracted binary and renders the extracted man page. It needs
//! `dpkg-deb` and `man` (man-db); `.ci/run` installs man-db.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use clap::CommandFactory as _;
use integration_tests::{TempDir, require_root, run_bounded, tracer_bin, workspace_root};
use tcptrace::cli::Cli;

/// A release build from a cold target directory on a small machine.
const DIST_TIMEOUT: Duration = Duration::from_mins(40);
const SHORT: Duration = Duration::from_mins(1);

/// The unit the package installs when the tree has one.
const UNIT: &str = "deploy/systemd/tcptrace.service";
/// Where the package installs things.
const BIN: &str = "/usr/bin/tcptrace";
const MAN: &str = "/usr/share/man/man8/tcptrace.8.gz";
const COMPLETIONS: [&str; 3] = [
    "/usr/share/bash-completion/completions/tcptrace",
    "/usr/share/zsh/vendor-completions/_tcptrace",
    "/usr/share/fish/vendor_completions.d/tcptrace.fish",
];
const SERVICE: &str = "/lib/systemd/system/tcptrace.service";

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `git rev-parse --short=12 HEAD` of the workspace.
fn head_commit() -> String {
    let out = run_bounded(
        Command::new("git").arg("-C").arg(workspace_root()).args([
            "rev-parse",
            "--short=12",
            "HEAD",
        ]),
        SHORT,
    );
    let commit = ok(&out, "git rev-parse").trim().to_owned();
    assert_eq!(commit.len(), 12, "{commit:?}");
    commit
}

/// Every long flag `--help` shows (the hidden `--generate` is not one).
fn long_flags() -> Vec<String> {
    let flags: Vec<String> = Cli::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .chain(["--help".to_owned(), "--version".to_owned()])
        .collect();
    assert!(flags.len() > 20, "{flags:?}");
    flags
}

/// The man page as a reader sees it: `man -l`, plain text, lines wide
/// enough that no flag is hyphenated across two.
fn render_man(page: &Path) -> String {
    let out = run_bounded(
        Command::new("man")
            .arg("-l")
            .arg(page)
            .env_remove("MAN_KEEP_FORMATTING")
            .env("LC_ALL", "C")
            .env("MANWIDTH", "1000")
            .env("MANPAGER", "cat"),
        SHORT,
    );
    let text = ok(&out, "man -l (is man-db installed?)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "man -l warned:\n{stderr}");
    text
}

fn the_deb(dir: &Path) -> PathBuf {
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the dist folder")
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", dir.display());
    debs[0].clone()
}

#[test]
fn dist_package_installs_and_documents_every_flag() {
    let out_dir = TempDir::new("dist");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = std::time::Instant::now();
    let out = run_bounded(
        Command::new(cargo)
            .current_dir(workspace_root())
            .args(["xtask", "dist", "--out"])
            .arg(out_dir.path()),
        DIST_TIMEOUT,
    );
    let printed = ok(&out, "cargo xtask dist");
    eprintln!("cargo xtask dist took {:?}", started.elapsed());
    let deb = the_deb(out_dir.path());
    assert!(printed.contains(&deb.display().to_string()), "{printed}");
    let has_unit = workspace_root().join(UNIT).is_file();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.contains("the package has no systemd unit"),
        !has_unit,
        "dist says when it leaves the unit out:\n{stderr}"
    );
    check_package(&deb, has_unit);
    check_installed(&deb, has_unit);
}

/// What dpkg-deb says of the package: its control file and contents.
fn check_package(deb: &Path, has_unit: bool) {
    let control = ok(
        &run_bounded(Command::new("dpkg-deb").arg("-f").arg(deb), SHORT),
        "dpkg-deb -f",
    );
    for field in [
        "Package: tcptrace",
        "Depends: libc6",
        "Architecture: ",
        "Version: ",
    ] {
        assert!(control.contains(field), "{field} in\n{control}");
    }

    // The contents, as dpkg-deb lists them.
    let listing = ok(
        &run_bounded(Command::new("dpkg-deb").arg("-c").arg(deb), SHORT),
        "dpkg-deb -c",
    );
    let mut files = vec![BIN, MAN];
    files.extend(COMPLETIONS);
    if has_unit {
        files.push(SERVICE);
    }
    for file in files.iter().map(|f| format!(".{f}")) {
        assert!(
            listing.lines().any(|l| l.ends_with(&file)),
            "{file} in\n{listing}"
        );
    }
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "owned by root:\n{listing}"
    );
    assert_eq!(listing.contains("systemd"), has_unit, "{listing}");
}

/// The package extracted into a scratch root: its binary names HEAD, its
/// man page documents every flag, its completions and unit are there.
fn check_installed(deb: &Path, has_unit: bool) {
    let root = TempDir::new("dist-root");
    let installed = |path: &str| root.path().join(path.trim_start_matches('/'));
    ok(
        &run_bounded(
            Command::new("dpkg").arg("-x").arg(deb).arg(root.path()),
            SHORT,
        ),
        "dpkg -x",
    );
    let version = ok(
        &run_bounded(Command::new(installed(BIN)).arg("--version"), SHORT),
        "tcptrace --version",
    );
    let commit = head_commit();
    assert!(
        version.starts_with("tcptrace ") && version.contains(&format!("(commit {commit}")),
        "--version names HEAD ({commit}): {version}"
    );

    let man = render_man(&installed(MAN));
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"] {
        assert!(
            man.lines().any(|l| l.trim() == section),
            "the man page has a {section} section:\n{man}"
        );
    }
    assert!(man.contains("tcptrace - "), "NAME names it:\n{man}");
    for flag in long_flags() {
        assert!(man.contains(&flag), "the man page documents {flag}:\n{man}");
    }
    assert!(!man.contains("--generate"), "{man}");

    for completion in COMPLETIONS {
        let script = std::fs::read_to_string(installed(completion))
            .unwrap_or_else(|e| panic!("{completion}: {e}"));
        assert!(
            script.contains("closewait-leaks"),
            "{completion}:\n{script}"
        );
    }
    if has_unit {
        let unit = std::fs::read_to_string(installed(SERVICE)).expect("the unit");
        assert!(
            unit.lines()
                .any(|l| l.starts_with("ExecStart=/usr/bin/tcptrace ")),
            "{unit}"
        );
        assert!(!unit.contains("/usr/local/bin"), "{unit}");
    }
}

/// `--version -v` lists what the kernel offers. As root everything
/// tcptrace needs is there (the other tests trace on this kernel).
#[test]
fn verbose_version_lists_what_the_kernel_offers() {
    require_root();
    let out = ok(
        &run_bounded(Command::new(tracer_bin()).args(["--version", "-v"]), SHORT),
        "tcptrace --version -v",
    );
    let commit = head_commit();
    assert!(out.starts_with("tcptrace "), "{out}");
    assert!(out.lines().next().unwrap_or("").contains(&commit), "{out}");
    for line in [
        "kernel: ",
        "BTF:        yes (/sys/kernel/btf/vmlinux)",
        "tracefs:    yes (",
        "bpf_stats:  kernel.bpf_stats_enabled = ",
        "  sock:inet_sock_set_state ",
        "  tcp:tcp_destroy_sock ",
        "  syscalls:sys_exit_connect ",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    assert!(!out.contains("MISSING"), "{out}");
    // `-V -v` the same; and plain --version is one line.
    let short = ok(
        &run_bounded(Command::new(tracer_bin()).arg("-vV"), SHORT),
        "tcptrace -vV",
    );
    assert!(short.contains("tracepoints:"), "{short}");
    let plain = ok(
        &run_bounded(Command::new(tracer_bin()).arg("--version"), SHORT),
        "tcptrace --version",
    );
    assert_eq!(plain.lines().count(), 1, "{plain}");
}

/// Without root, `--version -v` still answers, and says what it could not
/// read (tracefs is root's) rather than failing.
#[test]
fn verbose_version_without_root_says_what_needs_root() {
    require_root();
    let out = run_bounded(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(tracer_bin())
            .args(["--version", "-v"]),
        SHORT,
    );
    let text = ok(&out, "tcptrace --version -v as nobody");
    assert!(text.contains("BTF:        yes"), "{text}");
    let tracefs_private = std::fs::metadata("/sys/kernel/tracing")
        .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o005 == 0);
    if tracefs_private {
        assert!(
            text.contains("tracefs:    unreadable (needs root)"),
            "{text}"
        );
        assert!(text.contains("tracepoints: not checked"), "{text}");
    }
    assert!(!text.contains("panicked"), "{text}");
}
