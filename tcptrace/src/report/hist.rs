//! The `--hist` report: every state's dwell histogram, the timewait
//! sockets' own (TIME_WAIT, orphaned FIN_WAIT2), and their census line, as
//! text or as JSON lines.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use bytes::BytesMut;
use tcptrace_common::TcpState;

use crate::{
    model::{
        histogram::{Hist, RESOLUTION},
        timewait::lives::Tracker,
    },
    report::{
        histogram::{JsonHist, render},
        json_line,
        text::escape,
    },
};

/// Histograms by (state, `--by` group).
pub type Hists = BTreeMap<(TcpState, Option<String>), Hist>;

/// One report's figures.
pub struct HistReport<'a> {
    /// RFC 3339 time of the report.
    pub when: &'a str,
    pub final_report: bool,
    /// The `--by` key, when split.
    pub by: Option<&'static str>,
    pub hists: &'a Hists,
    pub timewait: &'a Tracker,
    /// `tcp_max_tw_buckets` overflows since start, when readable.
    pub overflow: Option<u64>,
    /// How often the timewait sockets are polled.
    pub poll_interval: Duration,
}

impl HistReport<'_> {
    /// The range of the live TIME_WAIT sockets' predicted dwell (their
    /// kernel timers), and how many there are.
    fn predicted(&self) -> (usize, Option<Duration>, Option<Duration>) {
        let p = self.timewait.predicted();
        let min = p.iter().map(|p| p.1).min();
        let max = p.iter().map(|p| p.1).max();
        (p.len(), min, max)
    }

    /// One JSON line per histogram, then one for the timewait sockets.
    pub fn json(&self, buf: &mut BytesMut) -> serde_json::Result<()> {
        let tw = self.timewait;
        for ((state, group), h) in self.hists {
            json_line(
                buf,
                &JsonHist::new(state.name(), self.by, group.as_deref(), h),
            )?;
        }
        json_line(buf, &JsonHist::new("TIME_WAIT", None, None, &tw.time_wait))?;
        json_line(
            buf,
            &JsonHist::new("FIN_WAIT2_ORPHAN", None, None, &tw.fin_wait2_orphan),
        )?;
        let (count, min, max) = self.predicted();
        json_line(
            buf,
            &serde_json::json!({
                "type": "timewait",
                "report": if self.final_report { "final" } else { "interval" },
                "time": self.when,
                "entered": tw.entered,
                "live_time_wait": tw.population_time_wait,
                "live_fin_wait2_orphans": tw.population_fin_wait2,
                "expired": tw.expired,
                "killed_early": tw.killed_early,
                "overflow": self.overflow,
                "predicted_dwell_ns": {
                    "count": count,
                    "min": min.map(|d| d.as_nanos()),
                    "max": max.map(|d| d.as_nanos()),
                },
                "poll_interval_ns": self.poll_interval.as_nanos(),
            }),
        )
    }

    /// The report for people.
    #[must_use]
    pub fn text(&self) -> String {
        let tw = self.timewait;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{}Dwell histograms at {}, since start{}",
            if self.final_report { "Final: " } else { "" },
            self.when,
            self.by.map(|b| format!(", by {b}")).unwrap_or_default()
        );
        for ((state, group), h) in self.hists {
            let title = match group {
                Some(g) => format!(
                    "{} [{}={}]",
                    state.name(),
                    self.by.unwrap_or("group"),
                    escape(g)
                ),
                None => state.name().to_owned(),
            };
            t.push_str(&render(&title, h));
        }
        t.push_str(&render(
            "FIN_WAIT2 (orphan, timewait socket)",
            &tw.fin_wait2_orphan,
        ));
        t.push_str(&render("TIME_WAIT (completed)", &tw.time_wait));
        let _ = writeln!(
            t,
            "TIME_WAIT now: {} sockets (+{} orphaned FIN_WAIT2); entered {}, expired {}, killed early {} \
             (port reuse or RST){}",
            tw.population_time_wait,
            tw.population_fin_wait2,
            tw.entered,
            tw.expired,
            tw.killed_early,
            self.overflow
                .map(|o| format!(", tcp_max_tw_buckets overflow {o}"))
                .unwrap_or_default()
        );
        if let (_, Some(a), Some(b)) = self.predicted() {
            let _ = writeln!(
                t,
                "  live TIME_WAIT predicted dwell (kernel timer): {} .. {}",
                humantime::format_duration(a),
                humantime::format_duration(b)
            );
        }
        let _ = writeln!(t, "  {RESOLUTION}\n");
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `--by comm` group is a comm a traced process chose: escaped.
    #[test]
    fn text_escapes_comm_groups() {
        let mut h = Hist::default();
        h.add(5_000);
        let mut hists = Hists::new();
        hists.insert((TcpState::CloseWait, Some("\x1b[2J\nFake: \"\\".into())), h);
        let text = HistReport {
            when: "now",
            final_report: false,
            by: Some("comm"),
            hists: &hists,
            timewait: &Tracker::default(),
            overflow: None,
            poll_interval: Duration::from_secs(1),
        }
        .text();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("Fake")), "{text}");
        assert!(
            text.contains("CLOSE_WAIT [comm=\\x1b[2J\\nFake: \"\\\\]: count 1"),
            "{text}"
        );
    }
}
