//! Flags to plans: parsing, bounds, help, and the kernel configuration
//! each analysis and combination gets.

use clap::{CommandFactory, error::ErrorKind};
use tcptrace_common::Config;

use super::{parse::parse_max_sockets, *};
use tcptrace_common::{AF_INET, AF_INET6, OwnerSource, config::FAMILY_V6};

use crate::{
    kernel::settings::kernel_config,
    model::{
        event::Event,
        records::{as_bytes, decode, tests::raw_state},
    },
};

mod agent;
mod help_text;
mod modes;
mod ports;
mod scope;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("tcptrace").chain(args.iter().copied()))
}

/// The kernel configuration the flags ask for.
fn config(args: &[&str]) -> Config {
    kernel_config(&parse(args).unwrap().plan().unwrap())
}

#[test]
fn each_mode_gets_the_set_state_program_compiled_for_it() {
    use tcptrace_common::config::{SET_STATE_GENERIC, set_state_program};
    for (args, program) in [
        (&[][..], "inet_sock_set_state_stream"),
        (
            &["--pid", "1", "--port", "80"][..],
            "inet_sock_set_state_stream",
        ),
        (&["--hist"][..], "inet_sock_set_state_hist"),
        (
            &["--hist", "-6", "--lport", "80"][..],
            "inet_sock_set_state_hist",
        ),
        (&["--timewait"][..], "inet_sock_set_state_timewait"),
        (&["--closewait-leaks"][..], "inet_sock_set_state_leaks"),
        (
            &["--closewait-leaks", "--min-age", "1m"][..],
            "inet_sock_set_state_leaks",
        ),
        // Split histograms: the generic program.
        (&["--hist", "--by", "lport"][..], SET_STATE_GENERIC),
        (&["--hist", "--by", "comm"][..], SET_STATE_GENERIC),
    ] {
        let c = config(args);
        assert_eq!(set_state_program(&c), program, "{args:?}");
    }
}

#[test]
fn mode_configs_keep_what_their_shape_leaves_out() {
    let c = config(&["--closewait-leaks", "--min-age", "2s"]);
    assert_eq!((c.capture_stacks, c.long_dwell_ns), (1, 2_000_000_000));
    assert_eq!(config(&["--timewait"]).emit_failures, 1);
    let by_comm = config(&["--hist", "--by", "comm"]);
    assert_eq!(
        (by_comm.lean_socks, by_comm.hist_by),
        (0, HistBy::Comm as u32)
    );
    assert_eq!(config(&["--port", "80"]).ports.port.as_slice(), [80]);
    for (args, io_hooks) in [
        (&[][..], 1),
        (&["--closewait-leaks"][..], 1),
        (&["--hist", "--by", "comm"][..], 1),
        (&["--hist"][..], 0),
        (&["--hist", "--by", "lport"][..], 0),
        (&["--timewait"][..], 0),
    ] {
        let c = config(args);
        assert_eq!(c.io_hooks, io_hooks, "{args:?}");
    }
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn durations_in_seconds_or_humantime() {
    assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert!(parse_duration("0").is_err());
    assert!(parse_duration("soon").is_err());
    let cli = parse(&["-d", "250ms"]).unwrap();
    assert_eq!(cli.duration, Some(Duration::from_millis(250)));
}

#[test]
fn states_parse_in_any_case_with_or_without_prefix() {
    let cli = parse(&["--state", "close_wait,TCP_FIN_WAIT2"]).unwrap();
    assert_eq!(cli.states, vec![TcpState::CloseWait, TcpState::FinWait2]);
    // As ss spells them.
    let cli = parse(&["--state", "close-wait,fin-wait-2,Time-Wait,syn-recv"]).unwrap();
    let ss = [
        TcpState::CloseWait,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::SynRecv,
    ];
    assert_eq!(cli.states, ss);
    let err = parse(&["--state", "HALF_OPEN"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
    assert!(err.to_string().contains("CLOSE_WAIT"), "{err}");
}

#[test]
fn bad_flags_and_values_are_clap_errors() {
    assert_eq!(
        parse(&["--nope"]).unwrap_err().kind(),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        parse(&["--port", "0"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        parse(&["--port", "70000"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        parse(&["-p", "abc"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        parse(&["-4", "-6"]).unwrap_err().kind(),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        parse(&["--ringbuf-kib", "3"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
}

#[test]
fn max_sockets_bounds() {
    assert_eq!(parse(&[]).unwrap().max_sockets, DEFAULT_MAX_SOCKETS);
    const {
        assert!(
            DEFAULT_MAX_SOCKETS >= 100_000,
            "100k sockets fit by default"
        );
    };
    assert_eq!(parse_max_sockets("262144"), Ok(262_144));
    assert_eq!(parse_max_sockets("1024"), Ok(1024));
    assert_eq!(parse_max_sockets("16777216"), Ok(16_777_216));
    for bad in [
        "0",
        "1023",
        "16777217",
        "99999999999",
        "-5",
        "1e6",
        "lots",
        "",
    ] {
        let err = parse_max_sockets(bad).unwrap_err();
        assert!(err.contains("from 1024 to 16777216"), "{bad}: {err}");
    }
    let cli = parse(&["--closewait-leaks", "--max-sockets", "300000"]).unwrap();
    assert_eq!(cli.max_sockets, 300_000);
    assert_eq!(
        parse(&["--max-sockets", "0"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
}

#[test]
fn leak_mode_flags() {
    let cli = parse(&["--closewait-leaks"]).unwrap();
    assert_eq!(cli.min_age, Duration::from_secs(10), "documented default");
    assert_eq!(cli.interval, None);
    let cli = parse(&["--closewait-leaks", "--min-age", "5s", "-i", "2"]).unwrap();
    assert_eq!(cli.min_age, Duration::from_secs(5));
    assert_eq!(cli.interval, Some(Duration::from_secs(2)));
    let err = parse(&["--closewait-leaks", "--min-age", "soon"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
    let err = parse(&["--closewait-leaks", "--interval", "0"]).unwrap_err();
    assert!(err.to_string().contains("greater than zero"), "{err}");
    let err = parse(&["--min-age", "5s"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
}

#[test]
fn hist_mode_flags() {
    let cli = parse(&["--hist", "--by", "lport", "--prometheus", "9464"]).unwrap();
    assert!(cli.hist);
    assert_eq!(cli.by.map(|b| b.key), Some(HistBy::LocalPort));
    assert_eq!(cli.prometheus, Some("127.0.0.1:9464".parse().unwrap()));
    let cli = parse(&["--hist", "--prometheus", "[::1]:9000"]).unwrap();
    assert_eq!(cli.prometheus, Some("[::1]:9000".parse().unwrap()));
    let err = parse(&["--hist", "--by", "pid"]).unwrap_err();
    assert!(
        err.to_string().contains("lport, rport, raddr, comm"),
        "{err}"
    );
    assert_eq!(
        parse(&["--hist", "-i", "0"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        parse(&["--by", "lport"]).unwrap_err().kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert!(parse(&["--hist", "--prometheus", "nowhere"]).is_err());
}

#[test]
fn timewait_mode_flags() {
    let cli = parse(&["--timewait", "-i", "5s", "--json", "--port", "80"]).unwrap();
    assert!(cli.timewait);
    assert_eq!(cli.interval, Some(Duration::from_secs(5)));
    assert_eq!(
        parse(&["--timewait", "--min-age", "5s"])
            .unwrap_err()
            .kind(),
        ErrorKind::MissingRequiredArgument,
        "--min-age is --closewait-leaks's"
    );
}

/// The analyses compose: any combination is one plan, sharing `-i`, and
/// only the stream stands alone.
#[test]
fn analyses_combine_into_one_plan() {
    let plan = parse(&[
        "--closewait-leaks",
        "--hist",
        "--timewait",
        "-i",
        "5s",
        "--min-age",
        "2s",
    ])
    .unwrap()
    .plan()
    .unwrap();
    let a = plan.analyses;
    assert!(!a.stream);
    assert_eq!(a.count(), 3);
    assert_eq!(
        a.hist.map(|h| (h.interval, h.by)),
        Some((Duration::from_secs(5), HistBy::State))
    );
    assert_eq!(a.closewait.map(|l| l.min_age), Some(Duration::from_secs(2)));
    assert_eq!(a.timewait.map(|t| t.interval), Some(Duration::from_secs(5)));
    for pair in [
        &["--hist", "--closewait-leaks"][..],
        &["--timewait", "--hist"][..],
        &["--timewait", "--closewait-leaks"][..],
    ] {
        let a = parse(pair).unwrap().plan().unwrap().analyses;
        assert_eq!((a.stream, a.count()), (false, 2), "{pair:?}");
    }
    let stream = parse(&[]).unwrap().plan().unwrap().analyses;
    assert_eq!((stream.stream, stream.count()), (true, 1));
}

/// Leak mode's summary needs the histograms by state: a split is refused
/// with a clear error, not run with a wrong summary.
#[test]
fn leaks_with_split_histograms_are_refused() {
    let err = parse(&["--closewait-leaks", "--hist", "--by", "lport"])
        .unwrap()
        .plan()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
    assert!(err.to_string().contains("--hist --by"), "{err}");
    assert!(
        parse(&["--timewait", "--hist", "--by", "lport"])
            .unwrap()
            .plan()
            .is_ok()
    );
}

#[test]
fn pids_are_comma_separated_or_repeated() {
    let cli = parse(&["-p", "1,2", "--pid", "3"]).unwrap();
    assert_eq!(cli.pids, vec![1, 2, 3]);
}

fn ev(old: TcpState, new: TcpState, source: OwnerSource) -> Event {
    let mut raw = raw_state(old, new);
    raw.owner_source = source as u32;
    decode(&as_bytes(&raw)).unwrap()
}

fn filter(args: &[&str]) -> Filter {
    parse(args).unwrap().plan().unwrap().filter
}

#[test]
fn pid_filter_matches_the_owner_and_never_an_unknown_owner() {
    let f = filter(&["-p", "42"]);
    assert!(f.matches(&ev(
        TcpState::Established,
        TcpState::CloseWait,
        OwnerSource::Io
    )));
    assert!(!f.matches(&ev(
        TcpState::Established,
        TcpState::CloseWait,
        OwnerSource::Unknown
    )));
    let f = filter(&["-p", "7"]);
    assert!(!f.matches(&ev(
        TcpState::Established,
        TcpState::CloseWait,
        OwnerSource::Io
    )));
}

#[test]
fn comm_filter_is_exact() {
    let e = ev(
        TcpState::Established,
        TcpState::FinWait1,
        OwnerSource::Syscall,
    );
    assert!(filter(&["--comm", "server"]).matches(&e));
    assert!(!filter(&["--comm", "serv"]).matches(&e));
}

#[test]
fn state_filter_matches_old_or_new() {
    let f = filter(&["--state", "CLOSE_WAIT"]);
    assert!(f.matches(&ev(
        TcpState::Established,
        TcpState::CloseWait,
        OwnerSource::Io
    )));
    assert!(f.matches(&ev(TcpState::CloseWait, TcpState::LastAck, OwnerSource::Io)));
    assert!(!f.matches(&ev(
        TcpState::Established,
        TcpState::FinWait1,
        OwnerSource::Io
    )));
    assert!(Filter::default().matches(&ev(
        TcpState::Established,
        TcpState::FinWait1,
        OwnerSource::Io
    )));
}

#[test]
fn kernel_filters_from_flags() {
    let cfg = config(&["-6", "--lport", "80"]);
    assert_eq!(cfg.families, FAMILY_V6);
    assert!(cfg.accepts(AF_INET6, 80, 5000));
    assert!(!cfg.accepts(AF_INET, 80, 5000));
    assert!(!cfg.accepts(AF_INET6, 81, 5000));

    let cfg = config(&["--port", "443"]);
    assert!(cfg.accepts(AF_INET, 443, 1));
    assert!(cfg.accepts(AF_INET6, 1, 443));
    assert!(!cfg.accepts(AF_INET, 1, 2));
    assert!(!cfg.accepts(1, 443, 443), "unknown family never passes");

    let cfg = config(&["--rport", "53"]);
    assert!(cfg.accepts(AF_INET, 9, 53));
    assert!(!cfg.accepts(AF_INET, 53, 9));
}
