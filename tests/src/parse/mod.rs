//! Parsers of what tcptrace prints, one module per output, each checking its
//! lines against the documented schema; and the helpers they share for the
//! exit summary on stderr and for JSON values.

use std::time::Duration;

use serde_json::Value;

pub mod events;
pub mod hist;
pub mod leaks;
pub mod prometheus;
pub mod timewait;

pub use events::{Event, Socket, group_sockets};
pub use hist::{HistBucket, HistLine, HistReport};
pub use leaks::{LeakFrame, LeakGroup, LeakReport};
pub use prometheus::{Labels, Metrics, Sample, promtool_check};
pub use timewait::TimewaitLine;

/// The first line of tcptrace's `stderr` that starts with `prefix` and
/// holds `holds` (e.g. the exit summary's `tcptrace: N events (`).
#[must_use]
pub fn stderr_line<'a>(stderr: &'a str, prefix: &str, holds: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with(prefix) && l.contains(holds))
        .unwrap_or_else(|| panic!("no {prefix:?} line with {holds:?} on stderr:\n{stderr}"))
}

/// The loss line's counts, `(label, count)` in its order: `tcptrace:
/// losses: N ring-buffer full, N socket-map evictions, ...; N transitions
/// of sockets older than the tracer or evicted`, up to the `;` (what follows
/// is not a loss). Panics without one loss line, or on a count that is not
/// a number.
#[must_use]
pub fn losses(stderr: &str) -> Vec<(String, u64)> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("tcptrace: losses: "))
        .collect();
    let [line] = lines[..] else {
        panic!(
            "expected one loss line on stderr, got {}:\n{stderr}",
            lines.len()
        );
    };
    let head = line.split_once(';').map_or(line, |(h, _)| h);
    head.split(", ")
        .map(|item| {
            let (n, label) = item
                .split_once(' ')
                .unwrap_or_else(|| panic!("loss item {item:?} in {line:?}"));
            let n = n
                .parse()
                .unwrap_or_else(|_| panic!("loss count {n:?} in {line:?}"));
            (label.to_owned(), n)
        })
        .collect()
}

/// The loss line's label of the runs of tcptrace's programs that the kernel
/// skipped because another BPF program was running on the CPU (their
/// `recursion_misses`).
///
/// A real loss, and counted, but one that interrupts and the host's other
/// BPF programs cause, whatever a test does: a timer or device interrupt
/// that lands while one of tcptrace's programs runs may run softirqs whose
/// TCP transitions are then skipped (57 in one run of a `http_abuse` test,
/// on a 2-CPU VM with a busy qemu beside it, and 0 in the runs before and
/// after). Tests that check that a run lost nothing leave it out
/// ([`is_skipped_runs`]); `losses.rs` checks that it is read.
pub const SKIPPED_RUNS: &str = "program runs skipped by the kernel (recursion)";

/// [`SKIPPED_RUNS`] in `/metrics`: `tcptrace_lost_events_total`'s `reason`.
pub const SKIPPED_RUNS_REASON: &str = "program_recursion_miss";

/// The loss line's label of the transitions tcptrace found missed (a
/// socket leaving a state its entry is not in): what skipped runs leave
/// behind, on kernels that count them and on those that do not.
pub const MISSED_TRANSITIONS: &str = "transitions missed (found out of order)";

/// [`MISSED_TRANSITIONS`] in `/metrics`.
pub const MISSED_TRANSITIONS_REASON: &str = "transition_gap";

/// Whether a loss line label or a `/metrics` reason is [`SKIPPED_RUNS`] or
/// what they leave behind, [`MISSED_TRANSITIONS`].
#[must_use]
pub fn is_skipped_runs(label_or_reason: &str) -> bool {
    [
        SKIPPED_RUNS,
        SKIPPED_RUNS_REASON,
        MISSED_TRANSITIONS,
        MISSED_TRANSITIONS_REASON,
    ]
    .contains(&label_or_reason)
}

/// The losses of a run's loss line that interrupts cannot explain: every
/// nonzero one but the skipped runs and, where the kernel counts skipped
/// tracepoint runs (6.7+), the missed transitions beyond them (each missed
/// transition is a skipped run, so more would be tcptrace's error).
#[must_use]
pub fn unexplained_losses(stderr: &str) -> Vec<(String, u64)> {
    let all = losses(stderr);
    let count = |label: &str| all.iter().find(|(l, _)| l == label).map_or(0, |(_, n)| *n);
    let (skipped, missed) = (count(SKIPPED_RUNS), count(MISSED_TRANSITIONS));
    let mut out: Vec<(String, u64)> = (all.iter())
        .filter(|(l, n)| *n > 0 && !is_skipped_runs(l))
        .cloned()
        .collect();
    if missed > skipped && crate::kernel::counts_skipped_tracepoint_runs() {
        out.push((
            format!("{MISSED_TRANSITIONS} beyond the {SKIPPED_RUNS}"),
            missed - skipped,
        ));
    }
    out
}

/// The count of the loss labelled `label` (e.g. `ring-buffer full`).
#[must_use]
pub fn loss(stderr: &str, label: &str) -> u64 {
    losses(stderr)
        .into_iter()
        .find(|(l, _)| l == label)
        .map_or_else(
            || panic!("no {label:?} in the loss line:\n{stderr}"),
            |(_, n)| n,
        )
}

/// The number just before the first `word` in a summary `line`, after a
/// space or an opening parenthesis (`N events (S state, R reset)`).
#[must_use]
pub fn number_before(line: &str, word: &str) -> u64 {
    line.split_once(word)
        .and_then(|(head, _)| head.trim_end().rsplit([' ', '(']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {word:?} in {line:?}"))
}

/// Parse tcptrace's `human_duration`: `12ns`, `3.4µs`, `5.67ms`, `8.901s`.
#[must_use]
pub fn parse_human_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = s.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else {
        (s.strip_suffix('s')?, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    Duration::try_from_secs_f64(v * scale).ok()
}

/// `Ok` when `ok(x)`, else an error naming the field and its value.
fn check(what: &str, x: &Value, ok: fn(&Value) -> bool) -> Result<(), String> {
    if ok(x) {
        Ok(())
    } else {
        Err(format!("{what} = {x}"))
    }
}

/// An RFC 3339 UTC time with microseconds, `2026-01-01T00:00:00.000000Z`.
#[must_use]
pub fn is_time(x: &Value) -> bool {
    x.as_str().is_some_and(|s| {
        s.len() == 27
            && s.ends_with('Z')
            && s.as_bytes().get(10) == Some(&b'T')
            && s.as_bytes().get(19) == Some(&b'.')
    })
}

/// An endpoint object with both its keys: `addr` an IP address and
/// `port` a port, each possibly null (where the object aggregates over it).
#[must_use]
pub fn is_endpoint(x: &Value) -> bool {
    endpoint_with(x, true, true)
}

/// An endpoint object, `{addr, port}` and nothing else; `addr` and `port`
/// may be null only when allowed.
fn endpoint_with(x: &Value, addr_null: bool, port_null: bool) -> bool {
    let Some(o) = x.as_object() else {
        return false;
    };
    let addr = &x["addr"];
    let port = &x["port"];
    o.len() == 2
        && ((addr_null && addr.is_null())
            || addr
                .as_str()
                .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok()))
        && ((port_null && port.is_null()) || port.as_u64().is_some_and(|p| p <= 65535))
}

/// An endpoint object with an address and a port, none null.
#[must_use]
pub fn is_full_endpoint(x: &Value) -> bool {
    endpoint_with(x, false, false)
}

/// `IP:PORT` (`[IP6]:PORT`) of an endpoint object, `IP` without a port.
#[must_use]
pub fn endpoint_text(x: &Value) -> String {
    let addr = x["addr"].as_str().unwrap_or("?");
    match x["port"].as_u64() {
        Some(p) if addr.contains(':') => format!("[{addr}]:{p}"),
        Some(p) => format!("{addr}:{p}"),
        None => addr.to_owned(),
    }
}

/// The lines that parse as JSON objects.
#[must_use]
pub fn json_objects(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}
