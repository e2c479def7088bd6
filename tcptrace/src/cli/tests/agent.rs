//! `--agent`, `--prometheus` and `--top`.

use std::time::Duration;

use clap::error::ErrorKind;
use tcptrace_common::HistBy;

use super::parse;

/// `--prometheus` serves what the analyses count, whichever run.
#[test]
fn prometheus_serves_any_analysis_and_not_the_stream_alone() {
    for analysis in ["--hist", "--closewait-leaks", "--timewait"] {
        let plan = parse(&[analysis, "--prometheus", "9464"])
            .unwrap()
            .plan()
            .unwrap();
        assert_eq!(plan.prometheus, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(!plan.quiet, "{analysis} still prints its reports");
    }
    let err = parse(&["--prometheus", "9464"])
        .unwrap()
        .plan()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    assert!(err.to_string().contains("--agent"), "{err}");
}

/// `--agent` is every analysis with metrics and nothing on stdout.
#[test]
fn agent_runs_every_analysis_quietly_with_metrics() {
    let plan = parse(&["--agent"]).unwrap().plan().unwrap();
    let a = plan.analyses;
    assert!(!a.stream && a.hist.is_some() && a.closewait.is_some() && a.timewait.is_some());
    assert_eq!(a.hist.unwrap().by, HistBy::State);
    assert!(plan.quiet);
    assert_eq!(plan.prometheus, Some(crate::cli::AGENT_LISTEN));
    assert_eq!(plan.metrics_top, 20);
    let plan = parse(&[
        "--agent",
        "--prometheus",
        "0.0.0.0:9100",
        "--top",
        "5",
        "--min-age",
        "30s",
        "-i",
        "1m",
    ])
    .unwrap()
    .plan()
    .unwrap();
    assert_eq!(plan.prometheus, Some("0.0.0.0:9100".parse().unwrap()));
    assert_eq!(plan.metrics_top, 5);
    assert_eq!(
        plan.analyses.closewait.unwrap().min_age,
        Duration::from_secs(30)
    );
    assert_eq!(plan.report_interval(), Some(Duration::from_mins(1)));
    for clash in [
        &["--agent", "--hist"][..],
        &["--agent", "--json"],
        &["--agent", "--timewait"],
        &["--agent", "--closewait-leaks"],
    ] {
        assert_eq!(
            parse(clash).unwrap_err().kind(),
            ErrorKind::ArgumentConflict,
            "{clash:?}"
        );
    }
    // --top names series of /metrics: nothing without it.
    assert_eq!(
        parse(&["--hist", "--top", "5"]).unwrap_err().kind(),
        ErrorKind::MissingRequiredArgument
    );
    for bad in ["0", "1001", "many"] {
        assert_eq!(
            parse(&["--agent", "--top", bad]).unwrap_err().kind(),
            ErrorKind::ValueValidation,
            "--top {bad}"
        );
    }
}
