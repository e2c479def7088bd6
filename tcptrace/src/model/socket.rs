//! Sockets as userspace sees them outside the event records: 4-tuples in one
//! canonical form, sockets as sock_diag reports them, and the one way an
//! endpoint is written for people.

use std::net::IpAddr;

use tcptrace_common::TcpState;

/// (local address, local port, remote address, remote port).
pub type Tuple = (IpAddr, u16, IpAddr, u16);

/// sock_diag, and the tracepoints, show a v4 peer of a dual-stack socket as
/// v4-mapped v6: compare tuples in one form.
#[must_use]
pub fn canonical_tuple(t: Tuple) -> Tuple {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    (canonical(t.0), t.1, canonical(t.2), t.3)
}

/// `10.0.0.1:80` or `[::1]:80`.
#[must_use]
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// One socket as sock_diag shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub state: Option<TcpState>,
    pub local: IpAddr,
    pub lport: u16,
    pub remote: IpAddr,
    pub rport: u16,
    /// 0 for sockets no file refers to (orphans, timewait sockets).
    pub inode: u32,
    /// Unread bytes; for CLOSE_WAIT an unconsumed FIN counts one.
    pub recv_queue: u32,
    pub send_queue: u32,
    /// Timer expiry in ms, when a timer is running (TIME_WAIT's is its end).
    pub timer_expires_ms: Option<u32>,
    /// `idiag_timer`: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT (a
    /// timewait socket, whatever its substate), 4 zero-window probe.
    pub timer: u8,
    pub cookie: u64,
}

impl DiagSocket {
    /// A timewait socket (substate TIME_WAIT, or FIN_WAIT2 for an orphan).
    #[must_use]
    pub fn is_timewait(&self) -> bool {
        self.timer == 3
    }

    /// `AF_INET` or `AF_INET6`, a v4-mapped peer counting as IPv4.
    #[must_use]
    pub fn family(&self) -> u16 {
        if canonical_tuple((self.local, 0, self.remote, 0)).0.is_ipv4() {
            tcptrace_common::AF_INET
        } else {
            tcptrace_common::AF_INET6
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn v4_mapped_peers_compare_as_v4() {
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let t = canonical_tuple((mapped, 80, IpAddr::V6(Ipv6Addr::LOCALHOST), 9));
        assert_eq!(t.0, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(t.2, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(endpoint(t.0, 80), "10.0.0.1:80");
        assert_eq!(endpoint(t.2, 9), "[::1]:9");
    }
}
