//! Counters of `/proc/net/netstat`.

use std::path::Path;

/// The counters of tcptrace's network namespace: `/proc/net` is the main
/// thread's.
pub const PROCESS: &str = "/proc/net/netstat";
/// The counters of the calling thread's network namespace, which differs
/// from the main thread's after a `setns` on this thread.
pub const THREAD: &str = "/proc/thread-self/net/netstat";

/// `TcpExtTCPTimeWaitOverflow` of tcptrace's network namespace
/// ([`PROCESS`]): TIME_WAIT sockets the kernel did not create because
/// `tcp_max_tw_buckets` was reached. None when unreadable.
#[must_use]
pub fn timewait_overflow() -> Option<u64> {
    timewait_overflow_in(Path::new(PROCESS))
}

/// `TcpExtTCPTimeWaitOverflow` read from `file` ([`PROCESS`] or
/// [`THREAD`]). None when unreadable.
#[must_use]
pub fn timewait_overflow_in(file: &Path) -> Option<u64> {
    parse_timewait_overflow(&std::fs::read_to_string(file).ok()?)
}

/// `TCPTimeWaitOverflow` from the `TcpExt:` lines of netstat's text.
fn parse_timewait_overflow(text: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "TCPTimeWaitOverflow")
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_overflow_counter_by_name() {
        let text = "TcpExt: SyncookiesSent TCPTimeWaitOverflow\nTcpExt: 0 17\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_timewait_overflow(text), Some(17));
        assert_eq!(parse_timewait_overflow("TcpExt: A\nTcpExt: 1\n"), None);
        assert_eq!(parse_timewait_overflow(""), None);
        assert!(timewait_overflow().is_some(), "this namespace's netstat");
        assert_eq!(
            timewait_overflow_in(Path::new(THREAD)).is_some(),
            timewait_overflow().is_some(),
            "this thread's netstat"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Any text gives a number or None; the counter is found among any
        /// other names, wherever it stands.
        #[test]
        fn any_text_or_the_counter_among_others(
            text in "\\PC{0,200}",
            others in proptest::collection::vec(("[A-Za-z]{1,12}", proptest::prelude::any::<u64>()), 0..6),
            at: proptest::sample::Index,
            value: u64,
        ) {
            let _ = parse_timewait_overflow(&text);
            let mut counters = others;
            counters.insert(at.index(counters.len() + 1), ("TCPTimeWaitOverflow".to_owned(), value));
            let (names, values): (Vec<String>, Vec<String>) =
                counters.into_iter().map(|(n, v)| (n, v.to_string())).unzip();
            let text = format!("TcpExt: {}\nTcpExt: {}\n", names.join(" "), values.join(" "));
            let first = names.iter().position(|n| n == "TCPTimeWaitOverflow");
            let want = first.and_then(|i| values[i].parse().ok());
            proptest::prop_assert_eq!(parse_timewait_overflow(&text), want);
        }
    }
}
