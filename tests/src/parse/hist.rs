//! `--hist --json`: [`HistLine`], one histogram line checked against the
//! schema, its [`HistBucket`]s, and [`HistReport`], the `hist` lines that a
//! `timewait` line ends.

use std::{collections::HashMap, fmt, time::Duration};

use serde_json::Value;

use super::{TimewaitLine, check};

/// The states a `hist` line may name: the kernel's, and the two timewait
/// ones tcptrace follows through `sock_diag`.
const HIST_STATES: [&str; 13] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "FIN_WAIT2_ORPHAN",
];

/// One bucket of a `hist` line: `[lo_ns, hi_ns)` holds `count` dwells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistBucket {
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

/// One `{"type":"hist",...}` line, checked against the documented schema.
#[derive(Clone, Debug, PartialEq)]
pub struct HistLine(pub Value);

impl HistLine {
    fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = vec![
            "v",
            "type",
            "report",
            "time",
            "state",
            "by",
            "group",
            "count",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "max_ns",
            "buckets",
            "resolution",
        ];
        want.sort_unstable();
        if keys != want {
            return Err(format!("keys {keys:?}, documented {want:?}"));
        }
        check("v", &v["v"], |x| x == 1)?;
        check("report", &v["report"], |x| {
            matches!(x.as_str(), Some("interval" | "final"))
        })?;
        check("time", &v["time"], super::is_time)?;
        check("state", &v["state"], |x| {
            x.as_str().is_some_and(|s| HIST_STATES.contains(&s))
        })?;
        if v["by"].is_null() != v["group"].is_null() {
            return Err("by and group must be null together".into());
        }
        if !v["by"].is_null() {
            check("by", &v["by"], |x| {
                matches!(
                    x.as_str(),
                    Some("lport" | "rport" | "raddr" | "comm" | "netns" | "container")
                )
            })?;
            check("group", &v["group"], Value::is_string)?;
        }
        check("count", &v["count"], Value::is_u64)?;
        check("max_ns", &v["max_ns"], Value::is_u64)?;
        check("resolution", &v["resolution"], |x| {
            x.as_str().is_some_and(|s| s.contains("6.25%"))
        })?;
        let count = self.count();
        for k in ["p50_ns", "p90_ns", "p99_ns"] {
            if count == 0 {
                check(k, &v[k], Value::is_null)?;
            } else {
                check(k, &v[k], Value::is_u64)?;
            }
        }
        let buckets = v["buckets"].as_array().ok_or("buckets not an array")?;
        for b in buckets {
            if b.as_object().map(serde_json::Map::len) != Some(3) {
                return Err(format!("bucket {b}"));
            }
            for k in ["lo_ns", "hi_ns", "count"] {
                check(k, &b[k], Value::is_u64)?;
            }
        }
        let bs = self.buckets();
        if bs.iter().any(|b| b.lo_ns >= b.hi_ns || b.count == 0) {
            return Err(format!("empty or inverted bucket in {bs:?}"));
        }
        if bs.windows(2).any(|w| w[0].hi_ns > w[1].lo_ns) {
            return Err(format!("buckets out of order or overlapping: {bs:?}"));
        }
        let sum: u64 = bs.iter().map(|b| b.count).sum();
        if sum != count {
            return Err(format!("bucket counts add up to {sum}, count {count}"));
        }
        if let Some((p50, p90, p99)) = self.percentiles()
            && !(p50 <= p90 && p90 <= p99 && p99 <= self.max_ns())
        {
            return Err(format!(
                "percentiles out of order: p50 {p50}, p90 {p90}, p99 {p99}, max {}",
                self.max_ns()
            ));
        }
        Ok(())
    }

    /// The state (or `TIME_WAIT`, `FIN_WAIT2_ORPHAN`).
    #[must_use]
    pub fn state(&self) -> &str {
        self.0["state"].as_str().unwrap_or_default()
    }

    /// `--by` key and group label, when split.
    #[must_use]
    pub fn by(&self) -> Option<&str> {
        self.0["by"].as_str()
    }

    #[must_use]
    pub fn group(&self) -> Option<&str> {
        self.0["group"].as_str()
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.0["count"].as_u64().unwrap_or_default()
    }

    #[must_use]
    pub fn max_ns(&self) -> u64 {
        self.0["max_ns"].as_u64().unwrap_or_default()
    }

    /// `(p50, p90, p99)` in ns; `None` for an empty histogram.
    #[must_use]
    pub fn percentiles(&self) -> Option<(u64, u64, u64)> {
        let p = |k: &str| self.0[k].as_u64();
        Some((p("p50_ns")?, p("p90_ns")?, p("p99_ns")?))
    }

    #[must_use]
    pub fn p50(&self) -> Option<Duration> {
        self.0["p50_ns"].as_u64().map(Duration::from_nanos)
    }

    #[must_use]
    pub fn buckets(&self) -> Vec<HistBucket> {
        self.0["buckets"]
            .as_array()
            .map(|bs| {
                bs.iter()
                    .map(|b| HistBucket {
                        lo_ns: b["lo_ns"].as_u64().unwrap_or_default(),
                        hi_ns: b["hi_ns"].as_u64().unwrap_or_default(),
                        count: b["count"].as_u64().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The exact maximum lies in the highest non-empty bucket. Only for a
    /// report taken with no traffic running: the kernel counts a dwell in its
    /// bucket just before it raises the maximum.
    pub fn assert_max_in_last_bucket(&self) {
        if let Some(last) = self.buckets().last() {
            assert!(
                last.lo_ns <= self.max_ns() && self.max_ns() < last.hi_ns,
                "max_ns {} is not in the highest bucket {last:?}: {self}",
                self.max_ns()
            );
        } else {
            assert_eq!(self.max_ns(), 0, "an empty histogram has no max: {self}");
        }
    }
}

impl fmt::Display for HistLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One `--hist --json` report: its `hist` lines, then its `hist_timewait`
/// line.
#[derive(Clone, Debug)]
pub struct HistReport {
    pub hists: Vec<HistLine>,
    pub timewait: TimewaitLine,
}

impl HistReport {
    /// Split JSON lines into reports (each ends with its `hist_timewait`
    /// line, and its `hist` lines have its `report` and `time`); a
    /// trailing incomplete report is left out. Panics on any line off the
    /// documented schema.
    #[must_use]
    pub fn parse_all(lines: &[String]) -> Vec<Self> {
        let mut out = Vec::new();
        let mut hists = Vec::new();
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("tcptrace printed a line that is not JSON ({e}): {line}")
            });
            match v["type"].as_str() {
                Some("hist") => {
                    let h = HistLine(v);
                    if let Err(why) = h.validate() {
                        panic!("off-schema hist line ({why}): {line}");
                    }
                    hists.push(h);
                }
                Some("hist_timewait") => {
                    let t = TimewaitLine(v);
                    if let Err(why) = t.validate() {
                        panic!("off-schema hist_timewait line ({why}): {line}");
                    }
                    if let Some(h) = hists.iter().find(|h: &&HistLine| {
                        h.0["time"] != t.0["time"] || h.0["report"] != t.0["report"]
                    }) {
                        panic!(
                            "a hist line of another report than its hist_timewait line {line}: {h}"
                        );
                    }
                    out.push(Self {
                        hists: std::mem::take(&mut hists),
                        timewait: t,
                    });
                }
                _ => panic!("a --hist --json line of unknown type: {line}"),
            }
        }
        out
    }

    #[must_use]
    pub fn is_final(&self) -> bool {
        self.timewait.report() == "final"
    }

    /// The one histogram of `state` with no group; panics if there are
    /// several.
    #[must_use]
    pub fn hist(&self, state: &str) -> Option<&HistLine> {
        let found: Vec<&HistLine> = self
            .hists
            .iter()
            .filter(|h| h.state() == state && h.group().is_none())
            .collect();
        assert!(found.len() <= 1, "several {state} histograms:\n{self}");
        found.first().copied()
    }

    /// The count of `state` (0 when it has no histogram: nothing left it).
    #[must_use]
    pub fn count(&self, state: &str) -> u64 {
        self.hist(state).map_or(0, HistLine::count)
    }

    /// The histograms of `state`, by group label.
    #[must_use]
    pub fn groups(&self, state: &str) -> HashMap<String, &HistLine> {
        let mut out = HashMap::new();
        for h in self.hists.iter().filter(|h| h.state() == state) {
            if let Some(g) = h.group() {
                let dup = out.insert(g.to_owned(), h);
                assert!(
                    dup.is_none(),
                    "two {state} histograms for group {g}:\n{self}"
                );
            }
        }
        out
    }
}

impl fmt::Display for HistReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for h in &self.hists {
            let p50 = h.p50().map_or_else(|| "-".to_owned(), |d| format!("{d:?}"));
            writeln!(
                f,
                "  {} {}{}: count {} p50 {p50} max {:?}",
                h.state(),
                h.by().unwrap_or(""),
                h.group().map(|g| format!("={g}")).unwrap_or_default(),
                h.count(),
                Duration::from_nanos(h.max_ns())
            )?;
        }
        write!(f, "  {}", self.timewait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_line(report: &str, state: &str, buckets: &[(u64, u64, u64)], max: u64) -> String {
        let count: u64 = buckets.iter().map(|b| b.2).sum();
        let p = (count > 0).then_some(max);
        serde_json::json!({
            "v": 1, "type": "hist", "report": report, "time": "2026-01-01T00:00:00.000000Z",
            "state": state, "by": null, "group": null, "count": count, "p50_ns": p, "p90_ns": p,
            "p99_ns": p, "max_ns": max, "resolution": "... within 6.25% ...",
            "buckets": buckets.iter().map(|(lo, hi, n)| serde_json::json!(
                {"lo_ns": lo, "hi_ns": hi, "count": n})).collect::<Vec<_>>(),
        })
        .to_string()
    }

    fn timewait_line(report: &str) -> String {
        serde_json::json!({
            "v": 1, "type": "hist_timewait", "report": report,
            "time": "2026-01-01T00:00:00.000000Z",
            "entered": 2, "live_time_wait": 2, "live_fin_wait2_orphans": 0, "expired": 0,
            "killed_early": 0, "overflow": null,
            "predicted_dwell": {"count": 0, "min_ns": null, "max_ns": null},
            "poll_interval_ns": 1_000_000_000u64,
            "namespaces": [{"netns": 4_026_531_840u64, "entered": 2, "live_time_wait": 2,
                "live_fin_wait2_orphans": 0, "expired": 0, "killed_early": 0, "overflow": null}],
        })
        .to_string()
    }

    #[test]
    fn hist_reports_end_with_their_timewait_line() {
        let lines = [
            hist_line("interval", "CLOSE_WAIT", &[(100, 120, 2)], 110),
            hist_line("interval", "TIME_WAIT", &[], 0),
            timewait_line("interval"),
            hist_line("final", "CLOSE_WAIT", &[(100, 120, 2), (200, 240, 1)], 210),
            timewait_line("final"),
            hist_line("final", "SYN_SENT", &[(1, 2, 1)], 1),
        ];
        let reports = HistReport::parse_all(&lines);
        assert_eq!(reports.len(), 2, "the incomplete third one is left out");
        assert_eq!(reports[0].count("CLOSE_WAIT"), 2);
        assert_eq!(reports[0].count("TIME_WAIT"), 0);
        assert!(reports[1].is_final());
        assert_eq!(reports[1].count("CLOSE_WAIT"), 3);
        reports[1].hists[0].assert_max_in_last_bucket();
    }

    #[test]
    #[should_panic(expected = "bucket counts add up to 2, count 3")]
    fn hist_schema_checks_the_bucket_sum() {
        let mut v: Value =
            serde_json::from_str(&hist_line("final", "CLOSE_WAIT", &[(100, 120, 2)], 110)).unwrap();
        v["count"] = 3.into();
        let _ = HistReport::parse_all(&[v.to_string(), timewait_line("final")]);
    }
}
