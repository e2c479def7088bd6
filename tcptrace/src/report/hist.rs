//! The `--hist` report: every state's dwell histogram, the timewait
//! sockets' own (TIME_WAIT, orphaned FIN_WAIT2; per network namespace when
//! split by it), and their census line with each namespace's share, as
//! text or as JSON lines.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use tcptrace_common::TcpState;

use crate::{
    model::{
        histogram::{Hist, RESOLUTION},
        netns::Netns,
        timewait::lives::Tracker,
    },
    report::{
        histogram::render,
        text::{escape, human_duration, report_time},
    },
};

mod json;

/// Histograms by (state, `--by` group).
pub type Hists = BTreeMap<(TcpState, Option<String>), Hist>;

/// One namespace's timewait sockets in a report.
pub struct NetnsLives<'a> {
    /// None when namespaces are not followed.
    pub netns: Option<Netns>,
    /// tcptrace's own namespace.
    pub own: bool,
    pub tracker: &'a Tracker,
    /// `tcp_max_tw_buckets` overflows since it was first seen, when
    /// readable.
    pub overflow: Option<u64>,
}

/// One report's figures.
pub struct HistReport<'a> {
    /// When the report is made.
    pub when: SystemTime,
    pub final_report: bool,
    /// The `--by` key, when split.
    pub by: Option<&'static str>,
    pub hists: &'a Hists,
    /// The timewait sockets of every namespace together, since start.
    pub timewait: &'a Tracker,
    /// Each namespace with anything to say, by inode.
    pub namespaces: &'a [NetnsLives<'a>],
    /// The TIME_WAIT histograms are split by namespace, as the kernel's
    /// are (`--by netns`, `--by container`): one per namespace shown,
    /// labelled like the kernel's groups, by inode.
    pub split: bool,
    /// `tcp_max_tw_buckets` overflows since start, over the namespaces
    /// shown, when readable.
    pub overflow: Option<u64>,
    /// How often the timewait sockets are polled.
    pub poll_interval: Duration,
}

/// `(title, group, histogram)` for the timewait histograms.
type TimewaitRow<'a> = (&'static str, Option<String>, &'a Hist);

impl HistReport<'_> {
    /// The range of the live TIME_WAIT sockets' predicted dwell (their
    /// kernel timers), and how many there are.
    pub(super) fn predicted(&self) -> (usize, Option<Duration>, Option<Duration>) {
        let p: Vec<Duration> = (self.namespaces.iter())
            .flat_map(|n| n.tracker.predicted())
            .map(|p| p.1)
            .collect();
        (p.len(), p.iter().min().copied(), p.iter().max().copied())
    }

    /// The TIME_WAIT and orphan FIN_WAIT2 histograms: one pair for every
    /// namespace together, or one per namespace when split.
    pub(super) fn timewait_rows(&self) -> Vec<TimewaitRow<'_>> {
        fn pair(t: &Tracker, g: Option<String>) -> [TimewaitRow<'_>; 2] {
            [
                ("FIN_WAIT2_ORPHAN", g.clone(), &t.fin_wait2_orphan),
                ("TIME_WAIT", g, &t.time_wait),
            ]
        }
        if !self.split {
            return pair(self.timewait, None).into();
        }
        let mut rows: Vec<TimewaitRow<'_>> = Vec::new();
        for n in self.namespaces {
            rows.extend(pair(n.tracker, n.netns.map(|ns| ns.to_string())));
        }
        rows
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
            report_time(self.when),
            self.by.map(|b| format!(", by {b}")).unwrap_or_default()
        );
        let title = |state: &str, group: Option<&str>| match group {
            Some(g) => format!("{state} [{}={}]", self.by.unwrap_or("group"), escape(g)),
            None => state.to_owned(),
        };
        for ((state, group), h) in self.hists {
            t.push_str(&render(&title(state.name(), group.as_deref()), h));
        }
        for (state, group, h) in self.timewait_rows() {
            let state = if state == "TIME_WAIT" {
                "TIME_WAIT (completed)"
            } else {
                "FIN_WAIT2 (orphan, timewait socket)"
            };
            t.push_str(&render(&title(state, group.as_deref()), h));
        }
        let overflow = |o: Option<u64>| {
            o.map(|o| format!(", tcp_max_tw_buckets overflow {o}"))
                .unwrap_or_default()
        };
        let _ = writeln!(
            t,
            "TIME_WAIT now: {} sockets (+{} orphaned FIN_WAIT2); entered {}, expired {}, killed early {} \
             (port reuse or RST){}",
            tw.population_time_wait,
            tw.population_fin_wait2,
            tw.entered,
            tw.expired,
            tw.killed_early,
            overflow(self.overflow)
        );
        if self.namespaces.iter().any(|n| !n.own && n.netns.is_some()) {
            for n in self.namespaces {
                let Some(ns) = n.netns else { continue };
                let n_tw = n.tracker;
                let _ = writeln!(
                    t,
                    "  netns {ns}{}: {} TIME_WAIT (+{} orphaned FIN_WAIT2); entered {}, expired {}, \
                     killed early {}{}",
                    if n.own { " (tcptrace's)" } else { "" },
                    n_tw.population_time_wait,
                    n_tw.population_fin_wait2,
                    n_tw.entered,
                    n_tw.expired,
                    n_tw.killed_early,
                    overflow(n.overflow)
                );
            }
        }
        if let (_, Some(a), Some(b)) = self.predicted() {
            let _ = writeln!(
                t,
                "  live TIME_WAIT predicted dwell (kernel timer): {} .. {}",
                human_duration(a),
                human_duration(b)
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
            when: SystemTime::UNIX_EPOCH,
            final_report: false,
            by: Some("comm"),
            hists: &hists,
            timewait: &Tracker::default(),
            namespaces: &[],
            split: false,
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

    /// Two namespaces' timewait sockets: unsplit, one TIME_WAIT line for
    /// both; split (`--by netns`), one per namespace labelled by inode. The
    /// timewait line has the totals and each namespace's share either way.
    #[test]
    fn timewait_histograms_follow_the_namespace_split() {
        let mut own = Tracker::default();
        own.time_wait.add(60_000_000_000);
        own.entered = 1;
        let mut other = Tracker::default();
        other.time_wait.add(30_000_000_000);
        other.time_wait.add(60_000_000_000);
        (other.entered, other.population_time_wait) = (3, 1);
        let namespaces = [
            NetnsLives {
                netns: Some(Netns(4_026_531_840)),
                own: true,
                tracker: &own,
                overflow: Some(0),
            },
            NetnsLives {
                netns: Some(Netns(4_026_532_001)),
                own: false,
                tracker: &other,
                overflow: Some(5),
            },
        ];
        let mut totals = Tracker::default();
        totals.absorb(&own);
        totals.absorb(&other);
        let hists = Hists::new();
        let report = |split: bool, by: Option<&'static str>| HistReport {
            when: SystemTime::UNIX_EPOCH,
            final_report: false,
            by,
            hists: &hists,
            timewait: &totals,
            namespaces: &namespaces,
            split,
            overflow: Some(5),
            poll_interval: Duration::from_secs(1),
        };
        let lines = |r: HistReport<'_>| -> Vec<serde_json::Value> {
            let mut buf = bytes::BytesMut::new();
            r.json(&mut buf).unwrap();
            String::from_utf8(buf.to_vec())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let whole = lines(report(false, None));
        let tw: Vec<_> = whole.iter().filter(|v| v["state"] == "TIME_WAIT").collect();
        assert_eq!(tw.len(), 1, "{whole:?}");
        assert_eq!(tw[0]["count"], 3);
        assert!(
            tw[0]["group"].is_null() && tw[0]["by"].is_null(),
            "{whole:?}"
        );
        let line = whole.last().unwrap();
        assert_eq!(line["type"], "hist_timewait");
        assert!(line.get("netns").is_none(), "the totals name no namespace");
        assert!(
            whole
                .iter()
                .all(|v| v["v"] == 1 && v["time"] == whole[0]["time"]),
            "{whole:?}"
        );
        assert_eq!(
            (line["entered"].as_u64(), line["overflow"].as_u64()),
            (Some(4), Some(5))
        );
        assert_eq!(line["namespaces"][1]["netns"], 4_026_532_001u64);
        assert_eq!(line["namespaces"][1]["entered"], 3);
        assert_eq!(line["namespaces"][1]["live_time_wait"], 1);
        assert_eq!(line["namespaces"][1]["overflow"], 5);

        let split = lines(report(true, Some("netns")));
        let tw: Vec<_> = split.iter().filter(|v| v["state"] == "TIME_WAIT").collect();
        assert_eq!(tw.len(), 2, "{split:?}");
        assert_eq!(
            (tw[1]["by"].as_str(), tw[1]["group"].as_str()),
            (Some("netns"), Some("4026532001"))
        );
        assert_eq!(tw[1]["count"], 2);
        assert_eq!(tw[0]["count"], 1);

        let text = report(true, Some("netns")).text();
        assert!(
            text.contains("TIME_WAIT (completed) [netns=4026532001]: count 2"),
            "{text}"
        );
        assert!(
            text.contains("TIME_WAIT now: 1 sockets (+0 orphaned FIN_WAIT2); entered 4"),
            "{text}"
        );
        assert!(
            text.contains("  netns 4026532001: 1 TIME_WAIT (+0 orphaned FIN_WAIT2); entered 3, expired 0, killed early 0, tcp_max_tw_buckets overflow 5"),
            "{text}"
        );
        assert!(
            text.contains("  netns 4026531840 (tcptrace's): 0 TIME_WAIT"),
            "{text}"
        );
    }
}
