//! Counters of `/proc/net/netstat` (tcptrace's network namespace).

/// `TcpExtTCPTimeWaitOverflow`: TIME_WAIT sockets the kernel did not create
/// because `tcp_max_tw_buckets` was reached. None when unreadable.
#[must_use]
pub fn timewait_overflow() -> Option<u64> {
    parse_timewait_overflow(&std::fs::read_to_string("/proc/net/netstat").ok()?)
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
    }
}
