//! What the netlink crates' parsed messages leave out, read from a
//! message's bytes: the header of a reply skipped unparsed, and a socket's
//! timer.

use netlink_packet_sock_diag::inet::InetResponseHeader;
use tcptrace_common::TcpState;

use crate::model::socket::DiagSocket;

/// Length of a netlink message header (`struct nlmsghdr`).
pub(super) const NLMSG_HEADER_LEN: usize = 16;

/// A netlink message's length (aligned to 4 bytes), type and sequence
/// number, from its first 16 bytes.
pub(super) fn raw_header(msg: &[u8]) -> Option<(usize, u16, u32)> {
    let h = msg.get(..NLMSG_HEADER_LEN)?;
    let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let kind = u16::from_ne_bytes([h[4], h[5]]);
    let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
    Some((len.next_multiple_of(4), kind, seq))
}

/// One socket of a dump: the parsed header `h`, and the timer read from the
/// message `raw` it came in.
pub(super) fn diag_socket(h: &InetResponseHeader, raw: &[u8]) -> DiagSocket {
    let id = &h.socket_id;
    DiagSocket {
        state: TcpState::from_u32(u32::from(h.state)),
        local: id.source_address,
        lport: id.source_port,
        remote: id.destination_address,
        rport: id.destination_port,
        inode: h.inode,
        recv_queue: h.recv_queue,
        send_queue: h.send_queue,
        timer_expires_ms: raw_expires_ms(raw, h.timer.is_some()),
        timer: raw.get(TIMER_OFFSET).copied().unwrap_or(0),
        cookie: u64::from_ne_bytes(id.cookie),
    }
}

/// Offset of `idiag_timer`: after the 16-byte netlink header, family, state.
const TIMER_OFFSET: usize = NLMSG_HEADER_LEN + 2;

/// Offset of `idiag_expires` in a netlink message carrying `struct
/// inet_diag_msg` (`include/uapi/linux/inet_diag.h)`: 16-byte netlink header,
/// then family, state, timer, retrans (4 bytes) and the 48-byte socket id.
const EXPIRES_OFFSET: usize = NLMSG_HEADER_LEN + 4 + 48;

/// The timer's expiry in ms. Read from the raw message: the crate's parsed
/// `Timer::TimeWait` carries no expiry, and TIME_WAIT's is the one we need.
fn raw_expires_ms(msg: &[u8], has_timer: bool) -> Option<u32> {
    if !has_timer {
        return None;
    }
    let b = msg.get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}
