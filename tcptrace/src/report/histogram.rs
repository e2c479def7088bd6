//! Histograms for people and programs: bcc-style ASCII bars by log2 bucket,
//! and one JSON object per histogram.

use std::{fmt::Write as _, time::Duration};

use serde::Serialize;
use tcptrace_common::hist;

use crate::{
    model::histogram::{Hist, RESOLUTION},
    report::text::human_duration,
};

/// JSON for one histogram.
#[derive(Serialize)]
pub struct JsonHist<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
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
    pub fn new(state: &'a str, by: Option<&'a str>, group: Option<&'a str>, h: &Hist) -> Self {
        Self {
            kind: "hist",
            state,
            by,
            group,
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
        let v = serde_json::to_value(JsonHist::new("SYN_SENT", None, None, &h)).unwrap();
        for k in [
            "state",
            "count",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "max_ns",
            "buckets",
            "resolution",
        ] {
            assert!(v.get(k).is_some(), "{k}: {v}");
        }
        assert_eq!(v["count"], 1);
        assert_eq!(v["max_ns"], 5_000);
    }
}
