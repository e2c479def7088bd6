//! The throughput stage's report: one table row and one JSON object per
//! configuration (medians over rounds), and the splicing of generated tables
//! into docs/benchmarks.md and docs/benchmarks.json, keeping the rest.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{Run, baseline::Baseline, compare, configs::Config, median};
use crate::workspace_root;

/// Median ns/call per program over rounds, for one load phase.
fn phase_medians(rs: &[Run], f: fn(&Run) -> &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in rs {
        for (k, v) in f(run) {
            by.entry(k.clone()).or_default().push(*v);
        }
    }
    by.into_iter().map(|(k, v)| (k, median(v))).collect()
}

/// Median ns/call per program over rounds, over the whole run (the tracer's
/// exit summary, or the kernel's totals for bpftrace).
pub fn call_medians(rs: &[Run]) -> BTreeMap<String, f64> {
    phase_medians(rs, |r| &r.ns_per_call)
}

/// Median kernel ns per connection of the churn load over rounds; None for
/// no tracer.
fn conn_cost(rs: &[Run]) -> Option<f64> {
    let v: Vec<f64> = rs.iter().filter_map(|r| r.kernel_ns_per_conn).collect();
    (!v.is_empty()).then(|| median(v))
}

/// The kernel ns per connection cell and its ratio to `--hist`'s.
fn conn_cells(rs: &[Run], hist_ns: Option<f64>) -> (String, String) {
    match (conn_cost(rs), hist_ns) {
        (Some(ns), Some(hist)) => (format!("{ns:.0}"), format!("{:.2}", ns / hist)),
        (Some(ns), None) => (format!("{ns:.0}"), "-".to_owned()),
        _ => ("-".to_owned(), "-".to_owned()),
    }
}

/// `a 12, b 30` for the table, `-` when empty.
fn cost_cell(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"a":12.0,"b":30.0` for the JSON.
fn json_costs(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("\"{k}\":{v:.1}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn write_reports(
    runs: &[(Config, Vec<Run>)],
    rounds: u32,
    seconds: f64,
    micro: &str,
) -> Result<()> {
    let base = runs
        .iter()
        .find(|(c, _)| *c == Config::NoTracer)
        .map(|(_, r)| {
            (
                median(r.iter().map(|x| x.conns_per_s).collect()),
                median(r.iter().map(|x| x.reqs_per_s).collect()),
            )
        });
    let (base_c, base_r) = base.unwrap_or((1.0, 1.0));
    let hist_ns = runs
        .iter()
        .find(|(c, _)| c.name() == "tcptrace --hist")
        .and_then(|(_, r)| conn_cost(r));
    let mut md = String::new();
    let mut json = String::from("{\"configs\":[");
    let _ = writeln!(
        md,
        "| configuration | conn/s | vs none | kernel ns per connection (churn) | vs --hist | req/s | vs none | tracer CPU (cores) | CPU per 100k events/s | peak RSS | events/s | ring-buffer losses | kernel ns/call, churn | kernel ns/call, keep-alive |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for (i, (cfg, rs)) in runs.iter().enumerate() {
        let m = |f: fn(&Run) -> f64| median(rs.iter().map(f).collect());
        let (c, r) = (m(|x| x.conns_per_s), m(|x| x.reqs_per_s));
        let per_prog = call_medians(rs);
        let churn_ns = phase_medians(rs, |r| &r.ns_churn);
        let keepalive_ns = phase_medians(rs, |r| &r.ns_keepalive);
        let (churn, keepalive) = (cost_cell(&churn_ns), cost_cell(&keepalive_ns));
        let events = m(|x| x.events_per_s);
        // Tracer CPU scaled to 100k events/s (the streaming target); only
        // where the tracer handles events.
        let per_100k = if events >= 1000.0 {
            format!("{:.1}%", 100.0 * m(|x| x.cpu_per_s) * 100_000.0 / events)
        } else {
            "-".to_owned()
        };
        let losses: u64 = rs.iter().map(|x| x.losses).sum();
        let (per_conn_cell, vs_hist) = conn_cells(rs, hist_ns);
        let rss = rs.iter().map(|x| x.rss_kib).max().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {c:.0} | {:.1}% | {per_conn_cell} | {vs_hist} | {r:.0} | {:.1}% | {:.3} | {per_100k} | {} | {events:.0} | {losses} | {churn} | {keepalive} |",
            cfg.name(),
            100.0 * c / base_c,
            100.0 * r / base_r,
            m(|x| x.cpu_per_s),
            if rss == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1} MiB",
                    f64::from(u32::try_from(rss).unwrap_or(u32::MAX)) / 1024.0
                )
            },
        );
        let _ = write!(
            json,
            "{}{{\"config\":{},\"conns_per_s\":[{}],\"kernel_ns_per_conn\":[{}],\"reqs_per_s\":[{}],\"cpu_per_s\":[{}],\"peak_rss_kib\":{rss},\"losses\":{losses},\"ns_per_call\":{{{}}},\"ns_per_call_churn\":{{{}}},\"ns_per_call_keepalive\":{{{}}}}}",
            if i == 0 { "" } else { "," },
            serde_json::Value::from(cfg.name()),
            rs.iter()
                .map(|x| format!("{:.1}", x.conns_per_s))
                .collect::<Vec<_>>()
                .join(","),
            rs.iter()
                .filter_map(|x| x.kernel_ns_per_conn)
                .map(|n| format!("{n:.1}"))
                .collect::<Vec<_>>()
                .join(","),
            rs.iter()
                .map(|x| format!("{:.1}", x.reqs_per_s))
                .collect::<Vec<_>>()
                .join(","),
            rs.iter()
                .map(|x| format!("{:.4}", x.cpu_per_s))
                .collect::<Vec<_>>()
                .join(","),
            json_costs(&per_prog),
            json_costs(&churn_ns),
            json_costs(&keepalive_ns),
        );
    }
    let _ = write!(
        json,
        "],\"rounds\":{rounds},\"seconds\":{seconds},\"decode_bench\":{micro}}}"
    );
    let docs = workspace_root().join("docs");
    let fresh: serde_json::Value =
        serde_json::from_str(&json).context("the throughput JSON is malformed")?;
    update_json(&docs.join("benchmarks.json"), |doc| {
        if let serde_json::Value::Object(fresh) = fresh {
            doc.extend(fresh);
        }
    })?;
    let table = format!("{md}\nUserspace decode + filter + format, one core: `{micro}`\n");
    splice(&docs.join("benchmarks.md"), THROUGHPUT_MARKERS, &table)?;
    eprintln!("xtask: wrote docs/benchmarks.md and docs/benchmarks.json\n{md}\n{micro}");
    Ok(())
}

/// The comparison with `--baseline`'s build: its table between its markers
/// in docs/benchmarks.md and under `"baseline"` in docs/benchmarks.json;
/// returns the table.
pub fn write_comparison(runs: &[(Config, Vec<Run>)], b: &Baseline, rounds: u32) -> Result<String> {
    let per_round: Vec<(&Config, compare::Rounds)> = runs
        .iter()
        .map(|(c, rs)| (c, rs.iter().map(|r| r.ns_load.clone()).collect()))
        .collect();
    let sizes: Vec<(&Config, BTreeMap<String, u32>)> = runs
        .iter()
        .map(|(c, rs)| {
            (
                c,
                rs.last().map(|r| r.prog_bytes.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let rows = compare::with_sizes(compare::rows(&per_round), &sizes);
    let md = compare::markdown(&compare::heading(b, rounds), &rows);
    let docs = workspace_root().join("docs");
    update_json(&docs.join("benchmarks.json"), |doc| {
        doc.insert("baseline".to_owned(), compare::json(b, rounds, &rows));
    })?;
    splice(&docs.join("benchmarks.md"), BASELINE_MARKERS, &md)?;
    Ok(md)
}

/// A generated table's begin and end markers in docs/benchmarks.md.
pub type Markers = (&'static str, &'static str);
const THROUGHPUT_MARKERS: Markers = ("<!-- bench:begin -->", "<!-- bench:end -->");
pub const SCALE_MARKERS: Markers = ("<!-- scale:begin -->", "<!-- scale:end -->");
const BASELINE_MARKERS: Markers = ("<!-- baseline:begin -->", "<!-- baseline:end -->");
pub const NETNS_MARKERS: Markers = ("<!-- netns:begin -->", "<!-- netns:end -->");

/// Rewrite docs/benchmarks.json with `edit` applied to its top-level object,
/// keeping what other stages wrote.
pub fn update_json(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<()> {
    let mut doc = fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| match v {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    edit(&mut doc);
    fs::write(path, serde_json::to_string(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Replace one generated table in docs/benchmarks.md (between its markers),
/// keeping the prose around it.
pub fn splice(path: &Path, markers: Markers, body: &str) -> Result<()> {
    let doc = fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    fs::write(path, spliced(&doc, markers, body))
        .with_context(|| format!("writing {}", path.display()))
}

/// `doc` with the text between `markers` replaced by `body`; the markers and
/// `body` are appended when `doc` lacks them.
fn spliced(doc: &str, (begin, end): Markers, body: &str) -> String {
    let body = format!("{begin}\n{}\n{end}", body.trim_end());
    match doc
        .split_once(begin)
        .and_then(|(head, rest)| Some((head, rest.split_once(end)?.1)))
    {
        Some((head, tail)) => format!("{head}{body}{tail}"),
        None => format!("{}\n\n{body}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_between_markers_and_keeps_the_prose() {
        let doc = "# B\n\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nafter\n\
                   <!-- scale:begin -->\nold scale\n<!-- scale:end -->\nend\n";
        let out = spliced(doc, SCALE_MARKERS, "| new |\n");
        assert_eq!(
            out,
            "# B\n\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nafter\n\
             <!-- scale:begin -->\n| new |\n<!-- scale:end -->\nend\n"
        );
        let out = spliced(&out, THROUGHPUT_MARKERS, "t");
        assert!(
            out.contains("<!-- bench:begin -->\nt\n<!-- bench:end -->\nafter"),
            "{out}"
        );
        assert!(out.contains("| new |"), "{out}");
    }

    #[test]
    fn every_table_has_its_markers_in_the_docs_once() {
        let doc = fs::read_to_string(workspace_root().join("docs/benchmarks.md")).unwrap();
        for (begin, end) in [
            THROUGHPUT_MARKERS,
            SCALE_MARKERS,
            BASELINE_MARKERS,
            NETNS_MARKERS,
        ] {
            assert_eq!(doc.matches(begin).count(), 1, "{begin}");
            assert_eq!(doc.matches(end).count(), 1, "{end}");
            assert!(doc.find(begin) < doc.find(end), "{begin}");
        }
    }

    #[test]
    fn appends_missing_markers() {
        let out = spliced("# B\n\ntext\n", SCALE_MARKERS, "x");
        assert_eq!(
            out,
            "# B\n\ntext\n\n<!-- scale:begin -->\nx\n<!-- scale:end -->\n"
        );
    }
}
