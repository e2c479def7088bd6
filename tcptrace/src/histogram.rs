//! Dwell histograms in userspace: built from the kernel's log-linear buckets
//! (or fed values directly, for TIME_WAIT), with percentiles and bcc-style
//! ASCII bars by log2 bucket.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;
use tcptrace_common::hist;

use crate::output::human_duration;

/// What a percentile from these buckets is worth, said with every report.
pub const RESOLUTION: &str = "log-linear buckets, 8 per power of two: percentiles are bucket \
     midpoints, within 6.25% of the true value; max is exact. For exact per-socket dwell times use \
     the event stream (tcptrace --json, dwell_ns).";

/// Counts by bucket, plus the exact maximum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hist {
    pub buckets: BTreeMap<u32, u64>,
    pub max_ns: u64,
}

impl Hist {
    /// Record one value (userspace-measured dwells).
    pub fn add(&mut self, v: u64) {
        *self.buckets.entry(hist::slot(v)).or_default() += 1;
        self.max_ns = self.max_ns.max(v);
    }

    /// Add a kernel bucket count.
    pub fn add_bucket(&mut self, slot: u32, n: u64) {
        if slot == hist::MAX_SLOT {
            self.max_ns = self.max_ns.max(n);
        } else {
            *self.buckets.entry(slot).or_default() += n;
        }
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `p`-quantile (0..=1): the midpoint of the bucket holding that rank,
    /// capped at the exact maximum.
    #[must_use]
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within a count"
        )]
        let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (&s, &c) in &self.buckets {
            seen += c;
            if seen >= rank {
                let (lo, hi) = (hist::lower(s), hist::upper(s));
                let mid = lo + (hi - lo) / 2;
                return Some(if self.max_ns > 0 {
                    mid.min(self.max_ns)
                } else {
                    mid
                });
            }
        }
        Some(self.max_ns)
    }

    /// Counts regrouped by power of two: `(lower, upper, count)`, for display.
    #[must_use]
    pub fn log2_rows(&self) -> Vec<(u64, u64, u64)> {
        let mut rows: BTreeMap<u32, u64> = BTreeMap::new();
        for (&s, &c) in &self.buckets {
            let lo = hist::lower(s);
            let k = if lo == 0 { 0 } else { 64 - lo.leading_zeros() };
            *rows.entry(k).or_default() += c;
        }
        let (Some(&first), Some(&last)) = (rows.keys().next(), rows.keys().last()) else {
            return Vec::new();
        };
        (first..=last)
            .map(|k| {
                let lo = if k == 0 { 0 } else { 1u64 << (k - 1) };
                let hi = if k == 0 {
                    1
                } else {
                    1u64.checked_shl(k).unwrap_or(u64::MAX)
                };
                (lo, hi, rows.get(&k).copied().unwrap_or(0))
            })
            .collect()
    }
}

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
    fn percentiles_are_within_the_stated_resolution() {
        let mut h = Hist::default();
        for i in 0..50u64 {
            h.add(200_000_000 + i * 1_000_000); // 200..249 ms
        }
        assert_eq!(h.count(), 50);
        let p50 = h.percentile(0.5).unwrap();
        let true_p50 = 224_000_000f64;
        #[expect(clippy::cast_precision_loss, reason = "test ratio")]
        let err = (p50 as f64 - true_p50).abs() / true_p50;
        assert!(err < 0.0625 * 2.0, "p50 {p50} vs {true_p50}");
        assert_eq!(h.max_ns, 249_000_000);
        assert!(
            h.percentile(0.99).unwrap() <= h.max_ns,
            "capped at the exact max"
        );
        assert_eq!(Hist::default().percentile(0.5), None);
    }

    #[test]
    fn kernel_buckets_and_max_slot() {
        let mut h = Hist::default();
        h.add_bucket(hist::slot(1000), 3);
        h.add_bucket(hist::MAX_SLOT, 1100);
        assert_eq!(h.count(), 3);
        assert_eq!(h.max_ns, 1100);
    }

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
