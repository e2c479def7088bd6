//! The kernel matrix: `cargo xtask test --kernel VERSION|PATH|host` builds
//! tcptrace and the integration test binaries on the host, runs them on that
//! kernel (booted under qemu, or the host's own), and writes what happened
//! to `target/kernel-matrix/RELEASE.json`; `cargo xtask kernel-table` makes
//! docs/kernels.md's table from those files.

pub mod guest;
mod provision;
mod results;
mod table;
#[cfg(test)]
mod tests;
mod vm;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

pub use table::write as write_table;

/// Test files left out unless named: they check files and tools, not the
/// kernel (`dist` runs cargo, which the read-only guest cannot).
const NOT_KERNEL: [&str; 2] = ["dist", "deploy"];

/// How many times longer the tests' bounded waits are under emulation:
/// tcptrace (a debug build) takes 30-60 s to load there, 1-2 s on the host.
const SLOWDOWN: u32 = 10;

/// What `cargo xtask test --kernel` was asked.
pub struct Request<'a> {
    pub kernel: &'a str,
    pub only: Option<&'a [String]>,
    /// Test tcptrace's release build instead of its debug build.
    pub release: bool,
    pub file_timeout: Duration,
}

/// Where the matrix's result files go.
pub fn matrix_dir() -> PathBuf {
    crate::target_dir().join("kernel-matrix")
}

pub fn test(req: &Request<'_>) -> Result<()> {
    let host = req.kernel == "host";
    // The kernel to boot and virtme-ng's bin directory, or the host's own.
    let vm = if host {
        if !crate::is_root() {
            bail!("--kernel host runs the root integration tests here: run it as root");
        }
        None
    } else {
        provision::ensure_packages()?;
        let vng = provision::ensure_virtme_ng()?;
        Some((provision::kernel(req.kernel)?, vng))
    };
    let tracer = crate::build(req.release)?;
    if vm.is_some() {
        // A program over the stack limit of kernels before 6.13 fails here,
        // in seconds, rather than in every test file of a booted kernel.
        crate::bpf_stack::lint(&crate::bpf_stack::built_object()?)?;
    }
    let bins = select(&test_binaries()?, req.only)?;
    let release = vm
        .as_ref()
        .map_or_else(host_release, |(k, _)| k.release.clone());
    let out = matrix_dir().join(&release);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let plan = guest::Plan {
        out: out.clone(),
        cwd: crate::workspace_root().join("tests"),
        tracer,
        tests: bins.clone(),
        timeout: req.file_timeout,
        slowdown: if host { 1 } else { SLOWDOWN },
    };
    guest::write_plan(&plan, &out.join("plan"))?;
    let start = Instant::now();
    let (how, boot_s) = if let Some((k, vng)) = &vm {
        let deadline = req.file_timeout * u32::try_from(bins.len()).unwrap_or(u32::MAX)
            + Duration::from_mins(10);
        let boot = vm::run(k, vng, &plan, deadline)?;
        if boot.timed_out {
            eprintln!("xtask: the VM ran past {deadline:?} and was killed");
        }
        (
            "qemu TCG",
            boot.boot.map(|b| (b.as_secs_f64() * 10.0).round() / 10.0),
        )
    } else {
        guest::run(&plan)?;
        ("host", None)
    };
    let total = start.elapsed();
    if !out.join("done").exists() {
        eprintln!(
            "xtask: the runner did not finish; the console's last lines:\n{}",
            vm::console_tail(&out, 30)
        );
    }
    let (file, runs) = collect(&release, how, boot_s, &bins)?;
    report(&release, &runs, total, &file)
}

/// Read the runner's files of `release` into its result file.
fn collect(
    release: &str,
    how: &str,
    boot_s: Option<f64>,
    bins: &[(String, PathBuf)],
) -> Result<(PathBuf, Vec<results::FileRun>)> {
    let out = matrix_dir().join(release);
    let features =
        results::parse_features(&fs::read_to_string(out.join("features.txt")).unwrap_or_default());
    let runs: Vec<results::FileRun> = bins
        .iter()
        .map(|(name, bin)| results::read_file_run(&out, name, &list(bin)))
        .collect();
    let json = results::to_json(release, how, boot_s, &features, &runs);
    let file = matrix_dir().join(format!("{release}.json"));
    fs::write(&file, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", file.display()))?;
    Ok((file, runs))
}

/// Read every result file of this checkout again from its run's raw files
/// (its plan names the test binaries), so that what the reader learns
/// applies to runs already made.
pub fn reread() -> Result<()> {
    let Ok(entries) = fs::read_dir(matrix_dir()) else {
        return Ok(());
    };
    for dir in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let (plan, json) = (dir.join("plan"), matrix_dir().join(format!("{name}.json")));
        let (Ok(plan), Ok(old)) = (guest::read_plan(&plan), fs::read_to_string(&json)) else {
            continue;
        };
        let old: serde_json::Value = serde_json::from_str(&old)?;
        let release = old["kernel"].as_str().unwrap_or_default().to_owned();
        let how = old["how"].as_str().unwrap_or_default().to_owned();
        collect(&release, &how, old["boot_seconds"].as_f64(), &plan.tests)?;
    }
    Ok(())
}

/// Print each file's status and every test that did not pass, then the
/// closing line; an error if any test failed, timed out or did not run.
fn report(release: &str, runs: &[results::FileRun], total: Duration, file: &Path) -> Result<()> {
    eprintln!(
        "xtask: kernel {release}, {:.0} s in all:",
        total.as_secs_f64()
    );
    for r in runs {
        eprintln!("  {:<16} {}", r.name, r.status);
        for (name, o) in &r.tests {
            match o {
                results::Outcome::Ok | results::Outcome::Ignored => {}
                results::Outcome::Failed(why) | results::Outcome::Unsupported(why) => {
                    eprintln!("    {} {name}: {why}", o.word());
                }
                _ => eprintln!("    {} {name}", o.word()),
            }
        }
    }
    let c = results::counts(runs);
    let get = |w: &str| c.get(w).copied().unwrap_or(0);
    let bad = get("failed") + get("timeout") + get("not run");
    println!(
        "kernel-matrix: {} passed, {bad} failed, {} skipped",
        get("ok"),
        get("ignored") + get("unsupported")
    );
    eprintln!(
        "xtask: {} unsupported on {release} (a feature it lacks); results in {}",
        get("unsupported"),
        file.display()
    );
    if bad > 0 {
        bail!("{bad} tests failed, timed out or did not run on {release}");
    }
    Ok(())
}

fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "host".to_owned(), |s| s.trim().to_owned())
}

/// Build the integration test binaries; their paths by test file name.
fn test_binaries() -> Result<BTreeMap<String, PathBuf>> {
    let out = crate::cargo()
        .args([
            "test",
            "--package",
            "integration-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let mut bins = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            v["reason"] == "compiler-artifact" && is_test,
            v["target"]["name"].as_str(),
            v["executable"].as_str(),
        ) {
            bins.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(bins)
}

/// The files `only` names (each must exist), else all but [`NOT_KERNEL`].
fn select(
    bins: &BTreeMap<String, PathBuf>,
    only: Option<&[String]>,
) -> Result<Vec<(String, PathBuf)>> {
    match only {
        Some(names) => names
            .iter()
            .map(|n| {
                let n = n.trim_end_matches(".rs").rsplit('/').next().unwrap_or(n);
                bins.get(n)
                    .map(|b| (n.to_owned(), b.clone()))
                    .ok_or_else(|| {
                        anyhow!(
                            "no test file {n}; there are: {}",
                            bins.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
            })
            .collect(),
        None => Ok(bins
            .iter()
            .filter(|(n, _)| !NOT_KERNEL.contains(&n.as_str()))
            .map(|(n, b)| (n.clone(), b.clone()))
            .collect()),
    }
}

/// The tests of one binary, as `--list` names them.
fn list(bin: &Path) -> Vec<String> {
    Command::new(bin)
        .arg("--list")
        .output()
        .map(|o| results::listed(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}
