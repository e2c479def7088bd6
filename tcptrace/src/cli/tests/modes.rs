//! Every flag that belongs to some modes, in every mode: accepted where it
//! does what it says, refused elsewhere (never accepted and ignored).

use super::parse;

/// The modes, as flags.
const MODES: [(&str, &[&str]); 5] = [
    ("stream", &[]),
    ("hist", &["--hist"]),
    ("leaks", &["--closewait-leaks"]),
    ("timewait", &["--timewait"]),
    ("agent", &["--agent"]),
];

/// Each mode-only flag and the modes it works in.
const FLAGS: [(&[&str], &[&str]); 12] = [
    (&["--by", "lport"], &["hist"]),
    (&["--min-age", "5s"], &["leaks", "agent"]),
    (&["--symbolize-timeout", "1s"], &["leaks", "agent"]),
    (&["--no-jvm-attach"], &["leaks", "agent"]),
    (&["-i", "5s"], &["hist", "leaks", "timewait", "agent"]),
    (
        &["--prometheus", "9464"],
        &["hist", "leaks", "timewait", "agent"],
    ),
    (&["--top", "3"], &["agent"]),
    (&["--json"], &["stream", "hist", "leaks", "timewait"]),
    (&["--container", "abcd"], &["stream", "leaks"]),
    (&["--cgroup", "/system.slice"], &["stream", "leaks"]),
    (&["-T"], &["stream"]),
    (&["-w"], &["stream"]),
];

#[test]
fn every_mode_only_flag_is_refused_where_it_would_be_ignored() {
    for (flag, works_in) in FLAGS {
        for (mode, mode_args) in MODES {
            let mut args: Vec<&str> = mode_args.to_vec();
            args.extend_from_slice(flag);
            let plan = parse(&args).and_then(|cli| cli.plan());
            let accepted = plan.is_ok();
            assert_eq!(
                accepted,
                works_in.contains(&mode),
                "{flag:?} in {mode} ({args:?}): {:?}",
                plan.err().map(|e| e.to_string())
            );
        }
    }
}

/// `-T` and `-w` shape text: with `--json` they are refused.
#[test]
fn text_only_flags_are_refused_with_json() {
    for flag in ["-T", "-w"] {
        assert!(parse(&["--json", flag]).is_err(), "{flag}");
    }
}

/// `--top` with `--prometheus` works in every analysis that serves metrics.
#[test]
fn top_works_wherever_metrics_are_served() {
    for mode in ["--hist", "--closewait-leaks", "--timewait"] {
        let plan = parse(&[mode, "--prometheus", "9464", "--top", "3"])
            .and_then(|c| c.plan())
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(plan.metrics_top, 3);
    }
}
