//! `cargo xtask lint-layers`: reads tcptrace's userspace source with `syn`
//! and checks that its layers name only what they may (see [`Rule`]), and
//! that no source file, userspace or eBPF, grows too long.

mod refs;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use self::refs::{Context, Found, PathRef, Target};

/// Longest file allowed in the userspace crate's source.
pub const MAX_LINES: usize = 400;
/// Longest file allowed in the eBPF crate's source.
pub const EBPF_MAX_LINES: usize = 300;

/// The layers' folders under the source root.
const LAYERS: [&str; 7] = [
    "model", "kernel", "host", "report", "analyses", "runtime", "cli",
];
/// The only files allowed at the source root.
const ROOT_FILES: [&str; 3] = ["main.rs", "lib.rs", "cli.rs"];
/// Crates that every layer may use.
const STD: [&str; 3] = ["std", "core", "alloc"];
/// External crates `model/` may use besides std.
const MODEL_CRATES: [&str; 3] = ["tcptrace_common", "serde", "thiserror"];

/// A rule of the layer lint. "Names" means any path: in a `use` tree (nested
/// or renamed), in code or a type, in an attribute, or in a macro body (read
/// as tokens); `self`/`super` are resolved from the file's module. A crate
/// imported under another name is not followed. Rules 1-5 hold in test code
/// too, except where said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// The file is not Rust that syn can read.
    Parse,
    /// 1. `model/` names only std/core/alloc, `crate::model` and the crates
    ///    `tcptrace_common`, `serde` and `thiserror` (test code also the
    ///    crates that are dev-dependencies only); outside test code no string
    ///    literal in it starts with `/proc` or `/sys`.
    ModelPure,
    /// 2. `report/` names none of `crate::{kernel, host, analyses, runtime}`
    ///    and none of the crates `aya*`, `tokio`, `netlink_*`, `procfs`,
    ///    `blazesym`.
    ReportApart,
    /// 3. `kernel/` and `host/` name none of `crate::{report, analyses,
    ///    runtime}`, nor each other.
    KernelHostBelow,
    /// 4. A file of one analysis (`analyses/<a>.rs`, `analyses/<a>/…`) names
    ///    no other analysis (`crate::analyses::<b>`, `super::<b>`); the items
    ///    of `analyses/mod.rs` are for all.
    AnalysesApart,
    /// 5. Only `main.rs` and `cli.rs`/`cli/` name the `cli` module or a
    ///    `Cli` (this rule, not 1-3, reports a layer naming the cli).
    CliAtTop,
    /// 6. At the root only `main.rs`, `lib.rs` and `cli.rs`; every other file
    ///    lives under a layer's folder or `cli/`.
    Placement,
    /// 7. No file over [`MAX_LINES`] lines, nor over [`EBPF_MAX_LINES`] in the
    ///    eBPF crate; the eBPF and the kernel/user ABI crates are checked for
    ///    size only.
    Size,
}

impl Rule {
    fn describe(self) -> &'static str {
        match self {
            Rule::Parse => "parse error",
            Rule::ModelPure => "rule 1 (model/ is pure logic)",
            Rule::ReportApart => "rule 2 (report/ renders, reads nothing)",
            Rule::KernelHostBelow => "rule 3 (kernel/ and host/ stay below, apart)",
            Rule::AnalysesApart => "rule 4 (no analysis uses another)",
            Rule::CliAtTop => "rule 5 (only main.rs and cli use the cli)",
            Rule::Placement => "rule 6 (every file in a layer)",
            Rule::Size => "rule 7 (file size)",
        }
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to the source root it was read from.
    pub file: PathBuf,
    pub line: usize,
    pub rule: Rule,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.rule.describe(),
            self.what
        )
    }
}

/// The crates a source tree can name: its package's dependencies, by the
/// names code uses (`-` as `_`), from its Cargo.toml.
#[derive(Clone, Debug, Default)]
pub struct Crates {
    /// The library's crate name (`tcptrace`), which `main.rs` uses.
    pub lib: String,
    normal: BTreeSet<String>,
    /// Dev-dependencies that are not also normal dependencies.
    dev_only: BTreeSet<String>,
}

impl Crates {
    /// Read a Cargo.toml's `[package]`/`[lib]` name and its `[dependencies]`
    /// and `[dev-dependencies]` (also `[target.….dependencies]` and
    /// `[dependencies.name]` tables). Build-dependencies are not for `src/`.
    pub fn from_manifest(toml: &str) -> Self {
        #[derive(Clone, Copy, PartialEq)]
        enum Section {
            Package,
            Lib,
            Normal,
            Dev,
            Other,
        }
        let mut section = Section::Other;
        let (mut package, mut lib) = (None, None);
        let (mut normal, mut dev) = (BTreeSet::new(), BTreeSet::new());
        for line in toml.lines().map(str::trim) {
            if let Some(header) = line.strip_prefix('[') {
                let header = header.trim_end_matches(']').trim();
                let table = header.rsplit_once('.').map_or(header, |(_, t)| t);
                section = match header {
                    "package" => Section::Package,
                    "lib" => Section::Lib,
                    _ if table == "dependencies" => Section::Normal,
                    _ if table == "dev-dependencies" => Section::Dev,
                    _ => Section::Other,
                };
                // `[dependencies.name]`
                if let Some(name) = header.strip_prefix("dependencies.") {
                    normal.insert(name.replace('-', "_"));
                } else if let Some(name) = header.strip_prefix("dev-dependencies.") {
                    dev.insert(name.replace('-', "_"));
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.split('.').next().unwrap_or_default().trim();
            let is_key = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !is_key {
                continue;
            }
            let name = || value.trim().trim_matches('"').replace('-', "_");
            match section {
                Section::Package if key == "name" => package = Some(name()),
                Section::Lib if key == "name" => lib = Some(name()),
                Section::Normal => {
                    normal.insert(key.replace('-', "_"));
                }
                Section::Dev => {
                    dev.insert(key.replace('-', "_"));
                }
                _ => {}
            }
        }
        let dev_only = dev.difference(&normal).cloned().collect();
        Crates {
            lib: lib.or(package).unwrap_or_default(),
            normal,
            dev_only,
        }
    }

    /// Whether `name` is an external crate: std's, a dependency, or one of
    /// the system crates the rules name (known even without a manifest).
    fn knows(&self, name: &str) -> bool {
        STD.contains(&name)
            || self.normal.contains(name)
            || self.dev_only.contains(name)
            || system_crate(name)
    }
}

/// Crates that reach the running system (kernel, netlink, /proc, symbols) or
/// the process's CLI and metrics plumbing, which `model/` must not use.
fn system_crate(name: &str) -> bool {
    reads_system(name) || matches!(name, "nix" | "libc" | "clap" | "prometheus_client")
}

/// Crates that load BPF or read the running system; `report/` uses none.
fn reads_system(name: &str) -> bool {
    name == "aya"
        || name.starts_with("aya_")
        || name.starts_with("netlink_")
        || matches!(name, "tokio" | "procfs" | "blazesym")
}

/// Which part of the tree a file is in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    Main,
    Lib,
    Cli,
    Model,
    Kernel,
    Host,
    Report,
    /// `analyses/mod.rs`: the interface all analyses share.
    AnalysesShared,
    /// One analysis, by name.
    Analysis(String),
    Runtime,
    /// Not a place rule 6 allows.
    Unplaced,
}

/// `file`'s place, from its path under the source root.
fn place(file: &Path) -> Place {
    let parts: Vec<&str> = file.iter().filter_map(|p| p.to_str()).collect();
    match parts[..] {
        ["main.rs"] => Place::Main,
        ["lib.rs"] => Place::Lib,
        ["cli.rs"] | ["cli", ..] => Place::Cli,
        ["model", _, ..] => Place::Model,
        ["kernel", _, ..] => Place::Kernel,
        ["host", _, ..] => Place::Host,
        ["report", _, ..] => Place::Report,
        ["analyses", "mod.rs"] => Place::AnalysesShared,
        ["analyses", a] => Place::Analysis(a.trim_end_matches(".rs").to_owned()),
        ["analyses", a, _, ..] => Place::Analysis(a.to_owned()),
        ["runtime", _, ..] => Place::Runtime,
        _ => Place::Unplaced,
    }
}

/// The module path of `file`: `kernel/maps.rs` and `kernel/maps/mod.rs` are
/// `[kernel, maps]`; `main.rs` and `lib.rs` are the root.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") || parts == ["main"] || parts == ["lib"] {
        parts.pop();
    }
    parts
}

/// Where the modules that `file` declares with `mod x;` live.
fn child_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("")).to_path_buf();
    match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "main.rs" | "lib.rs") => parent,
        _ => parent.join(file.file_stem().unwrap_or_default()),
    }
}

/// Check one userspace source tree: `files` are `(path under the source
/// root, source)`; `crates` come from its package's manifest. Rules 1-7
/// (rule 7 at [`MAX_LINES`]).
pub fn check_tree(files: &[(PathBuf, String)], crates: &Crates) -> Vec<Violation> {
    let mut out = check_sizes(files, MAX_LINES);
    let analyses: BTreeSet<String> = files
        .iter()
        .filter_map(|(f, _)| match place(f) {
            Place::Analysis(a) => Some(a),
            _ => None,
        })
        .collect();
    let mut parsed = BTreeMap::new();
    for (file, text) in files {
        if place(file) == Place::Unplaced {
            out.push(Violation {
                file: file.clone(),
                line: 1,
                rule: Rule::Placement,
                what: format!(
                    "not in a layer: the root holds only {}; other files live under {}/",
                    ROOT_FILES.join(", "),
                    LAYERS.join("/, ")
                ),
            });
        }
        match syn::parse_file(text) {
            Ok(ast) => {
                parsed.insert(file.clone(), ast);
            }
            Err(e) => out.push(Violation {
                file: file.clone(),
                line: e.span().start().line,
                rule: Rule::Parse,
                what: e.to_string(),
            }),
        }
    }
    let test_files = test_only_files(&parsed);
    let is_crate = |name: &str| crates.knows(name);
    for (file, ast) in &parsed {
        let cx = Context {
            module: module_of(file),
            lib: &crates.lib,
            is_crate: &is_crate,
            in_test: test_files.contains(file),
        };
        let found = refs::scan(ast, &cx);
        check_file(file, &place(file), &found, crates, &analyses, &mut out);
    }
    out.sort_by(|a, b| (&a.file, a.line, a.rule).cmp(&(&b.file, b.line, b.rule)));
    out
}

/// Files that are test-only: declared with `#[cfg(test)] mod x;` by their
/// parent, or below such a file.
fn test_only_files(parsed: &BTreeMap<PathBuf, syn::File>) -> BTreeSet<PathBuf> {
    let mut test = BTreeSet::new();
    // Parents come before their children in path order only sometimes
    // (`a.rs` after `a/`), so repeat until nothing changes.
    loop {
        let before = test.len();
        for (file, ast) in parsed {
            let whole = test.contains(file);
            for item in &ast.items {
                let syn::Item::Mod(m) = item else { continue };
                if m.content.is_some() || !(whole || refs::has_test_attr(&m.attrs)) {
                    continue;
                }
                let dir = child_dir(file);
                let name = m.ident.to_string();
                test.insert(dir.join(format!("{name}.rs")));
                test.insert(dir.join(&name).join("mod.rs"));
            }
        }
        if test.len() == before {
            break;
        }
    }
    test.retain(|f| parsed.contains_key(f));
    test
}

/// Rules 1-5 over what one file names.
fn check_file(
    file: &Path,
    place: &Place,
    found: &Found,
    crates: &Crates,
    analyses: &BTreeSet<String>,
    out: &mut Vec<Violation>,
) {
    let mut flag = |line: usize, (rule, what): (Rule, String)| {
        out.push(Violation {
            file: file.to_path_buf(),
            line,
            rule,
            what,
        });
    };
    for p in &found.paths {
        if let Some(broken) = path_rule(place, p, crates, analyses) {
            flag(p.line, broken);
        }
    }
    if *place == Place::Model {
        for l in found.literals.iter().filter(|l| !l.in_test) {
            if l.value.starts_with("/proc") || l.value.starts_with("/sys") {
                let what = format!(
                    "{:?}: model/ does no I/O (reading the system is host/'s)",
                    l.value
                );
                flag(l.line, (Rule::ModelPure, what));
            }
        }
    }
}

/// The rule (1-5) that naming `p` from `place` breaks, if any. A path into
/// the cli breaks rule 5 only, even where rules 1-3 forbid it too.
fn path_rule(
    place: &Place,
    p: &PathRef,
    crates: &Crates,
    analyses: &BTreeSet<String>,
) -> Option<(Rule, String)> {
    let text = &p.text;
    let head = match &p.target {
        Target::Local(v) => v.first().map(String::as_str),
        _ => None,
    };
    if !matches!(place, Place::Main | Place::Cli) && (head == Some("cli") || p.names_cli) {
        return Some((Rule::CliAtTop, format!("`{text}` names the cli")));
    }
    match (place, &p.target) {
        (Place::Model, Target::Local(_)) if head != Some("model") => Some((
            Rule::ModelPure,
            format!("`{text}` leads out of model/ (model may name only crate::model)"),
        )),
        (Place::Model, Target::Extern(c))
            if !(STD.contains(&c.as_str())
                || MODEL_CRATES.contains(&c.as_str())
                || p.in_test && crates.dev_only.contains(c)) =>
        {
            Some((
                Rule::ModelPure,
                format!(
                    "`{text}` uses the crate {c} (model may use only std/core/alloc, {})",
                    MODEL_CRATES.join(", ")
                ),
            ))
        }
        (Place::Report, Target::Local(_)) => match head {
            Some(h @ ("kernel" | "host" | "analyses" | "runtime")) => Some((
                Rule::ReportApart,
                format!("`{text}`: report/ may not name crate::{h}"),
            )),
            _ => None,
        },
        (Place::Report, Target::Extern(c)) if reads_system(c) => Some((
            Rule::ReportApart,
            format!("`{text}` uses the crate {c}, which reads or loads into the system"),
        )),
        (Place::Kernel | Place::Host, Target::Local(_)) => {
            let (me, other) = if *place == Place::Kernel {
                ("kernel", "host")
            } else {
                ("host", "kernel")
            };
            let h = head?;
            (matches!(h, "report" | "analyses" | "runtime") || h == other).then(|| {
                (
                    Rule::KernelHostBelow,
                    format!("`{text}`: {me}/ may not name crate::{h}"),
                )
            })
        }
        (Place::Analysis(a), Target::Local(v)) => match v.as_slice() {
            [first, b, ..] if first == "analyses" && b != a && analyses.contains(b) => Some((
                Rule::AnalysesApart,
                format!("`{text}`: the analysis {a} names the analysis {b}"),
            )),
            _ => None,
        },
        _ => None,
    }
}

/// Rule 7 over `files`: each at most `limit` lines.
pub fn check_sizes(files: &[(PathBuf, String)], limit: usize) -> Vec<Violation> {
    files
        .iter()
        .filter_map(|(file, text)| {
            let n = text.lines().count();
            (n > limit).then(|| Violation {
                file: file.clone(),
                line: limit + 1,
                rule: Rule::Size,
                what: format!("{n} lines, over the limit of {limit}"),
            })
        })
        .collect()
}

/// Every `.rs` file under `root`, as `(path under root, source)`, in path order.
pub fn read_tree(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                out.push((rel, text));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// The source trees `lint` reads.
#[derive(Clone, Debug)]
pub struct Roots {
    /// The userspace crate's source root; its Cargo.toml is one level up.
    pub src: PathBuf,
    /// The eBPF crate's source root, checked for size only.
    pub ebpf_src: PathBuf,
    /// The kernel/user ABI crate's source root, checked for size only (at
    /// [`MAX_LINES`]).
    pub common_src: PathBuf,
}

impl Default for Roots {
    /// `tcptrace/src`, `tcptrace-ebpf/src` and `tcptrace-common/src` in
    /// this workspace.
    fn default() -> Self {
        let root = crate::workspace_root();
        Roots {
            src: root.join("tcptrace").join("src"),
            ebpf_src: root.join("tcptrace-ebpf").join("src"),
            common_src: root.join("tcptrace-common").join("src"),
        }
    }
}

/// Run the layer lint over `roots`: print every violation and fail if any.
pub fn lint(roots: &Roots) -> Result<()> {
    eprintln!("xtask: layer lint of {}", roots.src.display());
    let manifest = roots
        .src
        .parent()
        .map(|p| p.join("Cargo.toml"))
        .unwrap_or_default();
    let crates = fs::read_to_string(&manifest)
        .map(|t| Crates::from_manifest(&t))
        .unwrap_or_default();
    let files = read_tree(&roots.src)?;
    let ebpf = read_tree(&roots.ebpf_src)?;
    let common = read_tree(&roots.common_src)?;
    let shown = |root: &Path, v: Violation| {
        let base = crate::workspace_root();
        let full = root.join(&v.file);
        let file = full
            .strip_prefix(&base)
            .map_or(full.clone(), Path::to_path_buf);
        Violation { file, ..v }
    };
    let mut all: Vec<Violation> = check_tree(&files, &crates)
        .into_iter()
        .map(|v| shown(&roots.src, v))
        .collect();
    all.extend(
        check_sizes(&ebpf, EBPF_MAX_LINES)
            .into_iter()
            .map(|v| shown(&roots.ebpf_src, v)),
    );
    all.extend(
        check_sizes(&common, MAX_LINES)
            .into_iter()
            .map(|v| shown(&roots.common_src, v)),
    );
    if all.is_empty() {
        eprintln!(
            "xtask: layers: {} files keep to the layer rules",
            files.len() + ebpf.len() + common.len()
        );
        return Ok(());
    }
    for v in &all {
        eprintln!("{v}");
    }
    bail!(
        "{} layer-lint violations (rules: xtask/src/layers/mod.rs)",
        all.len()
    )
}
