//! `--baseline REV`'s comparison: for each mode that both builds ran and each
//! program that both report, this tree's kernel ns/call (under load, from
//! the kernel's exact totals) against the baseline's. Rows of one mode run
//! back to back in each round, so the ratio is taken per round and its
//! median kept: what drifts between rounds cancels out.

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::{Value, json};

use super::{
    baseline::Baseline,
    configs::{Binary, Config, Mode},
    median,
};

/// How far this tree's figure may be from the baseline's, either way, as a
/// fraction of the baseline's, and still count as the same.
pub const TOLERANCE: f64 = 0.05;

/// One program of one mode in both builds.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub mode: Mode,
    pub program: String,
    /// Median kernel ns/call over rounds: this tree's build, the baseline's.
    pub new: f64,
    pub baseline: f64,
    /// The median over rounds of this tree's ns/call over the baseline's in
    /// the same round.
    pub ratio: f64,
    /// The program's size after the verifier, in bytes, in this tree's build
    /// and the baseline's, when both are known.
    pub bytes: Option<(u32, u32)>,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    pub fn within(&self) -> bool {
        (self.ratio - 1.0).abs() <= TOLERANCE + 1e-9
    }
}

/// Each round's ns/call per program, for one configuration.
pub type Rounds = Vec<BTreeMap<String, f64>>;

/// The rows, from each configuration's ns/call per program and round: every
/// baseline row against this tree's row of the same mode, in table order,
/// programs by name. A program either build lacks (or that never ran) is
/// left out, and so is a round where either side has no figure.
pub fn rows(rounds: &[(&Config, Rounds)]) -> Vec<Row> {
    let current = |mode: Mode| {
        rounds.iter().find_map(|(c, m)| match c {
            Config::Tcptrace {
                mode: m0,
                binary: Binary::Current(_),
            } if *m0 == mode => Some(m),
            _ => None,
        })
    };
    let mut out = Vec::new();
    for (cfg, old) in rounds {
        let Config::Tcptrace {
            mode,
            binary: Binary::Baseline { .. },
        } = cfg
        else {
            continue;
        };
        let Some(new) = current(*mode) else {
            continue;
        };
        let programs: std::collections::BTreeSet<&String> =
            old.iter().flat_map(BTreeMap::keys).collect();
        for program in programs {
            let pairs: Vec<(f64, f64)> = new
                .iter()
                .zip(old)
                .filter_map(|(n, o)| Some((*n.get(program)?, *o.get(program)?)))
                .filter(|&(_, o)| o > 0.0)
                .collect();
            if pairs.is_empty() {
                continue;
            }
            out.push(Row {
                mode: *mode,
                program: program.clone(),
                new: median(pairs.iter().map(|p| p.0).collect()),
                baseline: median(pairs.iter().map(|p| p.1).collect()),
                ratio: median(pairs.iter().map(|p| p.0 / p.1).collect()),
                bytes: None,
            });
        }
    }
    out
}

/// `rows` with each program's size after the verifier in both builds, from
/// each configuration's sizes by program name.
pub fn with_sizes(mut rows: Vec<Row>, sizes: &[(&Config, BTreeMap<String, u32>)]) -> Vec<Row> {
    let of = |mode: Mode, baseline: bool, program: &str| {
        sizes.iter().find_map(|(c, s)| match c {
            Config::Tcptrace { mode: m, binary }
                if *m == mode && matches!(binary, Binary::Baseline { .. }) == baseline =>
            {
                s.get(program).copied().filter(|&b| b > 0)
            }
            _ => None,
        })
    };
    for r in &mut rows {
        r.bytes = of(r.mode, false, &r.program).zip(of(r.mode, true, &r.program));
    }
    rows
}

/// The line above the table: what is compared with what.
pub fn heading(b: &Baseline, rounds: u32) -> String {
    format!(
        "Baseline `{}` ({}) against this tree ({}), same run: kernel ns per call of each \
         program under both loads (churn, then keep-alive; the kernel's run-time totals, \
         not rounded), medians of {rounds} rounds; the ratio is the median of each \
         round's ratio (the two rows of a mode run back to back).",
        b.rev, b.short, b.tree
    )
}

/// The markdown table under `heading`, and a count of the verdicts.
pub fn markdown(heading: &str, rows: &[Row]) -> String {
    let pct = TOLERANCE * 100.0;
    let mut md = format!("{heading}\n\n");
    if rows.is_empty() {
        md.push_str("No program reported by both builds.\n");
        return md;
    }
    let _ = writeln!(
        md,
        "| mode | program | this tree, ns/call | baseline, ns/call | this tree / baseline | within {pct:.0}% | bytes after the verifier, this tree / baseline |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|---|");
    for r in rows {
        let bytes = r.bytes.map_or_else(
            || "-".to_owned(),
            |(n, b)| {
                if n == b {
                    format!("{n} (same)")
                } else {
                    format!("{n} / {b}")
                }
            },
        );
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.3} | {} | {bytes} |",
            r.mode.label(),
            r.program,
            r.new,
            r.baseline,
            r.ratio(),
            if r.within() { "yes" } else { "**no**" }
        );
    }
    let within = rows.iter().filter(|r| r.within()).count();
    let _ = writeln!(
        md,
        "\n{within} of {} within {pct:.0}% of the baseline.",
        rows.len()
    );
    md
}

/// The JSON under `"baseline"` in docs/benchmarks.json.
pub fn json(b: &Baseline, rounds: u32, rows: &[Row]) -> Value {
    let four_places = |x: f64| (x * 1e4).round() / 1e4;
    json!({
        "rev": b.rev,
        "commit": b.commit,
        "tree": b.tree,
        "rounds": rounds,
        "tolerance": TOLERANCE,
        "programs": rows.iter().map(|r| json!({
            "mode": r.mode.label(),
            "program": r.program,
            "ns_per_call": r.new,
            "baseline_ns_per_call": r.baseline,
            "ratio": four_places(r.ratio()),
            "within": r.within(),
            "bytes": r.bytes.map(|b| b.0),
            "baseline_bytes": r.bytes.map(|b| b.1),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::bench::configs::lineup;

    fn costs(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|&(k, v)| ((*k).to_owned(), v)).collect()
    }

    fn baseline() -> Baseline {
        Baseline {
            rev: "9536a8a".to_owned(),
            commit: "9536a8a0000000000000000000000000000000000".to_owned(),
            short: "9536a8a".to_owned(),
            tree: "19107da-dirty".to_owned(),
            binary: "/old/tcptrace".into(),
        }
    }

    /// One round for every row of a lineup with a baseline: this tree's and
    /// the baseline's by mode, nothing for the others.
    fn medians<'a>(
        configs: &'a [Config],
        new: &[(Mode, BTreeMap<String, f64>)],
        old: &[(Mode, BTreeMap<String, f64>)],
    ) -> Vec<(&'a Config, Rounds)> {
        configs
            .iter()
            .map(|c| {
                let m = match c {
                    Config::Tcptrace { mode, binary } => {
                        let from = if matches!(binary, Binary::Baseline { .. }) {
                            old
                        } else {
                            new
                        };
                        from.iter()
                            .find(|(m, _)| m == mode)
                            .map(|(_, m)| m.clone())
                            .unwrap_or_default()
                    }
                    _ => costs(&[("inet_sock_set_state", 31.0)]),
                };
                (c, vec![m])
            })
            .collect()
    }

    #[test]
    fn pairs_modes_and_programs_with_ratios_and_verdicts() {
        let configs = lineup(
            Path::new("/new/tcptrace"),
            Some(("9536a8a", Path::new("/old/tcptrace"))),
        );
        let new = [
            (
                Mode::Stream,
                costs(&[("inet_sock_set_state", 240.0), ("sock_recv_length", 118.0)]),
            ),
            (
                Mode::Hist,
                costs(&[("inet_sock_set_state", 105.0), ("tcp_destroy_sock", 40.0)]),
            ),
            (Mode::Leaks, costs(&[("inet_sock_set_state", 94.0)])),
            (Mode::Combined, costs(&[("inet_sock_set_state", 300.0)])),
        ];
        let old = [
            (
                Mode::Stream,
                costs(&[("inet_sock_set_state", 236.0), ("sock_recv_length", 118.0)]),
            ),
            // 105 against 100 is 5% exactly: within; 40 against 38 is 5.3%.
            (
                Mode::Hist,
                costs(&[("inet_sock_set_state", 100.0), ("tcp_destroy_sock", 38.0)]),
            ),
            // Only in the baseline's summary, or never ran: no row.
            (
                Mode::Leaks,
                costs(&[("inet_sock_set_state", 100.0), ("sock_send_length", 523.0)]),
            ),
            (Mode::Timewait, costs(&[("inet_sock_set_state", 0.0)])),
        ];
        let rows = rows(&medians(&configs, &new, &old));
        let got: Vec<(Mode, &str, f64, f64, String, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.mode,
                    r.program.as_str(),
                    r.new,
                    r.baseline,
                    format!("{:.3}", r.ratio()),
                    r.within(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    Mode::Stream,
                    "inet_sock_set_state",
                    240.0,
                    236.0,
                    "1.017".to_owned(),
                    true
                ),
                (
                    Mode::Stream,
                    "sock_recv_length",
                    118.0,
                    118.0,
                    "1.000".to_owned(),
                    true
                ),
                (
                    Mode::Hist,
                    "inet_sock_set_state",
                    105.0,
                    100.0,
                    "1.050".to_owned(),
                    true
                ),
                (
                    Mode::Hist,
                    "tcp_destroy_sock",
                    40.0,
                    38.0,
                    "1.053".to_owned(),
                    false
                ),
                (
                    Mode::Leaks,
                    "inet_sock_set_state",
                    94.0,
                    100.0,
                    "0.940".to_owned(),
                    false
                ),
            ]
        );
    }

    /// Drift between rounds cancels: each round's ratio is 1 although the
    /// rounds' figures differ by half, and a round with a figure on one side
    /// only is left out.
    #[test]
    fn ratios_are_taken_round_by_round() {
        let configs = lineup(
            Path::new("/new/tcptrace"),
            Some(("9536a8a", Path::new("/old/tcptrace"))),
        );
        let p = |ns: f64| costs(&[("inet_sock_set_state", ns)]);
        let rounds: Vec<(&Config, Rounds)> = configs
            .iter()
            .map(|c| {
                let r = match c {
                    Config::Tcptrace {
                        mode: Mode::Hist, ..
                    } => vec![p(100.0), p(150.0), p(200.0), BTreeMap::new()],
                    _ => Vec::new(),
                };
                (c, r)
            })
            .collect();
        // Baseline: 100, 150, 200 and a fourth round with a figure; this
        // tree: the same, and none in the fourth.
        let mut rounds = rounds;
        for (c, r) in &mut rounds {
            if matches!(
                c,
                Config::Tcptrace {
                    mode: Mode::Hist,
                    binary: Binary::Baseline { .. }
                }
            ) {
                r[3] = p(50.0);
            }
        }
        let rows = rows(&rounds);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!((rows[0].ratio() - 1.0).abs() < 1e-12, "{rows:?}");
        assert!((rows[0].new - 150.0).abs() < 1e-12);
        assert!(rows[0].within());
    }

    /// Sizes are joined by mode and build, and a missing one leaves none.
    #[test]
    fn sizes_join_by_mode_and_build() {
        let configs = lineup(
            Path::new("/new/tcptrace"),
            Some(("9536a8a", Path::new("/old/tcptrace"))),
        );
        let sizes: Vec<(&Config, BTreeMap<String, u32>)> = configs
            .iter()
            .map(|c| {
                let s = match c {
                    Config::Tcptrace {
                        mode: Mode::Hist,
                        binary,
                    } => {
                        let n = if matches!(binary, Binary::Baseline { .. }) {
                            4104
                        } else {
                            4096
                        };
                        [("inet_sock_set_state".to_owned(), n)]
                            .into_iter()
                            .collect()
                    }
                    _ => BTreeMap::new(),
                };
                (c, s)
            })
            .collect();
        let row = |mode, program: &str| Row {
            mode,
            program: program.to_owned(),
            new: 1.0,
            baseline: 1.0,
            ratio: 1.0,
            bytes: None,
        };
        let rows = with_sizes(
            vec![
                row(Mode::Hist, "inet_sock_set_state"),
                row(Mode::Stream, "inet_sock_set_state"),
            ],
            &sizes,
        );
        assert_eq!(rows[0].bytes, Some((4096, 4104)));
        assert_eq!(rows[1].bytes, None);
    }

    #[test]
    fn verdict_is_symmetric_and_inclusive() {
        let row = |new: f64, baseline: f64| Row {
            mode: Mode::Hist,
            program: "p".to_owned(),
            new,
            baseline,
            ratio: new / baseline,
            bytes: None,
        };
        for (new, within) in [(95.0, true), (105.0, true), (94.9, false), (105.1, false)] {
            assert_eq!(row(new, 100.0).within(), within, "{new}");
        }
    }

    #[test]
    fn table_and_json_name_the_baseline() {
        let rows = vec![
            Row {
                mode: Mode::Hist,
                program: "inet_sock_set_state".to_owned(),
                new: 123.0,
                baseline: 120.0,
                ratio: 123.0 / 120.0,
                bytes: Some((4096, 4096)),
            },
            Row {
                mode: Mode::Stream,
                program: "inet_sock_set_state".to_owned(),
                new: 260.0,
                baseline: 236.0,
                ratio: 260.0 / 236.0,
                bytes: Some((9000, 8992)),
            },
        ];
        let b = baseline();
        let md = markdown(&heading(&b, 3), &rows);
        assert_eq!(
            md,
            "Baseline `9536a8a` (9536a8a) against this tree (19107da-dirty), same run: kernel ns \
             per call of each program under both loads (churn, then keep-alive; the kernel's \
             run-time totals, not rounded), medians of 3 rounds; the ratio is the median of each \
             round's ratio (the two rows of a mode run back to back).\n\n\
             | mode | program | this tree, ns/call | baseline, ns/call | this tree / baseline | within 5% | bytes after the verifier, this tree / baseline |\n\
             |---|---|---:|---:|---:|---|---|\n\
             | tcptrace --hist | inet_sock_set_state | 123 | 120 | 1.025 | yes | 4096 (same) |\n\
             | tcptrace --json > /dev/null | inet_sock_set_state | 260 | 236 | 1.102 | **no** | 9000 / 8992 |\n\
             \n1 of 2 within 5% of the baseline.\n"
        );
        assert!(markdown("h", &[]).contains("No program reported by both builds."));

        let j = json(&b, 3, &rows);
        assert_eq!(j["rev"], "9536a8a");
        assert_eq!(j["commit"], b.commit.as_str());
        assert_eq!(j["rounds"], 3);
        assert_eq!(j["programs"][0]["mode"], "tcptrace --hist");
        assert_eq!(j["programs"][0]["ratio"], 1.025);
        assert_eq!(j["programs"][0]["within"], true);
        assert_eq!(j["programs"][1]["baseline_ns_per_call"], 236.0);
        assert_eq!(j["programs"][1]["within"], false);
    }
}
