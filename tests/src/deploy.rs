//! `deploy/`, read the way the tests need it: the systemd unit's
//! capabilities, the alert rules' expressions and the Grafana dashboard's
//! queries (which a test against a real Prometheus runs, so that an alert or
//! a panel naming a metric tcptrace does not serve fails).
//!
//! The rules file is YAML and this crate has no YAML parser: [`alert_exprs`]
//! reads the one layout `deploy/prometheus/tcptrace-alerts.yml` uses (`-
//! alert: NAME`, then `expr:` on one line or as a `|` block) and panics on
//! any other; `tests/tests/deploy.rs` checks that it finds as many alerts
//! as `promtool check rules` does.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::workspace_root;

/// The systemd unit, under `deploy/`.
pub const UNIT: &str = "systemd/tcptrace.service";
/// The alerting rules, under `deploy/`.
pub const ALERTS: &str = "prometheus/tcptrace-alerts.yml";
/// Their `promtool test rules` unit tests, under `deploy/`.
pub const ALERT_TESTS: &str = "prometheus/tcptrace-alerts.test.yml";
/// The Grafana dashboard, under `deploy/`.
pub const DASHBOARD: &str = "grafana/tcptrace.json";
/// The container image's build, under `deploy/`.
pub const CONTAINERFILE: &str = "Containerfile";
/// The Kubernetes `DaemonSet` (with its namespace and service account).
pub const DAEMONSET: &str = "kubernetes/daemonset.yaml";

/// What Grafana's variables in the dashboard's queries stand for when a
/// query runs against Prometheus itself: every host, every state, and a
/// rate window of a minute.
pub const GRAFANA_VARS: [(&str, &str); 3] = [
    ("$__rate_interval", "1m"),
    ("$instance", ".*"),
    ("$state", ".*"),
];

/// `<workspace>/deploy/REL`.
#[must_use]
pub fn deploy_path(rel: &str) -> PathBuf {
    workspace_root().join("deploy").join(rel)
}

/// The text of `deploy/REL`.
#[must_use]
pub fn read_deploy(rel: &str) -> String {
    let path = deploy_path(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `KEY=` value of the unit's `[Service]` section, in order.
fn service_values(unit: &str, key: &str) -> Vec<String> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{UNIT}: no continued lines, please: {line:?}"
        );
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]"
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            out.push(v.trim().to_owned());
        }
    }
    out
}

/// The one `KEY=` value of the unit's `[Service]` section.
fn service_value(unit: &str, key: &str) -> String {
    let values = service_values(unit, key);
    assert!(
        values.len() == 1,
        "{UNIT}: expected one {key}=, found {values:?}"
    );
    values.into_iter().next().expect("checked above")
}

/// The capabilities the unit gives tcptrace (`CAP_BPF`, ...): its
/// `AmbientCapabilities=`, which must be its `CapabilityBoundingSet=` too.
#[must_use]
pub fn unit_capabilities() -> Vec<String> {
    let unit = read_deploy(UNIT);
    let list = |key| -> Vec<String> {
        service_value(&unit, key)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let ambient = list("AmbientCapabilities");
    let mut bounding = list("CapabilityBoundingSet");
    let mut sorted = ambient.clone();
    sorted.sort();
    bounding.sort();
    assert_eq!(
        sorted, bounding,
        "{UNIT}: AmbientCapabilities= and CapabilityBoundingSet= name the same set"
    );
    assert!(
        !ambient.is_empty() && ambient.iter().all(|c| c.starts_with("CAP_")),
        "{UNIT}: capabilities are written CAP_*: {ambient:?}"
    );
    ambient
}

/// The unit's `ExecStart=` program (its first word).
#[must_use]
pub fn unit_program() -> String {
    let exec = service_value(&read_deploy(UNIT), "ExecStart");
    exec.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("{UNIT}: an empty ExecStart="))
        .to_owned()
}

/// The unit with its `ExecStart=` program replaced by `bin` (the rest of the
/// file as it is).
#[must_use]
pub fn unit_with_program(bin: &Path) -> String {
    let unit = read_deploy(UNIT);
    let program = unit_program();
    let exec = format!("ExecStart={program}");
    assert_eq!(
        unit.lines()
            .filter(|l| l.trim_start().starts_with(&exec))
            .count(),
        1,
        "{UNIT}: one ExecStart={program} line"
    );
    unit.lines()
        .map(|l| {
            if l.trim_start().starts_with(&exec) {
                l.replacen(&program, &bin.display().to_string(), 1)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `caps` (`CAP_BPF`, ...) as setpriv writes them: `+bpf,+perfmon,...`.
#[must_use]
pub fn setpriv_caps(caps: &[String]) -> String {
    caps.iter()
        .map(|c| {
            let name = c
                .strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("not a CAP_* name: {c}"));
            format!("+{}", name.to_ascii_lowercase())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Each alert of the rules file as `(name, expr)`, in file order, the
/// expression as Prometheus reads it (a `|` block keeps its line breaks).
#[must_use]
pub fn alert_exprs() -> Vec<(String, String)> {
    parse_alerts(&read_deploy(ALERTS))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn parse_alerts(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        i += 1;
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push((name.trim().to_owned(), None));
        } else if let Some(v) = t.strip_prefix("expr:") {
            let (name, expr) = out
                .last_mut()
                .unwrap_or_else(|| panic!("{ALERTS}: an expr before any alert: {line:?}"));
            assert!(expr.is_none(), "{ALERTS}: alert {name} has two exprs");
            let v = v.trim();
            *expr = Some(if v == "|" {
                let mut block = Vec::new();
                while i < lines.len()
                    && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line))
                {
                    block.push(lines[i].trim());
                    i += 1;
                }
                block.join("\n").trim().to_owned()
            } else {
                assert!(
                    !v.is_empty() && !v.starts_with(['"', '\'', '>', '|', '{', '[']),
                    "{ALERTS}: write alert {name}'s expr plain on its line or as a | block \
                     (the test harness reads only those): {v:?}"
                );
                v.to_owned()
            });
        }
    }
    out.into_iter()
        .map(|(name, expr)| {
            let expr = expr.unwrap_or_else(|| panic!("{ALERTS}: alert {name} has no expr"));
            (name, expr)
        })
        .collect()
}

/// The dashboard, parsed.
#[must_use]
pub fn dashboard() -> Value {
    let text = read_deploy(DASHBOARD);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel of `panels`, rows' nested panels included.
fn collect_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        collect_panels(&p["panels"], out);
    }
}

/// Every panel of the dashboard, rows' nested panels included.
#[must_use]
pub fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    collect_panels(&dashboard["panels"], &mut out);
    out
}

/// Every query of every panel as `(panel title, expr)`, as written (with
/// Grafana's variables).
#[must_use]
pub fn dashboard_raw_exprs() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in dashboard_panels(&d) {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("{DASHBOARD}: panel {title:?} has a target without expr")
            });
            out.push((title.clone(), expr.to_owned()));
        }
    }
    out
}

/// Every query of every panel as `(panel title, expr)`, as Prometheus runs
/// it: Grafana's variables replaced as [`GRAFANA_VARS`] says. Panics when a
/// query names another variable.
#[must_use]
pub fn dashboard_exprs() -> Vec<(String, String)> {
    dashboard_raw_exprs()
        .into_iter()
        .map(|(title, expr)| {
            let promql = GRAFANA_VARS
                .iter()
                .fold(expr.clone(), |e, (var, value)| e.replace(var, value));
            assert!(
                !promql.contains('$'),
                "{DASHBOARD}: panel {title:?} uses a variable other than {GRAFANA_VARS:?}: {expr}"
            );
            (title, promql)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_parse_one_line_and_block_exprs() {
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n\
                    \x20       for: 1m\n      - alert: B\n        expr: |\n          x > 1\n\
                    \x20         and y\n        labels:\n          severity: info\n";
        assert_eq!(
            parse_alerts(text),
            [
                ("A".to_owned(), "up == 0".to_owned()),
                ("B".to_owned(), "x > 1\nand y".to_owned())
            ]
        );
    }

    #[test]
    #[should_panic(expected = "plain on its line")]
    fn alerts_refuse_a_quoted_expr() {
        let _ = parse_alerts("      - alert: A\n        expr: \"up == 0\"\n");
    }

    #[test]
    #[should_panic(expected = "has no expr")]
    fn alerts_refuse_an_alert_without_expr() {
        let _ = parse_alerts("      - alert: A\n        for: 1m\n");
    }

    #[test]
    fn service_values_read_only_the_service_section() {
        let unit = "[Unit]\nUser=x\n[Service]\n# User=y\nUser=z\nExecStart=/bin/a --b\n";
        assert_eq!(service_values(unit, "User"), ["z"]);
        assert_eq!(service_value(unit, "ExecStart"), "/bin/a --b");
    }

    #[test]
    fn setpriv_caps_lowercase_without_prefix() {
        let caps = ["CAP_BPF".to_owned(), "CAP_SYS_ADMIN".to_owned()];
        assert_eq!(setpriv_caps(&caps), "+bpf,+sys_admin");
    }
}
