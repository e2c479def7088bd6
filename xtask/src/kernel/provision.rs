//! What the kernel matrix needs on the host, installed from package
//! registries only: Debian's qemu (software emulation), busybox-static (the
//! guest's initramfs) and kmod (depmod for the kernel's modules, modprobe
//! inside the guest); virtme-ng from `PyPI` at a pinned version, in a venv of
//! the cache; and each kernel, Debian's unsigned image package downloaded
//! and unpacked into the cache (never installed into /boot).

use std::{
    cmp::Ordering,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::status;

/// virtme-ng and its dependencies, pinned: the guest's init and the way it
/// finds the kernel's modules change between releases.
const VIRTME_NG: [&str; 7] = [
    "virtme-ng==1.42",
    "argcomplete==3.7.2",
    "requests==2.34.2",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "idna==3.20",
    "urllib3==2.8.0",
];

/// A program the matrix runs and the Debian package that has it.
const PROGRAMS: [(&str, &str); 3] = [
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("depmod", "kmod"),
];

fn cache() -> Result<PathBuf> {
    tcptrace_toolchain::cache_root()
        .ok_or_else(|| anyhow!("neither $XDG_CACHE_HOME nor $HOME is set: no cache directory"))
}

fn on_path(program: &str) -> bool {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH").map_or_else(Vec::new, |p| std::env::split_paths(&p).collect()),
        )
        .any(|dir| dir.join(program).is_file())
}

/// Install the Debian packages whose programs are missing (as root).
pub fn ensure_packages() -> Result<()> {
    let need: Vec<&str> = PROGRAMS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|&(_, package)| package)
        .collect();
    if need.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "the kernel matrix needs {}: apt-get install --no-install-recommends {}",
            need.join(", "),
            need.join(" ")
        );
    }
    eprintln!("xtask: installing {}", need.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&need),
    )
}

/// The venv's bin directory, with virtme-ng installed (once).
pub fn ensure_virtme_ng() -> Result<PathBuf> {
    let version = VIRTME_NG[0].trim_start_matches("virtme-ng==");
    let venv = cache()?.join(format!("virtme-ng-{version}"));
    let bin = venv.join("bin");
    let stamp = venv.join("installed");
    if stamp.is_file() {
        return Ok(bin);
    }
    eprintln!("xtask: installing {} into {}", VIRTME_NG[0], venv.display());
    let _ = fs::remove_dir_all(&venv);
    status(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("making a venv failed (Debian: apt-get install python3-venv)")?;
    status(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(VIRTME_NG),
    )?;
    fs::write(&stamp, VIRTME_NG.join("\n")).context("writing the venv's stamp")?;
    Ok(bin)
}

/// A kernel to boot: its image and its release (`uname -r`).
pub struct Kernel {
    pub image: PathBuf,
    pub release: String,
}

/// The kernel VERSION or PATH names: a file is booted as it is (its
/// modules, if any, in `lib/modules/RELEASE` beside its `boot/`); a
/// `MAJOR.MINOR` is the newest Debian `linux-image-MAJOR.MINOR.*-amd64-unsigned`
/// package; anything else is a release, e.g. `6.1.0-57-amd64`.
pub fn kernel(spec: &str) -> Result<Kernel> {
    let path = Path::new(spec);
    if path.is_file() {
        let release = release_of_image(path)?;
        return Ok(Kernel {
            image: path.to_path_buf(),
            release,
        });
    }
    let release = if is_major_minor(spec) {
        newest_release(spec)?
    } else {
        spec.to_owned()
    };
    let root = cache()?.join("kernels").join(&release);
    let image = root.join("boot").join(format!("vmlinuz-{release}"));
    if !image.is_file() {
        unpack(&release, &root)?;
    }
    Ok(Kernel { image, release })
}

fn is_major_minor(spec: &str) -> bool {
    let mut parts = spec.split('.');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn package(release: &str) -> String {
    format!("linux-image-{release}-unsigned")
}

/// The newest release of `major_minor` in the apt lists (`apt-get update`
/// first if they have none).
fn newest_release(major_minor: &str) -> Result<String> {
    let search = || -> Result<Vec<String>> {
        let out = Command::new("apt-cache")
            .args(["search", "--names-only"])
            .arg(format!(
                "^linux-image-{}\\.",
                major_minor.replace('.', "\\.")
            ))
            .output()
            .context("running apt-cache")?;
        Ok(releases(major_minor, &String::from_utf8_lossy(&out.stdout)))
    };
    let mut found = search()?;
    if found.is_empty() && crate::is_root() {
        status(Command::new("apt-get").args(["update", "-qq"]))?;
        found = search()?;
    }
    found.sort_by(|a, b| natural_cmp(a, b));
    found.pop().ok_or_else(|| {
        anyhow!("apt-cache has no linux-image-{major_minor}.*-amd64-unsigned package")
    })
}

/// The generic amd64 releases of `major_minor` in `apt-cache search` output.
pub(super) fn releases(major_minor: &str, search: &str) -> Vec<String> {
    search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| name.strip_prefix("linux-image-")?.strip_suffix("-unsigned"))
        .filter(|r| {
            r.strip_prefix(major_minor)
                .is_some_and(|rest| rest.starts_with('.'))
                && r.ends_with("-amd64")
                && !r.ends_with("-cloud-amd64")
                && !r.ends_with("-rt-amd64")
        })
        .map(str::to_owned)
        .collect()
}

/// Compare with runs of digits as numbers: 6.1.0-9 < 6.1.0-57.
pub(super) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                let strip = |d: &[u8]| d.iter().skip_while(|&&c| c == b'0').count();
                let ord = strip(da)
                    .cmp(&strip(db))
                    .then_with(|| da[na - strip(da)..].cmp(&db[nb - strip(db)..]));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => (a, b) = (&a[1..], &b[1..]),
        }
    }
}

/// Download the release's package and unpack it into `root` (then its
/// modules' index, which the package leaves to its postinst).
fn unpack(release: &str, root: &Path) -> Result<()> {
    // Beside `root`, by name: a release's dots are no extension.
    let beside = |suffix: &str| {
        let mut name = root.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let dl = beside(".download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    let pkg = package(release);
    eprintln!("xtask: downloading {pkg}");
    status(
        Command::new("apt-get")
            .current_dir(&dl)
            .args(["download", "-qq", &pkg]),
    )
    .with_context(|| {
        format!("no package {pkg}: `apt-cache search linux-image` lists those there are")
    })?;
    let deb = fs::read_dir(&dl)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dl.display()))?;
    let tmp = beside(".tmp");
    let _ = fs::remove_dir_all(&tmp);
    status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    status(Command::new("depmod").arg("-b").arg(&tmp).arg(release))?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&tmp, root).with_context(|| format!("moving the kernel to {}", root.display()))?;
    let _ = fs::remove_dir_all(&dl);
    Ok(())
}

/// A kernel image's release, as `file` tells it.
fn release_of_image(image: &Path) -> Result<String> {
    let out = Command::new("file")
        .arg("-bL")
        .arg(image)
        .output()
        .context("running file")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(", ")
        .find_map(|f| f.strip_prefix("version "))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow!(
                "{} is not a Linux kernel image ({})",
                image.display(),
                text.trim()
            )
        })
}
