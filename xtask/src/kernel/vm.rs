//! Booting a kernel under qemu's software emulation (TCG, not KVM: see
//! docs/kernels.md) with virtme-ng: the guest sees the host's root file
//! system read-only, with the run's output directory writable, and runs
//! `xtask kernel-guest` there. Its `progress.log` is streamed to stderr
//! while it runs; qemu is killed past the deadline.

use std::{
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{guest, provision::Kernel};

/// The guest's memory and CPUs: tcptrace's maps and the test peers fit in
/// 3 GiB; two vCPUs are two host threads (multi-threaded TCG).
const MEMORY: &str = "3G";
const CPUS: &str = "2";

/// How long the guest may take to boot and start the runner (30-40 s).
const BOOT_LIMIT: Duration = Duration::from_mins(5);

/// How the boot went.
pub struct Boot {
    /// From starting virtme-ng to the runner's first file in the guest.
    pub boot: Option<Duration>,
    pub timed_out: bool,
}

/// Run `plan` in `kernel`, with virtme-ng from `vng_bin`, at most `deadline`.
pub fn run(
    kernel: &Kernel,
    vng_bin: &Path,
    plan: &guest::Plan,
    deadline: Duration,
) -> Result<Boot> {
    // A copy of this xtask runs in the guest: a rebuild during the run
    // replaces (deletes) the binary the host's path names.
    let xtask = plan.out.join("xtask");
    fs::copy(
        std::env::current_exe().context("this xtask's path")?,
        &xtask,
    )
    .context("copying xtask for the guest")?;
    // Written by the caller: the guest's command line holds 2 KiB.
    let plan_file = plan.out.join("plan");
    let script = format!(
        "{} kernel-guest {}",
        shell_quote(&xtask.display().to_string()),
        shell_quote(&plan_file.display().to_string())
    );
    let log = File::create(plan.out.join("vng.log")).context("creating vng.log")?;
    let path = std::env::join_paths(std::iter::once(vng_bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let mut cmd = Command::new(vng_bin.join("vng"));
    cmd.arg("--run")
        .arg(&kernel.image)
        .args([
            "--disable-kvm",
            "--memory",
            MEMORY,
            "--cpus",
            CPUS,
            "--verbose",
        ])
        .arg("--rwdir")
        .arg(&plan.out)
        .arg("--exec")
        .arg(&script)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    eprintln!(
        "xtask: booting {} under qemu (TCG, {MEMORY}, {CPUS} vCPUs); its console: {}",
        kernel.release,
        plan.out.join("vng.log").display()
    );
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting vng")?;
    let progress = plan.out.join("progress.log");
    let mut offset = 0;
    let mut boot = None;
    let timed_out = loop {
        offset = stream(&progress, offset);
        if boot.is_none() && plan.out.join("release").exists() {
            boot = Some(start.elapsed());
            eprintln!(
                "xtask: {} booted in {:.0} s",
                kernel.release,
                start.elapsed().as_secs_f64()
            );
        }
        if child.try_wait()?.is_some() {
            break false;
        }
        // A kernel that panics early can leave qemu spinning.
        let no_boot = boot.is_none() && start.elapsed() >= BOOT_LIMIT;
        if no_boot || start.elapsed() >= deadline {
            let pgid = libc::pid_t::try_from(child.id()).context("pid")?;
            // SAFETY: kill(2) on the process group of vng, which we made and
            // have not reaped.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            break true;
        }
        thread::sleep(Duration::from_millis(500));
    };
    stream(&progress, offset);
    Ok(Boot { boot, timed_out })
}

/// Copy what `path` has past `offset` to stderr; the new offset.
fn stream(path: &Path, offset: u64) -> u64 {
    let Ok(mut f) = File::open(path) else {
        return offset;
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return offset;
    }
    // Whole lines only: the rest is read again next time.
    let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let _ = std::io::stderr().write_all(&buf[..end]);
    offset + end as u64
}

/// `s` as one word for sh.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=+,:".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The last lines of the guest's console, for a run that ended early.
pub fn console_tail(out: &Path, lines: usize) -> String {
    let text = fs::read_to_string(out.join("vng.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
