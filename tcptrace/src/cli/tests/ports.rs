//! `--port`, `--lport` (`-L`) and `--rport` (`-D`): lists, comma-separated
//! or repeated, at most `MAX_PORTS` different ports each, in every mode.

use clap::{CommandFactory as _, error::ErrorKind};
use tcptrace_common::ports::MAX_PORTS;

use super::{config, parse};
use crate::cli::Cli;

/// The three lists the flags give, as the kernel configuration holds them.
fn lists(args: &[&str]) -> [Vec<u16>; 3] {
    let c = config(args);
    [&c.ports.port, &c.ports.lport, &c.ports.rport].map(|l| l.as_slice().to_vec())
}

#[test]
fn each_flag_takes_a_list_comma_separated_or_repeated() {
    let none: Vec<u16> = Vec::new();
    for (args, want) in [
        (&["-L", "80,443"][..], [&none, &vec![80, 443], &none]),
        (
            &["--lport", "80", "--lport", "443"],
            [&none, &vec![80, 443], &none],
        ),
        (
            &["--localport", "80", "-L", "443,8080"],
            [&none, &vec![80, 443, 8080], &none],
        ),
        (&["-D", "443"], [&none, &none, &vec![443]]),
        (
            &["--rport=53,853", "--remoteport", "5353"],
            [&none, &none, &vec![53, 853, 5353]],
        ),
        (
            &["--port", "22,2222", "--port", "80"],
            [&vec![22, 2222, 80], &none, &none],
        ),
        (
            &["--port", "9", "-L", "1", "-D", "65535"],
            [&vec![9], &vec![1], &vec![65535]],
        ),
        (&[], [&none, &none, &none]),
    ] {
        assert_eq!(lists(args), want.map(Clone::clone), "{args:?}");
    }
}

#[test]
fn a_port_given_twice_counts_once() {
    assert_eq!(lists(&["-L", "80,80", "-L", "80"])[1], [80]);
    // MAX_PORTS different ports, each twice: within the limit.
    let ports: Vec<String> = (1..=MAX_PORTS).map(|p| p.to_string()).collect();
    let twice = format!("{},{}", ports.join(","), ports.join(","));
    assert_eq!(lists(&["-D", &twice])[2].len(), MAX_PORTS);
}

#[test]
fn more_than_max_ports_is_refused_naming_the_limit() {
    let ports: Vec<String> = (1..=MAX_PORTS + 1).map(|p| p.to_string()).collect();
    let (head, last) = ports.split_at(MAX_PORTS);
    let joined = ports.join(",");
    let head = head.join(",");
    for args in [
        vec!["--port", joined.as_str()],
        vec!["-L", joined.as_str()],
        vec!["--rport", head.as_str(), "--rport", last[0].as_str()],
    ] {
        let err = parse(&args).and_then(|c| c.plan()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooManyValues, "{args:?}");
        assert_eq!(err.exit_code(), 2, "a usage error: {args:?}");
        let msg = err.to_string();
        let flag = ["--port", "--lport", "--rport"]
            .into_iter()
            .find(|f| args[0] == *f || (args[0] == "-L" && *f == "--lport"))
            .unwrap();
        assert!(
            msg.contains(&format!(
                "{flag} takes at most {MAX_PORTS} different ports, 9 given"
            )),
            "{args:?}: {msg}"
        );
    }
}

#[test]
fn bad_ports_are_usage_errors_that_say_what_is_expected() {
    for (value, why) in [
        ("0", "out of range"),
        ("65536", "out of range"),
        ("99999999999999999999", "out of range"),
        ("80,0", "out of range"),
        ("", "an empty port"),
        ("80,", "an empty port"),
        (",80", "an empty port"),
        ("80,,443", "an empty port"),
        ("http", "not a port number"),
        ("-1", "not a port number"),
        ("0x50", "not a port number"),
        ("80;443", "not a port number"),
    ] {
        for flag in ["--port", "--lport", "--rport", "-L", "-D"] {
            // `--flag=VALUE`, `-L VALUE`, or `-L-1` (clap reads a lone `-1`
            // as a flag).
            let args = match (flag.starts_with("--"), value.starts_with('-')) {
                (true, _) => vec![format!("{flag}={value}")],
                (false, false) => vec![flag.to_owned(), value.to_owned()],
                (false, true) => vec![format!("{flag}{value}")],
            };
            let arg = args.join(" ");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let err = parse(&args).and_then(|c| c.plan()).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{arg}: {msg}");
            assert_eq!(err.exit_code(), 2, "{arg}");
            assert!(msg.contains(why), "{arg}: {msg}");
            assert!(msg.contains("ports from 1 to 65535"), "{arg}: {msg}");
        }
    }
}

/// The port filters apply in every mode (in the kernel, and to what
/// sock_diag finds), so every mode takes the lists.
#[test]
fn every_mode_takes_port_lists() {
    for mode in [
        &[][..],
        &["--hist"],
        &["--hist", "--by", "rport"],
        &["--closewait-leaks"],
        &["--timewait"],
        &["--agent"],
        &["--hist", "--closewait-leaks", "--timewait"],
    ] {
        let mut args = mode.to_vec();
        args.extend(["-L", "80,81", "-D", "90", "--port", "80,90"]);
        let plan = parse(&args).and_then(|c| c.plan());
        let plan = plan.unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(plan.ports.ports.lport.as_slice(), [80, 81], "{args:?}");
        assert_eq!(
            lists(&args),
            [vec![80, 90], vec![80, 81], vec![90]],
            "{args:?}"
        );
    }
}

#[test]
fn help_names_the_lists_and_their_limit() {
    let limit = format!("at most {MAX_PORTS}");
    let short = Cli::command().render_help().to_string();
    let long = Cli::command().render_long_help().to_string();
    for flag in ["--port <PORT>", "-L, --lport <PORT>", "-D, --rport <PORT>"] {
        for help in [&short, &long] {
            let line = help
                .lines()
                .skip_while(|l| !l.contains(flag))
                .take(2)
                .collect::<String>();
            assert!(line.contains(&limit), "{flag}: {line}");
        }
    }
    assert!(long.contains("--localport works too"), "{long}");
    assert!(long.contains("--remoteport works too"), "{long}");
}
