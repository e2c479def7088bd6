//! `cargo xtask lint-bpf-stack`: the eBPF object's worst-case combined stack
//! per program, as kernels without BPF private stacks (before 6.13) count
//! it in `check_max_stack_depth`: from the program's entry along every chain
//! of BPF-to-BPF calls, each frame's depth rounded up to 32 bytes (at least
//! 32), the sum at most 512 bytes and the chain at most 8 frames. Over
//! that, the verifier refuses the program ("combined stack size of N calls
//! is M. Too large"). The 32-byte rounding is 6.1's; 6.9 to 6.12 round
//! JIT-compiled frames to 16 and a frame with no stack to 0. A frame's depth
//! here is read from all its code, where the verifier counts the paths it
//! explores: the check may only overstate it.

mod elf;
mod graph;
#[cfg(test)]
mod tests;

use std::{
    fs,
    io::BufRead as _,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use self::{
    elf::{Object, Program},
    graph::{MAX_FRAMES, MAX_STACK},
};

/// One program's worst chain.
#[derive(Debug)]
pub struct Row {
    pub program: String,
    /// The functions of the chain, entry first, with their depths in bytes.
    pub chain: Vec<(String, u32)>,
    /// Their rounded sum.
    pub total: u32,
    /// The most functions on any chain from the entry.
    pub frames: usize,
}

impl Row {
    /// The chain, each function with its depth and its rounded share.
    fn chain_in_full(&self) -> String {
        self.chain
            .iter()
            .map(|(name, d)| format!("{name} ({d} -> {})", graph::rounded(*d)))
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// Each program's worst chain, and what the verifier would refuse at
/// `limit` bytes.
pub fn check(obj: &Object, limit: u32) -> (Vec<Row>, Vec<String>) {
    let funcs = &obj.funcs;
    let mut rows = Vec::new();
    let mut refused = Vec::new();
    for Program { func, section } in &obj.programs {
        let program = &funcs[*func].name;
        let chain = match graph::worst_chain(funcs, *func) {
            Ok(c) => c,
            Err(graph::Recursion(cycle)) => {
                let names: Vec<&str> = cycle.iter().map(|&f| funcs[f].name.as_str()).collect();
                refused.push(format!(
                    "{program}: recursive calls: {}",
                    names.join(" -> ")
                ));
                continue;
            }
        };
        let row = Row {
            program: program.clone(),
            chain: chain
                .funcs
                .iter()
                .map(|&f| (funcs[f].name.clone(), funcs[f].depth))
                .collect(),
            total: chain.total,
            frames: chain.frames,
        };
        if row.total > limit {
            refused.push(format!(
                "{program} ({section}): combined stack size of {} calls is {} (over {limit}): {}",
                row.chain.len(),
                row.total,
                row.chain_in_full()
            ));
        }
        if row.frames > MAX_FRAMES {
            refused.push(format!(
                "{program} ({section}): a call chain of {} frames (at most {MAX_FRAMES})",
                row.frames
            ));
        }
        rows.push(row);
    }
    (rows, refused)
}

/// Check the object at `path` against [`MAX_STACK`].
pub fn lint(path: &Path) -> Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let obj = elf::read(&data).with_context(|| format!("reading {}", path.display()))?;
    let (mut rows, refused) = check(&obj, MAX_STACK);
    if rows.is_empty() && refused.is_empty() {
        bail!("{}: no BPF programs in it", path.display());
    }
    rows.sort_by(|a, b| a.program.cmp(&b.program));
    let shown = path.strip_prefix(crate::workspace_root()).unwrap_or(path);
    eprintln!(
        "xtask: eBPF stack of {} as kernels before 6.13 count it \
         (frames rounded up to {}, at most {MAX_STACK} bytes a chain)",
        shown.display(),
        graph::FRAME_ROUND,
    );
    eprintln!(
        "  {:<30} {:>5} {:>5}  worst chain (bytes of each frame)",
        "program", "frame", "total"
    );
    for r in &rows {
        let chain: Vec<String> = r
            .chain
            .iter()
            .map(|(n, d)| format!("{} ({d})", short(n)))
            .collect();
        eprintln!(
            "  {:<30} {:>5} {:>5}  {}",
            r.program,
            r.chain.first().map_or(0, |c| c.1),
            r.total,
            chain.join(" -> ")
        );
    }
    if refused.is_empty() {
        return Ok(());
    }
    for r in &refused {
        eprintln!("xtask: {r}");
    }
    bail!(
        "{} eBPF programs too deep for kernels before 6.13 (the verifier refuses \
         'combined stack size of N calls is M. Too large')",
        refused.len()
    )
}

/// A function's name without generic arguments, its last two path segments.
fn short(name: &str) -> String {
    let mut plain = String::with_capacity(name.len());
    let mut nest = 0usize;
    for ch in name.chars() {
        match ch {
            '<' => nest += 1,
            '>' => nest = nest.saturating_sub(1),
            _ if nest == 0 => plain.push(ch),
            _ => {}
        }
    }
    let segs: Vec<&str> = plain.split("::").filter(|s| !s.is_empty()).collect();
    segs[segs.len().saturating_sub(2)..].join("::")
}

/// Build tcptrace (debug) and return the eBPF object its build script made:
/// `out/tcptrace` in the build script's `OUT_DIR`, which cargo reports.
pub fn built_object() -> Result<PathBuf> {
    crate::setup::ensure()?;
    let mut c = crate::cargo();
    c.args([
        "build",
        "--package",
        "tcptrace",
        "--message-format=json-render-diagnostics",
    ])
    .stdout(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("failed to start {c:?}"))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut out_dir = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let msg: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        let id = msg["package_id"].as_str().unwrap_or_default();
        // `path+file:///…/tcptrace#0.1.0`, not tcptrace-ebpf's or -common's.
        let ours = id
            .split('#')
            .next()
            .is_some_and(|p| p.ends_with("/tcptrace"));
        if msg["reason"] == "build-script-executed" && ours {
            out_dir = msg["out_dir"].as_str().map(PathBuf::from);
        }
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("{c:?} failed: {st}");
    }
    let obj = out_dir
        .context("cargo named no OUT_DIR for tcptrace's build script")?
        .join("tcptrace");
    if !obj.is_file() {
        bail!("tcptrace's build script made no {}", obj.display());
    }
    Ok(obj)
}
