//! A matrix run's results, read from the runner's files: each test's
//! outcome from libtest's plain output (`test NAME ... ok|FAILED|ignored`,
//! then the failures' captured output), and the kernel's features from
//! `features.txt`. A failed test whose output has tcptrace's refusal of the
//! kernel ("this kernel has no ...") is `unsupported`, with that line as the
//! reason, and so is a test that said it needs what the kernel lacks
//! ("unsupported on this kernel: ..."): never a pass, never a plain failure.

use std::{collections::BTreeMap, fs, path::Path};

use serde_json::{Value, json};

/// tcptrace's error when it refuses a kernel that lacks what it needs (its
/// log lines that name a missing tracepoint it replaces do not start so).
pub const REFUSAL: &str = "tcptrace: this kernel has no ";

/// The panic of a test that needs what the kernel lacks
/// (`integration_tests::kernel::unsupported`), followed by the reason.
pub const TEST_UNSUPPORTED: &str = "unsupported on this kernel: ";

/// One test's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(String),
    Ignored,
    Unsupported(String),
    /// Its file ran out of time while it ran.
    Timeout,
    /// Its file ended (or ran out of time) before it.
    NotRun,
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Ignored => "ignored",
            Outcome::Unsupported(_) => "unsupported",
            Outcome::Timeout => "timeout",
            Outcome::NotRun => "not run",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Failed(r) | Outcome::Unsupported(r) => Some(r),
            _ => None,
        }
    }
}

/// The outcome of every test in `listed` (the binary's `--list`, so that
/// a test the run never reached is there too) from its plain output.
pub fn parse_tests(listed: &[String], output: &str, timed_out: bool) -> BTreeMap<String, Outcome> {
    let mut seen: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut pending: Option<String> = None;
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut section: Option<(String, String)> = None;
    for line in output.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            if let Some((n, text)) = section.take() {
                failures.insert(n, text);
            }
            section = Some((name.to_owned(), String::new()));
            continue;
        }
        if let Some((_, text)) = section.as_mut() {
            if line == "failures:" {
                let (n, text) = section.take().expect("a section");
                failures.insert(n, text);
            } else {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        }
        if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        {
            pending = Some(name.to_owned());
            if let Some(o) = verdict(result) {
                seen.insert(name.to_owned(), o);
                pending = None;
            }
            continue;
        }
        // Output that was not captured can split a test's line in two.
        if let (Some(name), Some(o)) = (pending.as_ref(), verdict(line)) {
            seen.insert(name.clone(), o);
            pending = None;
        }
    }
    if let Some((n, text)) = section.take() {
        failures.insert(n, text);
    }
    let mut all: BTreeMap<String, Outcome> = listed
        .iter()
        .map(|n| (n.clone(), Outcome::NotRun))
        .collect();
    for (name, o) in seen {
        let o = match o {
            Outcome::Failed(_) => classify(failures.get(&name).map_or("", String::as_str)),
            o => o,
        };
        all.insert(name, o);
    }
    if let (Some(name), true) = (pending, timed_out) {
        all.insert(name, Outcome::Timeout);
    }
    all
}

/// The result word at the end of a test's line.
fn verdict(text: &str) -> Option<Outcome> {
    let text = text.trim_end();
    if text.ends_with("ok") && (text == "ok" || text.ends_with(" ok")) {
        Some(Outcome::Ok)
    } else if text.ends_with("FAILED") {
        Some(Outcome::Failed(String::new()))
    } else if text.ends_with("ignored") || text.contains("ignored, ") {
        Some(Outcome::Ignored)
    } else {
        None
    }
}

/// A failure's outcome from its captured output.
fn classify(text: &str) -> Outcome {
    if let Some(line) = text.lines().find(|l| l.contains(REFUSAL)) {
        let at = line.find(REFUSAL).map_or(0, |i| i + "tcptrace: ".len());
        return Outcome::Unsupported(short(&line[at..]));
    }
    if let Some(line) = text.lines().find(|l| l.contains(TEST_UNSUPPORTED)) {
        let at = line
            .find(TEST_UNSUPPORTED)
            .map_or(0, |i| i + TEST_UNSUPPORTED.len());
        return Outcome::Unsupported(short(&line[at..]));
    }
    let panic = text
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .nth(1)
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no output)");
    // tcptrace that did not start: its own error says why.
    let error = text
        .lines()
        .find_map(|l| l.strip_prefix("tcptrace: "))
        .filter(|_| panic.contains("did not start"));
    Outcome::Failed(match error {
        Some(e) => short(&format!("tcptrace did not start: {e}")),
        None => short(panic),
    })
}

/// A reason on one line, without the verifier's statistics (they differ
/// from run to run), at most 300 characters.
pub(super) fn short(reason: &str) -> String {
    let r = reason.split("\\n").next().unwrap_or_default();
    let r = r.split(" (verifier: verification time").next().unwrap_or(r);
    r.trim().trim_end_matches('"').chars().take(300).collect()
}

/// The test names that `BIN --list` prints.
pub fn listed(list_output: &str) -> Vec<String> {
    list_output
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// `features.txt` as feature -> what the kernel has: each `KEY: VALUE`
/// line of `--version -v` (the tracepoints under `tracepoints:`), and the
/// runner's probes.
pub fn parse_features(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("probe ") {
            if let Some((k, v)) = rest.split_once(": ") {
                out.insert(k.to_owned(), v.trim().to_owned());
            }
        } else if let Some((k, v)) = line
            .strip_prefix("  ")
            .and_then(|r| r.trim().split_once(' '))
        {
            out.insert(k.to_owned(), v.trim().to_owned());
        } else if let Some((k, v)) = line
            .split_once(':')
            .filter(|(k, v)| !v.trim().is_empty() && !k.contains(' '))
        {
            out.insert(k.to_owned(), v.trim().to_owned());
        }
    }
    out
}

/// One test binary's run: how it ended and its tests.
pub struct FileRun {
    pub name: String,
    /// `exit CODE SECONDS`, `timeout SECONDS`, or why it has none.
    pub status: String,
    pub tests: BTreeMap<String, Outcome>,
}

/// Read the runner's files for the binary `name`.
pub fn read_file_run(out: &Path, name: &str, listed: &[String]) -> FileRun {
    let status = fs::read_to_string(out.join(format!("{name}.status"))).map_or_else(
        |_| "did not end (the VM stopped)".to_owned(),
        |s| s.trim().to_owned(),
    );
    let log = fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default();
    let timed_out = !status.starts_with("exit ");
    FileRun {
        name: name.to_owned(),
        tests: parse_tests(listed, &log, timed_out),
        status,
    }
}

/// The result file's JSON.
pub fn to_json(
    release: &str,
    how: &str,
    boot_s: Option<f64>,
    features: &BTreeMap<String, String>,
    runs: &[FileRun],
) -> Value {
    let files: serde_json::Map<String, Value> = runs
        .iter()
        .map(|r| {
            let tests: serde_json::Map<String, Value> = r
                .tests
                .iter()
                .map(|(n, o)| {
                    let mut v = json!({ "result": o.word() });
                    if let Some(reason) = o.reason() {
                        v["reason"] = json!(reason);
                    }
                    (n.clone(), v)
                })
                .collect();
            (
                r.name.clone(),
                json!({ "status": r.status, "tests": tests }),
            )
        })
        .collect();
    json!({
        "kernel": release,
        "how": how,
        "boot_seconds": boot_s,
        "features": features,
        "files": files,
    })
}

/// Counts of each outcome word over `runs`.
pub fn counts(runs: &[FileRun]) -> BTreeMap<&'static str, usize> {
    let mut c = BTreeMap::new();
    for o in runs.iter().flat_map(|r| r.tests.values()) {
        *c.entry(o.word()).or_insert(0) += 1;
    }
    c
}
