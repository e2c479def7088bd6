//! `cargo xtask bench --baseline REV`: tcptrace built from another revision,
//! so that its rows run in the same rounds as this tree's. REV is checked
//! out in a detached git worktree of its own under the target directory
//! (`bench-baseline/src`, reused by the next `--baseline` run) and built
//! there with a cargo target directory of its own (`bench-baseline/target`),
//! so that the two builds do not fight over one. The old tree's build script
//! finds bpf-linker in the same cache as ours.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, status, workspace_root};

/// A baseline build of tcptrace.
#[derive(Clone, Debug)]
pub struct Baseline {
    /// The revision as given on the command line.
    pub rev: String,
    /// Its commit, and that commit's short hash.
    pub commit: String,
    pub short: String,
    /// What it is compared against: this tree (`git describe --always
    /// --dirty`, so uncommitted changes show).
    pub tree: String,
    /// Its release build of tcptrace.
    pub binary: PathBuf,
}

/// Check out `rev` in the baseline worktree and build its tcptrace.
pub fn build(rev: &str) -> Result<Baseline> {
    let root = workspace_root();
    let commit = resolve(&root, rev)?;
    let short = git_output(&root, &["rev-parse", "--short", &commit])?;
    let tree = git_output(&root, &["describe", "--always", "--dirty"])?;
    let base = crate::target_dir().join("bench-baseline");
    let (src, target) = (base.join("src"), base.join("target"));
    checkout(&root, &src, &commit)?;
    eprintln!(
        "xtask: building the baseline {rev} ({short}) in {}",
        src.display()
    );
    let mut c = cargo();
    c.current_dir(&src).env("CARGO_TARGET_DIR", &target).args([
        "build",
        "--release",
        "-p",
        "tcptrace",
    ]);
    status(&mut c).with_context(|| format!("building tcptrace at {rev} ({short})"))?;
    let binary = target.join("release").join("tcptrace");
    if !binary.is_file() {
        bail!("the baseline build left no {}", binary.display());
    }
    eprintln!(
        "xtask: baseline {rev} is commit {commit}, against this tree at {tree}: {}",
        binary.display()
    );
    Ok(Baseline {
        rev: rev.to_owned(),
        commit,
        short,
        tree,
        binary,
    })
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    c
}

/// A git command's trimmed stdout, or its stderr as the error.
pub(super) fn git_output(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git(dir)
        .args(args)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {} in {} failed: {} (under sudo, git refuses a repository owned by \
             another user unless it is in safe.directory)",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit `rev` names in the repository at `repo`.
fn resolve(repo: &Path, rev: &str) -> Result<String> {
    git_output(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .with_context(|| format!("--baseline {rev}: not a commit of this repository"))
}

/// Whether `dir` is one of the repository's worktrees.
fn is_worktree(repo: &Path, dir: &Path) -> Result<bool> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(false);
    };
    let list = git_output(repo, &["worktree", "list", "--porcelain"])?;
    Ok(list
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .any(|p| Path::new(p).canonicalize().is_ok_and(|p| p == dir)))
}

/// Make `dir` a detached worktree of `repo` at `commit`: reused when it
/// already is one (a checkout, which keeps the build's fingerprints of
/// unchanged files), made afresh otherwise.
fn checkout(repo: &Path, dir: &Path, commit: &str) -> Result<()> {
    if is_worktree(repo, dir)? {
        git_output(dir, &["checkout", "--quiet", "--force", "--detach", commit])?;
    } else {
        // Not a worktree (say, left by an interrupted run): ours to replace.
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let dir = dir
            .to_str()
            .with_context(|| format!("non-UTF-8 path {}", dir.display()))?;
        // --force: a worktree registered at this path whose directory is
        // gone (e.g. after `cargo clean`) is replaced, not an error.
        git_output(
            repo,
            &[
                "worktree", "add", "--quiet", "--force", "--detach", dir, commit,
            ],
        )?;
    }
    let head = git_output(dir, &["rev-parse", "HEAD"])?;
    if head != commit {
        bail!(
            "{} is at {head}, not at the baseline {commit}",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch repository with two commits of one file, `v1` then `v2`.
    fn scratch_repo(name: &str) -> (PathBuf, String, String) {
        let root = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let repo = root.join("repo");
        fs::create_dir_all(&repo).unwrap();
        let run = |args: &[&str]| {
            git_output(
                &repo,
                &[
                    &["-c", "user.name=t", "-c", "user.email=t@t"],
                    &["-c", "commit.gpgsign=false"][..],
                    args,
                ]
                .concat(),
            )
            .unwrap()
        };
        run(&["init", "--quiet"]);
        let mut commits = Vec::new();
        for v in ["v1", "v2"] {
            fs::write(repo.join("f"), v).unwrap();
            run(&["add", "f"]);
            run(&["commit", "--quiet", "-m", v]);
            commits.push(run(&["rev-parse", "HEAD"]));
        }
        (root, commits[0].clone(), commits[1].clone())
    }

    #[test]
    fn checks_out_reuses_and_recreates_the_worktree() {
        let (root, v1, v2) = scratch_repo("baseline-worktree");
        let repo = root.join("repo");
        let dir = root.join("target/bench-baseline/src");
        let read = || fs::read_to_string(dir.join("f")).unwrap();

        assert_eq!(resolve(&repo, "HEAD~1").unwrap(), v1);
        assert!(resolve(&repo, "no-such-rev").is_err());
        assert!(resolve(&repo, "--all").is_err());

        checkout(&repo, &dir, &v1).unwrap();
        assert_eq!(read(), "v1");
        // Reused: the same worktree moves to the other commit.
        checkout(&repo, &dir, &v2).unwrap();
        assert_eq!(read(), "v2");
        let worktrees = git_output(&repo, &["worktree", "list", "--porcelain"]).unwrap();
        assert_eq!(worktrees.matches("worktree ").count(), 2, "{worktrees}");
        // Its directory deleted behind git's back (`cargo clean`): made again.
        fs::remove_dir_all(&dir).unwrap();
        checkout(&repo, &dir, &v1).unwrap();
        assert_eq!(read(), "v1");
        // A plain directory in its place: replaced.
        git_output(
            &repo,
            &["worktree", "remove", "--force", dir.to_str().unwrap()],
        )
        .unwrap();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("stray"), "x").unwrap();
        checkout(&repo, &dir, &v2).unwrap();
        assert_eq!(read(), "v2");
        assert!(!dir.join("stray").exists());

        fs::remove_dir_all(&root).unwrap();
    }
}
