//! docs/kernels.md's support table, made from the matrix's result files:
//! those of this checkout's runs (target/kernel-matrix/*.json) over those
//! the docs were last made from (docs/kernels/*.json, which this refreshes),
//! so that one kernel's new run keeps the others' columns. Features by
//! kernel with ✔, a fallback or ✘; then each test file's outcome, and the
//! tests that did not pass with their reasons.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::provision::natural_cmp;

const BEGIN: &str = "<!-- kernel-table: made by `cargo xtask kernel-table`; do not edit -->";
const END: &str = "<!-- end of kernel-table -->";

/// The feature rows: the key in a result's `features`, and its label.
const FEATURES: [(&str, &str); 15] = [
    (
        "sock:inet_sock_set_state",
        "tracepoint sock:inet_sock_set_state",
    ),
    ("sock:sock_recv_length", "tracepoint sock:sock_recv_length"),
    ("sock:sock_send_length", "tracepoint sock:sock_send_length"),
    (
        "recv/send hooks",
        "recv/send hooks (leak mode, socket owners)",
    ),
    ("tcp:tcp_send_reset", "tracepoint tcp:tcp_send_reset"),
    (
        "tcp_send_reset.reason",
        "tcp_send_reset's `reason` field (6.10+)",
    ),
    ("tcp:tcp_receive_reset", "tracepoint tcp:tcp_receive_reset"),
    ("tcp:tcp_destroy_sock", "tracepoint tcp:tcp_destroy_sock"),
    (
        "syscalls:sys_exit_bind",
        "tracepoint syscalls:sys_exit_bind",
    ),
    (
        "syscalls:sys_exit_connect",
        "tracepoint syscalls:sys_exit_connect",
    ),
    ("BTF", "BTF (/sys/kernel/btf/vmlinux)"),
    ("bpf_stats", "kernel.bpf_stats_enabled"),
    ("ringbuf", "BPF ring buffer"),
    ("lockdown", "lockdown"),
    ("tracefs", "tracefs"),
];

pub fn write() -> Result<()> {
    super::reread()?;
    let root = crate::workspace_root();
    let kept = root.join("docs/kernels");
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    for dir in [kept.clone(), super::matrix_dir()] {
        for (release, mut v) in read_dir(&dir)? {
            // A run of some test files replaces those files' results only.
            if let Some(old) = results.remove(&release) {
                for (f, r) in old["files"].as_object().into_iter().flatten() {
                    if v["files"].get(f).is_none() {
                        v["files"][f] = r.clone();
                    }
                }
            }
            results.insert(release, v);
        }
    }
    if results.is_empty() {
        bail!("no results: run cargo xtask test --kernel VERSION first");
    }
    fs::create_dir_all(&kept)?;
    for (release, v) in &results {
        fs::write(
            kept.join(format!("{release}.json")),
            serde_json::to_string_pretty(v)? + "\n",
        )?;
    }
    let mut runs: Vec<&Value> = results.values().collect();
    runs.sort_by(|a, b| {
        natural_cmp(
            a["kernel"].as_str().unwrap_or(""),
            b["kernel"].as_str().unwrap_or(""),
        )
    });
    let doc = root.join("docs/kernels.md");
    let text = fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} ... {END} block", doc.display());
    };
    let new = format!("{}{BEGIN}\n{}{}", &text[..b], render(&runs), &text[e..]);
    fs::write(&doc, new)?;
    eprintln!("xtask: wrote {} ({} kernels)", doc.display(), runs.len());
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<(String, Value)>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let v: Value = serde_json::from_str(&fs::read_to_string(&path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some(k) = v["kernel"].as_str() {
            out.push((k.to_owned(), v));
        }
    }
    Ok(out)
}

/// The table (Markdown), then the tests that did not pass.
pub(super) fn render(runs: &[&Value]) -> String {
    let mut s = String::from("\n| | ");
    let heads: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r["kernel"].as_str().unwrap_or("?"),
                r["how"].as_str().unwrap_or("?")
            )
        })
        .collect();
    s += &heads.join(" | ");
    s += " |\n|---|";
    s += &"---|".repeat(runs.len());
    s += "\n";
    let row = |s: &mut String, label: &str, cells: Vec<String>| {
        let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
    };
    row(&mut s, "**Features**", vec![String::new(); runs.len()]);
    for (key, label) in FEATURES {
        let cells = runs
            .iter()
            .map(|r| feature(key, r["features"][key].as_str()))
            .collect();
        row(&mut s, label, cells);
    }
    row(&mut s, "**Test files**", vec![String::new(); runs.len()]);
    let mut files: Vec<&String> = runs
        .iter()
        .filter_map(|r| r["files"].as_object())
        .flat_map(serde_json::Map::keys)
        .collect();
    files.sort();
    files.dedup();
    for f in files {
        let cells = runs
            .iter()
            .map(|r| file_cell(&r["files"][f.as_str()]))
            .collect();
        row(&mut s, f, cells);
    }
    s += "\nTests that did not pass, by kernel and reason:\n\n";
    let mut any = false;
    for r in runs {
        let k = r["kernel"].as_str().unwrap_or("?");
        // (outcome, reason) -> the tests, in file order.
        let mut groups: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
        for (f, v) in r["files"].as_object().into_iter().flatten() {
            for (t, o) in v["tests"].as_object().into_iter().flatten() {
                let word = o["result"].as_str().unwrap_or("?");
                if word != "ok" && word != "ignored" {
                    let why = super::results::short(o["reason"].as_str().unwrap_or_default());
                    groups
                        .entry((word, why))
                        .or_default()
                        .push(format!("{f}::{t}"));
                }
            }
        }
        for ((word, why), tests) in groups {
            any = true;
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.replace('|', "\\|"))
            };
            let _ = writeln!(
                s,
                "- {k}, **{word}** ({}){why}\n  - {}",
                tests.len(),
                tests.join(", ")
            );
        }
    }
    if !any {
        s += "- none\n";
    }
    s + "\n"
}

/// A feature's cell: ✔, a fallback, or ✘ with what it means.
pub(super) fn feature(key: &str, value: Option<&str>) -> String {
    let Some(v) = value else {
        return "?".to_owned();
    };
    if key == "lockdown" {
        let mode = v.split('[').nth(1).and_then(|m| m.split(']').next());
        return mode.unwrap_or(v).to_owned();
    }
    if key == "recv/send hooks" {
        return match v.strip_prefix("yes (") {
            Some(rest) if rest.contains("fexit") => "fallback: fexit".to_owned(),
            Some(_) => "✔ tracepoints".to_owned(),
            None => match v.split_once("failed: ") {
                Some((_, why)) => format!(
                    "✘ fallback refused: {}",
                    why.split(" (verifier").next().unwrap_or(why)
                ),
                None => format!("✘ {}", v.trim_start_matches("no: ")),
            },
        };
    }
    if v.starts_with("yes") || (key == "bpf_stats" && v.contains("bpf_stats_enabled =")) {
        return "✔".to_owned();
    }
    if v.contains(" instead") {
        let how = v
            .split("traced by ")
            .nth(1)
            .and_then(|h| h.split(" instead").next());
        return format!("fallback: {}", how.unwrap_or("yes"));
    }
    match key {
        "tcp_send_reset.reason" => "✘ (resets without a reason)".to_owned(),
        _ if v.starts_with("no (optional") => "✘ (optional)".to_owned(),
        _ => format!(
            "✘ ({})",
            v.trim_start_matches("MISSING ").trim_matches(['(', ')'])
        ),
    }
}

/// A test file's cell: ✔ when every test it ran passed, else the counts.
fn file_cell(v: &Value) -> String {
    let Some(tests) = v["tests"].as_object() else {
        return "–".to_owned();
    };
    let mut c: BTreeMap<&str, usize> = BTreeMap::new();
    for o in tests.values() {
        *c.entry(o["result"].as_str().unwrap_or("?")).or_insert(0) += 1;
    }
    let ok = c.remove("ok").unwrap_or(0);
    c.remove("ignored");
    let run = ok + c.values().sum::<usize>();
    if c.is_empty() {
        return format!("✔ {ok}/{run}");
    }
    let rest: Vec<String> = c.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let mark = if c.keys().all(|w| *w == "unsupported") {
        ""
    } else {
        "✘ "
    };
    format!("{mark}{ok}/{run} ok, {}", rest.join(", "))
}
