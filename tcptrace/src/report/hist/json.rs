//! The `--hist` JSON lines: one `hist` line per histogram
//! (`docs/schema/hist.json`), then one `hist_timewait` line
//! (`docs/schema/hist_timewait.json`).

use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;

use super::HistReport;
use crate::{
    model::timewait::lives::Tracker,
    report::{
        histogram::JsonHist,
        json::{Report, VERSION, json_line, report_kind, wall_time},
    },
};

/// The `hist_timewait` line (`docs/schema/hist_timewait.json`).
#[derive(Serialize)]
struct JsonTimewait<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    report: &'static str,
    time: &'a str,
    #[serde(flatten)]
    counts: JsonLives,
    predicted_dwell: JsonPredicted,
    poll_interval_ns: u64,
    namespaces: Vec<JsonNetnsLives>,
}

/// The timewait sockets' counts, of every namespace together or of one.
#[derive(Serialize)]
struct JsonLives {
    entered: u64,
    live_time_wait: u64,
    live_fin_wait2_orphans: u64,
    expired: u64,
    killed_early: u64,
    overflow: Option<u64>,
}

impl JsonLives {
    fn new(t: &Tracker, overflow: Option<u64>) -> Self {
        Self {
            entered: t.entered,
            live_time_wait: t.population_time_wait,
            live_fin_wait2_orphans: t.population_fin_wait2,
            expired: t.expired,
            killed_early: t.killed_early,
            overflow,
        }
    }
}

/// One namespace's share: `netns` is null when records carry no namespace.
#[derive(Serialize)]
struct JsonNetnsLives {
    netns: Option<u32>,
    #[serde(flatten)]
    counts: JsonLives,
}

/// The live TIME_WAIT sockets' predicted dwell (their kernel timers).
#[derive(Serialize)]
struct JsonPredicted {
    count: usize,
    min_ns: Option<u64>,
    max_ns: Option<u64>,
}

impl HistReport<'_> {
    /// One JSON line per histogram, then one `hist_timewait` line for the
    /// timewait sockets.
    pub fn json(&self, buf: &mut BytesMut) -> serde_json::Result<()> {
        let time = wall_time(self.when);
        let report = Report {
            final_report: self.final_report,
            time: &time,
        };
        for ((state, group), h) in self.hists {
            let line = JsonHist::new(report, state.name(), self.by, group.as_deref(), h);
            json_line(buf, &line)?;
        }
        for (state, group, h) in self.timewait_rows() {
            json_line(
                buf,
                &JsonHist::new(report, state, self.by, group.as_deref(), h),
            )?;
        }
        let (count, min, max) = self.predicted();
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let tw = self.timewait;
        json_line(
            buf,
            &JsonTimewait {
                v: VERSION,
                kind: "hist_timewait",
                report: report_kind(self.final_report),
                time: &time,
                counts: JsonLives::new(tw, self.overflow),
                predicted_dwell: JsonPredicted {
                    count,
                    min_ns: min.map(ns),
                    max_ns: max.map(ns),
                },
                poll_interval_ns: ns(self.poll_interval),
                namespaces: (self.namespaces.iter())
                    .map(|n| JsonNetnsLives {
                        netns: n.netns.map(|ns| ns.0),
                        counts: JsonLives::new(n.tracker, n.overflow),
                    })
                    .collect(),
            },
        )
    }
}
