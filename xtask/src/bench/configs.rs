//! The throughput stage's configurations: what each row runs (no tracer, a
//! tcptrace mode from a given binary, a bpftrace script), its name in the
//! tables, and the order in which a round runs them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// bpftrace's tcpstates-like per-transition printf.
const BPFTRACE_STATES: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  printf("%d %s %d %d %d -> %d\n", pid, comm, args->sport, args->dport, args->oldstate, args->newstate);
}"#;

/// bpftrace's per-state dwell histogram, the equivalent of `tcptrace --hist`.
const BPFTRACE_HIST: &str = r"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  $sk = (uint64)args->skaddr;
  $t = @start[$sk];
  if ($t != 0) { @dwell[args->oldstate] = hist(nsecs - $t); }
  if (args->newstate == 7) { delete(@start[$sk]); } else { @start[$sk] = nsecs; }
}";

/// Calibration: what a program that does nothing costs on this machine in
/// the kernel's own accounting (`bpf_stats_enabled` times every run with
/// two clock reads), on both hot tracepoints: the floor under every figure.
const BPFTRACE_EMPTY: &str =
    "tracepoint:sock:inet_sock_set_state { } tracepoint:sock:sock_recv_length { }";

/// Calibration: the floor plus one `bpf_ktime_get_ns()`, which every
/// dwell measurement needs once per transition.
const BPFTRACE_CLOCK: &str = "tracepoint:sock:inet_sock_set_state { $t = nsecs; }";

/// A tcptrace mode, as the bench runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The stream, to /dev/null.
    Stream,
    Hist,
    Leaks,
    Timewait,
    /// Every analysis at once: `--closewait-leaks --hist --timewait`.
    Combined,
    /// `--agent`: the three analyses, nothing on stdout, `/metrics` served
    /// (on a port of the bench's own, [`AGENT_METRICS`]).
    Agent,
}

/// Where the agent row serves `/metrics`: not the default 9464, which a
/// tracer of someone else's may hold on a shared machine.
pub const AGENT_METRICS: &str = "127.0.0.1:19464";

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 6] = [
        Mode::Stream,
        Mode::Hist,
        Mode::Leaks,
        Mode::Timewait,
        Mode::Combined,
        Mode::Agent,
    ];

    /// The modes a baseline build runs: those a tcptrace from before the
    /// combined analyses has (it refuses the combination).
    pub const BASELINE: [Mode; 4] = [Mode::Stream, Mode::Hist, Mode::Leaks, Mode::Timewait];

    /// The row name (quoted in docs/benchmarks.md: keep them stable).
    pub fn label(self) -> &'static str {
        match self {
            Mode::Stream => "tcptrace --json > /dev/null",
            Mode::Hist => "tcptrace --hist",
            Mode::Leaks => "tcptrace --closewait-leaks",
            Mode::Timewait => "tcptrace --timewait",
            Mode::Combined => "tcptrace --closewait-leaks --hist --timewait",
            Mode::Agent => "tcptrace --agent",
        }
    }

    /// tcptrace's arguments; the reporting modes report once an hour, i.e.
    /// not during a run.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Stream => &["--json"],
            Mode::Hist => &["--hist", "-i", "1h"],
            Mode::Leaks => &["--closewait-leaks", "-i", "1h"],
            Mode::Timewait => &["--timewait", "-i", "1h"],
            Mode::Combined => &["--closewait-leaks", "--hist", "--timewait", "-i", "1h"],
            Mode::Agent => &["--agent", "--prometheus", AGENT_METRICS, "-i", "1h"],
        }
    }
}

/// A bpftrace script, for the peer comparison and the calibration rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    States,
    Hist,
    Empty,
    Clock,
}

impl Script {
    const ALL: [Script; 4] = [Script::States, Script::Hist, Script::Empty, Script::Clock];

    fn label(self) -> &'static str {
        match self {
            Script::States => "bpftrace tcpstates-like printf",
            Script::Hist => "bpftrace dwell hist",
            Script::Empty => "calibration: bpftrace, empty programs",
            Script::Clock => "calibration: bpftrace, one timestamp",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Script::States => BPFTRACE_STATES,
            Script::Hist => BPFTRACE_HIST,
            Script::Empty => BPFTRACE_EMPTY,
            Script::Clock => BPFTRACE_CLOCK,
        }
    }
}

/// The tcptrace binary a row runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binary {
    /// This tree's release build.
    Current(PathBuf),
    /// The build of `--baseline REV`; its rows are named after `rev`.
    Baseline { rev: String, path: PathBuf },
}

impl Binary {
    fn path(&self) -> &Path {
        match self {
            Binary::Current(path) | Binary::Baseline { path, .. } => path,
        }
    }
}

/// One row of the throughput table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Config {
    NoTracer,
    Tcptrace { mode: Mode, binary: Binary },
    Bpftrace(Script),
}

impl Config {
    /// The row name: `tcptrace --hist`, `baseline REV: tcptrace --hist`, ...
    pub fn name(&self) -> String {
        match self {
            Config::NoTracer => "no tracer".to_owned(),
            Config::Tcptrace {
                mode,
                binary: Binary::Current(_),
            } => mode.label().to_owned(),
            Config::Tcptrace {
                mode,
                binary: Binary::Baseline { rev, .. },
            } => format!("baseline {rev}: {}", mode.label()),
            Config::Bpftrace(s) => s.label().to_owned(),
        }
    }

    /// Whether the tracer prints tcptrace's `tcptrace: tracing` once
    /// attached (bpftrace is given a few seconds instead).
    pub fn says_ready(&self) -> bool {
        matches!(self, Config::Tcptrace { .. })
    }

    /// The tracer's command line; `None` for no tracer.
    pub fn command(&self) -> Option<Command> {
        match self {
            Config::NoTracer => None,
            Config::Tcptrace { mode, binary } => {
                let mut c = Command::new(binary.path());
                c.args(mode.args());
                Some(c)
            }
            Config::Bpftrace(s) => {
                let mut c = Command::new("bpftrace");
                c.arg("-e").arg(s.text());
                Some(c)
            }
        }
    }
}

/// Every configuration of a round, in table order: no tracer, this tree's
/// tcptrace in each mode, each followed by the baseline's (when given) in
/// the same mode, then bpftrace.
pub fn lineup(current: &Path, baseline: Option<(&str, &Path)>) -> Vec<Config> {
    let current = Binary::Current(current.to_owned());
    let baseline = baseline.map(|(rev, path)| Binary::Baseline {
        rev: rev.to_owned(),
        path: path.to_owned(),
    });
    let mut out = vec![Config::NoTracer];
    for mode in Mode::ALL {
        out.push(Config::Tcptrace {
            mode,
            binary: current.clone(),
        });
        // The baseline's row of a mode runs right after this tree's, so
        // that the two see the same machine (see `compare`).
        if let Some(b) = baseline.as_ref().filter(|_| Mode::BASELINE.contains(&mode)) {
            out.push(Config::Tcptrace {
                mode,
                binary: b.clone(),
            });
        }
    }
    out.extend(Script::ALL.map(Config::Bpftrace));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Config) -> (String, Vec<String>) {
        let cmd = c.command().expect("a tracer");
        (
            cmd.get_program().to_string_lossy().into_owned(),
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        )
    }

    #[test]
    fn existing_row_names_stay() {
        let names: Vec<String> = lineup(Path::new("/new/tcptrace"), None)
            .iter()
            .map(Config::name)
            .collect();
        assert_eq!(
            names,
            [
                "no tracer",
                "tcptrace --json > /dev/null",
                "tcptrace --hist",
                "tcptrace --closewait-leaks",
                "tcptrace --timewait",
                "tcptrace --closewait-leaks --hist --timewait",
                "tcptrace --agent",
                "bpftrace tcpstates-like printf",
                "bpftrace dwell hist",
                "calibration: bpftrace, empty programs",
                "calibration: bpftrace, one timestamp",
            ]
        );
        assert_eq!(Config::NoTracer.command().map(|_| ()), None);
    }

    #[test]
    fn combined_row_runs_every_analysis() {
        let rows = lineup(Path::new("/new/tcptrace"), None);
        let combined = rows
            .iter()
            .find(|c| c.name() == "tcptrace --closewait-leaks --hist --timewait")
            .expect("the combined row");
        assert!(combined.says_ready());
        assert_eq!(
            argv(combined),
            (
                "/new/tcptrace".to_owned(),
                ["--closewait-leaks", "--hist", "--timewait", "-i", "1h"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
    }

    #[test]
    fn agent_row_serves_metrics_on_the_bench_port() {
        let rows = lineup(Path::new("/new/tcptrace"), None);
        let agent = rows
            .iter()
            .find(|c| c.name() == "tcptrace --agent")
            .expect("the agent row");
        assert!(agent.says_ready());
        assert_eq!(
            argv(agent).1,
            ["--agent", "--prometheus", "127.0.0.1:19464", "-i", "1h"]
        );
    }

    #[test]
    fn baseline_rows_run_the_old_binary_with_the_same_args() {
        let rows = lineup(
            Path::new("/new/tcptrace"),
            Some(("9536a8a", Path::new("/old/tcptrace"))),
        );
        let baseline: Vec<&Config> = rows
            .iter()
            .filter(|c| c.name().starts_with("baseline "))
            .collect();
        let names: Vec<String> = baseline.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "baseline 9536a8a: tcptrace --json > /dev/null",
                "baseline 9536a8a: tcptrace --hist",
                "baseline 9536a8a: tcptrace --closewait-leaks",
                "baseline 9536a8a: tcptrace --timewait",
            ]
        );
        for old in baseline {
            let Config::Tcptrace { mode, .. } = old else {
                panic!("{old:?}")
            };
            let new = rows
                .iter()
                .find(|c| c.name() == mode.label())
                .expect("the same mode from this tree");
            let ((old_bin, old_args), (new_bin, new_args)) = (argv(old), argv(new));
            assert_eq!(
                (old_bin.as_str(), new_bin.as_str()),
                ("/old/tcptrace", "/new/tcptrace")
            );
            assert_eq!(old_args, new_args, "{}", old.name());
            assert!(old.says_ready());
        }
        // Every row has its own name, which keys the tables and the JSON.
        let mut names: Vec<String> = rows.iter().map(Config::name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), rows.len());
    }

    #[test]
    fn bpftrace_rows_run_their_scripts() {
        for s in Script::ALL {
            let (bin, args) = argv(&Config::Bpftrace(s));
            assert_eq!(
                (bin.as_str(), args),
                ("bpftrace", vec!["-e".to_owned(), s.text().to_owned()])
            );
            assert!(!Config::Bpftrace(s).says_ready());
        }
    }
}
