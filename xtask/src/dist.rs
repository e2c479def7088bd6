//! `cargo xtask dist`: the release artefacts and a Debian package of them.
//!
//! The binary is the release build; the man page and the shell completions
//! come from the binary itself (`tcptrace --generate ...`, hidden from its
//! help): xtask cannot depend on the tcptrace crate, whose build script
//! needs the BPF toolchain that xtask sets up. The package is built with
//! `dpkg-deb` from a staged tree rather than with cargo-deb: dpkg-deb ships
//! with every Debian system and needs no network nor a tool to install.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{status, target_dir, workspace_root};

/// The workspace's version (every crate inherits it).
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The package's maintainer field.
/// No address of ours exists yet: `.invalid` is reserved for exactly that.
const MAINTAINER: &str = "tcptrace developers <maintainers@tcptrace.invalid>";
/// The systemd unit in the source tree, when the tree has one.
pub const UNIT: &str = "deploy/systemd/tcptrace.service";
/// Where the unit runs tcptrace from, and where the package installs it.
const UNIT_BIN: &str = "/usr/local/bin/tcptrace";
const PACKAGE_BIN: &str = "/usr/bin/tcptrace";

/// Each file `--generate` writes: its argument, its name in `--out`, and
/// where the package installs it (the man page gzipped, as Debian wants).
const GENERATED: [(&str, &str, &str); 4] = [
    ("man", "tcptrace.8", "usr/share/man/man8/tcptrace.8.gz"),
    (
        "complete-bash",
        "completions/tcptrace.bash",
        "usr/share/bash-completion/completions/tcptrace",
    ),
    (
        "complete-zsh",
        "completions/_tcptrace",
        "usr/share/zsh/vendor-completions/_tcptrace",
    ),
    (
        "complete-fish",
        "completions/tcptrace.fish",
        "usr/share/fish/vendor_completions.d/tcptrace.fish",
    ),
];

pub fn run(out: Option<PathBuf>) -> Result<()> {
    let out = out.unwrap_or_else(|| target_dir().join("dist"));
    let out = if out.is_absolute() {
        out
    } else {
        std::env::current_dir()?.join(out)
    };
    let bin = crate::build(true)?;
    fs::create_dir_all(out.join("completions"))
        .with_context(|| format!("creating {}", out.display()))?;

    let mut made = vec![copy(&bin, &out.join("tcptrace"), 0o755)?];
    for (what, name, _) in GENERATED {
        let path = out.join(name);
        write(&path, &generate(&bin, what)?, 0o644)?;
        made.push(path);
    }
    made.push(deb(&out)?);
    for path in made {
        println!("{}", path.display());
    }
    Ok(())
}

/// `tcptrace --generate WHAT`'s stdout.
fn generate(bin: &Path, what: &str) -> Result<Vec<u8>> {
    let o = Command::new(bin)
        .args(["--generate", what])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !o.status.success() || o.stdout.is_empty() {
        bail!("{} --generate {what} failed: {}", bin.display(), o.status);
    }
    Ok(o.stdout)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<PathBuf> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

/// `gzip -9n`: the compression Debian wants for man pages, with no name or
/// time stamp in the header (reproducible).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let o = child.wait_with_output().context("running gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))?
        .context("writing to gzip")?;
    if !o.status.success() {
        bail!("gzip failed: {}", o.status);
    }
    Ok(o.stdout)
}

/// The packaged binary without its debug sections (54 MB to 9 MB), as
/// Debian's `dh_strip` does; symbols stay. The loose `tcptrace` of `--out`
/// keeps them. Without binutils' strip the package gets it unstripped.
fn strip(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut cmd = Command::new("strip");
    cmd.args(["--strip-debug", "--remove-section=.comment", "-o"])
        .arg(to)
        .arg(from);
    match cmd.status() {
        Ok(st) if st.success() => {}
        Ok(st) => bail!("{cmd:?} failed: {st}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("xtask: no strip (binutils): the packaged binary keeps its debug info");
            copy(from, to, 0o755)?;
        }
        Err(e) => return Err(e).context("running strip"),
    }
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", to.display()))
}

fn architecture() -> Result<String> {
    let o = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg --print-architecture (is this Debian?)")?;
    if !o.status.success() {
        bail!("dpkg --print-architecture failed: {}", o.status);
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// The unit as the package installs it: tcptrace at [`PACKAGE_BIN`].
pub fn packaged_unit(text: &str) -> Result<String> {
    let unit = text.replace(UNIT_BIN, PACKAGE_BIN);
    let exec = format!("ExecStart={PACKAGE_BIN}");
    if !unit.lines().any(|l| l.trim_start().starts_with(&exec)) {
        bail!("{UNIT} has no ExecStart={UNIT_BIN} line to point at {PACKAGE_BIN}");
    }
    Ok(unit)
}

/// Stage the package's tree under `out` and build `out/<name>.deb` from it.
fn deb(out: &Path) -> Result<PathBuf> {
    let arch = architecture()?;
    let name = format!("tcptrace_{VERSION}_{arch}");
    let root = out.join(&name);
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    strip(&out.join("tcptrace"), &root.join("usr/bin/tcptrace"))?;
    for (_, from, to) in GENERATED {
        let bytes = fs::read(out.join(from))?;
        let bytes = if Path::new(to).extension().is_some_and(|e| e == "gz") {
            gzip(&bytes)?
        } else {
            bytes
        };
        write(&root.join(to), &bytes, 0o644)?;
    }
    let unit = workspace_root().join(UNIT);
    if unit.is_file() {
        let text =
            fs::read_to_string(&unit).with_context(|| format!("reading {}", unit.display()))?;
        write(
            &root.join("lib/systemd/system/tcptrace.service"),
            packaged_unit(&text)?.as_bytes(),
            0o644,
        )?;
    } else {
        eprintln!("xtask: no {UNIT} in this tree: the package has no systemd unit");
    }
    let control = control(&arch, installed_kib(&root)?);
    write(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    set_dir_modes(&root)?;
    let deb = out.join(format!("{name}.deb"));
    status(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb),
    )?;
    Ok(deb)
}

fn control(arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: tcptrace\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6\n\
         Section: net\n\
         Priority: optional\n\
         Description: eBPF TCP lifecycle tracer\n \
         Traces TCP state transitions and resets with eBPF: how long sockets\n \
         dwell in each state, which process owns them, who leaks CLOSE_WAIT\n \
         sockets and where in the code, and TIME_WAIT and ephemeral port\n \
         exhaustion; as text, JSON lines or Prometheus metrics.\n"
    )
}

/// Every file under `dir`, in KiB rounded up each, as dpkg counts.
fn installed_kib(dir: &Path) -> Result<u64> {
    let mut kib = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        kib += if meta.is_dir() {
            installed_kib(&entry.path())?
        } else {
            meta.len().div_ceil(1024)
        };
    }
    Ok(kib)
}

/// Directories 0755 whatever the umask: dpkg-deb refuses a control folder
/// with other modes, and the installed folders are everyone's.
fn set_dir_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_dir_modes(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_packaged_binary() {
        let unit = "# sudo install target/release/tcptrace /usr/local/bin/tcptrace\n\
                    [Service]\nExecStart=/usr/local/bin/tcptrace --agent\n";
        let packaged = packaged_unit(unit).unwrap();
        assert!(packaged.contains("\nExecStart=/usr/bin/tcptrace --agent\n"));
        assert!(!packaged.contains("/usr/local/bin"));
        assert!(packaged_unit("[Service]\nExecStart=/opt/x\n").is_err());
    }

    #[test]
    fn control_has_the_fields_dpkg_needs() {
        let c = control("amd64", 42);
        for field in [
            "Package: tcptrace\n",
            &format!("Version: {VERSION}\n"),
            "Architecture: amd64\n",
            "Maintainer: ",
            "Installed-Size: 42\n",
            "Depends: libc6\n",
            "Description: ",
        ] {
            assert!(c.contains(field), "{field:?} in {c}");
        }
        // Continuation lines start with one space; none is empty.
        assert!(c.lines().skip(1).all(|l| !l.trim().is_empty()), "{c}");
    }
}
