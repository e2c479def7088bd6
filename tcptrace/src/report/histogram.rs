//! Histograms for people and programs: bcc-style ASCII bars by log2 bucket,
//! and one JSON object per histogram.

use std::{fmt::Write as _, time::Duration};

use serde::Serialize;
use tcptrace_common::hist;

use crate::{
    model::histogram::{Hist, RESOLUTION},
    report::{
        json::{Report, VERSION},
        text::human_duration,
    },
};

/// JSON for one histogram (`docs/schema/hist.json`).
#[derive(Serialize)]
pub struct JsonHist<'a> {
    pub v: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `"interval"` or `"final"`.
    pub report: &'static str,
    /// The report's time (RFC 3339, microseconds).
    pub time: &'a str,
    pub state: &'a str,
    /// The `--by` key and this histogram's group; null when not split.
    pub by: Option<&'a str>,
    pub group: Option<&'a str>,
    pub count: u64,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: u64,
    /// `{lo_ns, hi_ns, count}` per kernel bucket, non-empty ones only.
    pub buckets: Vec<JsonBucket>,
    pub resolution: &'static str,
}

#[derive(Serialize)]
pub struct JsonBucket {
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

impl<'a> JsonHist<'a> {
    #[must_use]
    pub fn new(
        report: Report<'a>,
        state: &'a str,
        by: Option<&'a str>,
        group: Option<&'a str>,
        h: &Hist,
    ) -> Self {
        Self {
            v: VERSION,
            kind: "hist",
            report: report.kind(),
            time: report.time,
            state,
            by: group.and(by),
            group: by.and(group),
            count: h.count(),
            p50_ns: h.percentile(0.50),
            p90_ns: h.percentile(0.90),
            p99_ns: h.percentile(0.99),
            max_ns: h.max_ns,
            buckets: h
                .buckets
                .iter()
                .map(|(&s, &c)| JsonBucket {
                    lo_ns: hist::lower(s),
                    hi_ns: hist::upper(s),
                    count: c,
                })
                .collect(),
            resolution: RESOLUTION,
        }
    }
}

fn dur(ns: u64) -> String {
    human_duration(Duration::from_nanos(ns))
}

/// bcc-style text: a header with count and percentiles, then one bar per
/// power-of-two bucket.
#[must_use]
pub fn render(title: &str, h: &Hist) -> String {
    let mut out = String::new();
    let p = |q| h.percentile(q).map_or_else(|| "-".to_owned(), dur);
    let _ = writeln!(
        out,
        "{title}: count {}  p50 {}  p90 {}  p99 {}  max {}",
        h.count(),
        p(0.5),
        p(0.9),
        p(0.99),
        dur(h.max_ns)
    );
    let rows = h.log2_rows();
    let peak = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1);
    let _ = writeln!(out, "  {:>21} : {:<8} distribution", "dwell", "count");
    for (lo, hi, c) in rows {
        #[expect(clippy::cast_possible_truncation, reason = "at most 40")]
        let width = ((c * 40).div_ceil(peak)) as usize;
        let _ = writeln!(
            out,
            "  {:>9} -> {:<9} : {c:<8} |{:<40}|",
            dur(lo),
            dur(hi),
            "*".repeat(if c == 0 { 0 } else { width })
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_rows_cover_the_range_with_empty_rows_between() {
        let mut h = Hist::default();
        h.add(3);
        h.add(1000);
        let rows = h.log2_rows();
        assert_eq!(rows.first().unwrap().0, 2);
        assert_eq!(rows.last().unwrap(), &(512, 1024, 1));
        assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), 2);
        let text = render("CLOSE_WAIT", &h);
        assert!(text.starts_with("CLOSE_WAIT: count 2"), "{text}");
        assert!(text.contains('*'), "{text}");
    }

    #[test]
    fn json_has_the_documented_keys() {
        let mut h = Hist::default();
        h.add(5_000);
        let report = Report {
            final_report: true,
            time: "2026-01-01T00:00:00.000000Z",
        };
        let v = serde_json::to_value(JsonHist::new(report, "SYN_SENT", None, None, &h)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
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
        assert_eq!(keys, want, "{v}");
        assert_eq!(
            (v["v"].as_u64(), v["report"].as_str()),
            (Some(1), Some("final"))
        );
        assert!(v["by"].is_null() && v["group"].is_null(), "{v}");
        assert_eq!(v["count"], 1);
        assert_eq!(v["max_ns"], 5_000);
        let split = JsonHist::new(report, "SYN_SENT", Some("comm"), Some("curl"), &h);
        let v = serde_json::to_value(split).unwrap();
        assert_eq!(
            (v["by"].as_str(), v["group"].as_str()),
            (Some("comm"), Some("curl"))
        );
    }
}
