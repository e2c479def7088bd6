//! `-h` fits one screen; `--help` keeps the explanations and the socket
//! table's sizes.

use clap::CommandFactory as _;

use crate::cli::Cli;

#[test]
fn short_help_fits_one_screen_at_80_columns() {
    let help = Cli::command().term_width(80).render_help().to_string();
    let lines = help.lines().count();
    assert!(lines <= 40, "-h is {lines} lines at 80 columns:\n{help}");
    assert!(help.lines().all(|l| l.chars().count() <= 80), "{help}");
    for incident in [
        "--closewait-leaks",
        "--timewait",
        "--agent",
        "In an incident",
    ] {
        assert!(help.contains(incident), "{incident}:\n{help}");
    }
    assert!(!help.contains("SOCKET TABLE (--max-sockets)"), "{help}");
}

#[test]
fn long_help_keeps_every_flag_and_the_explanations() {
    let mut cmd = Cli::command().term_width(100);
    let long = cmd.render_long_help().to_string();
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(l) = arg.get_long() {
            assert!(long.contains(&format!("--{l}")), "--{l} missing:\n{long}");
        }
    }
    for section in [
        "SOCKET TABLE (--max-sockets)",
        "THE AGENT (--agent)",
        "PRIVILEGES",
    ] {
        assert!(long.contains(section), "{section}");
    }
}

#[test]
fn help_teaches_the_socket_table() {
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("--max-sockets <N>"), "{help}");
    let section = help
        .split("SOCKET TABLE (--max-sockets)")
        .nth(1)
        .unwrap_or_default();
    assert!(
        section
            .split("EXAMPLES")
            .next()
            .unwrap_or_default()
            .lines()
            .count()
            <= 6,
        "a few lines on sizing; the layout is in docs/internals.md: {section}"
    );
    for placeholder in ["{default", "{double", "{per_entry", "{elem", "{lean"] {
        assert!(!section.contains(placeholder), "{placeholder}: {section}");
    }
    let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
    let per_entry = format!(
        "{} bytes per entry",
        crate::kernel::sizing::socket_map_bytes_per_entry()
    );
    for want in [
        "131072 sockets tracked by default",
        &per_entry,
        "least recently used are evicted",
        "docs/internals.md",
    ] {
        assert!(section.contains(want), "{want}: {section}");
    }
}

/// The README opens with the incident quick start: each symptom, with its
/// command, within the first 60 lines.
#[test]
fn readme_opens_with_the_incident_quick_start() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
    let head: String = readme.lines().take(60).collect::<Vec<_>>().join("\n");
    for want in [
        "## In an incident",
        "Too many open files",
        "tcptrace --closewait-leaks",
        "Address already in use",
        "Cannot assign requested address",
        "tcptrace --timewait",
        "Connection reset by peer",
        "tcptrace --hist",
    ] {
        assert!(
            head.contains(want),
            "{want} is not in the README's first 60 lines"
        );
    }
}
