//! sock_diag (netlink `INET_DIAG`) dumps of TCP sockets by state, through the
//! rust-netlink crates. Used for sockets older than the tracer, for the inode
//! that ties a socket to its owner's fd, and for Recv-Q.
//!
//! sock_diag answers for the network namespace tcptrace runs in.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use tcptrace_common::TcpState;
use thiserror::Error;

use crate::model::{
    filter::PortFilter,
    socket::{DiagSocket, Tuple, canonical_tuple},
};

#[derive(Debug, Error)]
pub enum DiagError {
    #[error("sock_diag netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("sock_diag answered with an error: {0}")]
    Kernel(String),
    #[error("sock_diag reply could not be parsed: {0}")]
    Parse(String),
}

/// sock_diag requests that failed, since start-up: every caller goes on
/// without the answer, and the exit summary counts them.
static FAILED: AtomicU64 = AtomicU64::new(0);

/// How many sock_diag requests failed so far.
#[must_use]
pub fn failed_requests() -> u64 {
    FAILED.load(Ordering::Relaxed)
}

fn counted<T>(r: Result<T, DiagError>) -> Result<T, DiagError> {
    if r.is_err() {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// Dump TCP sockets (IPv4 and IPv6) in any of `states`.
pub fn dump(states: &[TcpState]) -> Result<Vec<DiagSocket>, DiagError> {
    let mut out = Vec::new();
    dump_with(states, |d| out.push(d))?;
    Ok(out)
}

/// Dump TCP sockets (IPv4 and IPv6) in any of `states`, handing each to
/// `visit` as it is parsed: with 100k sockets, nothing is kept that the
/// caller does not keep.
pub fn dump_with(states: &[TcpState], mut visit: impl FnMut(DiagSocket)) -> Result<(), DiagError> {
    let mut flags = StateFlags::empty();
    for s in states {
        flags |= StateFlags::from_bits_retain(1 << (*s as u32));
    }
    for family in [AF_INET, AF_INET6] {
        counted(dump_family(family, flags.clone(), &mut visit))?;
    }
    Ok(())
}

fn dump_family(
    family: u8,
    states: StateFlags,
    out: &mut impl FnMut(DiagSocket),
) -> Result<(), DiagError> {
    let socket = diag_socket()?;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    send_request(
        &socket,
        NLM_F_REQUEST | NLM_F_DUMP,
        InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        },
    )?;

    let mut rx = Vec::with_capacity(64 * 1024);
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, 0)?;
        if n == 0 {
            return Ok(());
        }
        let mut offset = 0;
        while offset < rx.len() {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..])
                .map_err(|e| DiagError::Parse(e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let h = &r.header;
                    let id = &h.socket_id;
                    out(DiagSocket {
                        state: TcpState::from_u32(u32::from(h.state)),
                        local: id.source_address,
                        lport: id.source_port,
                        remote: id.destination_address,
                        rport: id.destination_port,
                        inode: h.inode,
                        recv_queue: h.recv_queue,
                        send_queue: h.send_queue,
                        timer_expires_ms: raw_expires_ms(&rx[offset..], h.timer.is_some()),
                        timer: rx.get(offset + TIMER_OFFSET).copied().unwrap_or(0),
                        cookie: u64::from_ne_bytes(id.cookie),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => return Err(DiagError::Kernel(format!("{e:?}"))),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// A sock_diag netlink socket, bound and connected to the kernel.
fn diag_socket() -> Result<Socket, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn send_request(socket: &Socket, flags: u16, request: InetRequest) -> Result<(), DiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;
    Ok(())
}

/// Which of `tuples` (either form of a v4 peer: [`canonical_tuple`]) a TCP
/// socket of this namespace holds now, in any state: one exact sock_diag
/// lookup each (`inet_diag_find_one_icsk`, the kernel's own connection
/// lookup), not a dump.
pub fn held_tuples(tuples: &[Tuple]) -> Result<Vec<bool>, DiagError> {
    counted(lookup_tuples(tuples))
}

fn lookup_tuples(tuples: &[Tuple]) -> Result<Vec<bool>, DiagError> {
    if tuples.is_empty() {
        return Ok(Vec::new());
    }
    let socket = diag_socket()?;
    let mut rx = Vec::with_capacity(4096);
    tuples
        .iter()
        .map(|t| {
            let (local, lport, remote, rport) = canonical_tuple(*t);
            // A v4 tuple is looked up as AF_INET: the kernel hashes a
            // dual-stack socket's v4-mapped connection the v4 way.
            let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
            send_request(
                &socket,
                NLM_F_REQUEST,
                InetRequest {
                    family,
                    protocol: IPPROTO_TCP,
                    extensions: ExtensionFlags::empty(),
                    states: StateFlags::all(),
                    socket_id: SocketId {
                        source_port: lport,
                        destination_port: rport,
                        source_address: local,
                        destination_address: remote,
                        interface_id: 0,
                        // INET_DIAG_NOCOOKIE: any socket of the tuple.
                        cookie: [0xff; 8],
                    },
                },
            )?;
            rx.clear();
            socket.recv(&mut rx, 0)?;
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx)
                .map_err(|e| DiagError::Parse(e.to_string()))?;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(_)) => Ok(true),
                NetlinkPayload::Error(e) if e.raw_code() == -(nix::errno::Errno::ENOENT as i32) => {
                    Ok(false)
                }
                NetlinkPayload::Error(e) => Err(DiagError::Kernel(format!("{e:?}"))),
                other => Err(DiagError::Parse(format!(
                    "unexpected reply to a socket lookup: {other:?}"
                ))),
            }
        })
        .collect()
}

/// Offset of `idiag_timer`: after the 16-byte netlink header, family, state.
const TIMER_OFFSET: usize = 16 + 2;

/// The namespace's timewait sockets (substate TIME_WAIT, or FIN_WAIT2 for an
/// orphan): sock_diag shows them with timer 3. Only these two states are
/// dumped, so a poll stays cheap.
///
/// The FIN_WAIT2 flag also matches every full socket in FIN_WAIT2 (100k of
/// them in a CLOSE_WAIT leak's peer): they are dropped as they are parsed.
pub fn dump_timewait() -> Result<Vec<DiagSocket>, DiagError> {
    let mut v = Vec::new();
    dump_with(&[TcpState::TimeWait, TcpState::FinWait2], |s| {
        if s.is_timewait() {
            v.push(s);
        }
    })?;
    Ok(v)
}

/// The namespace's timewait sockets that pass the family and port filters.
pub fn timewait_sockets(ports: &PortFilter) -> Result<Vec<DiagSocket>, DiagError> {
    let mut socks = dump_timewait()?;
    socks.retain(|s| ports.accepts(s.family(), s.lport, s.rport));
    Ok(socks)
}

/// Offset of `idiag_expires` in a netlink message carrying `struct
/// inet_diag_msg` (`include/uapi/linux/inet_diag.h)`: 16-byte netlink header,
/// then family, state, timer, retrans (4 bytes) and the 48-byte socket id.
const EXPIRES_OFFSET: usize = 16 + 4 + 48;

/// The timer's expiry in ms. Read from the raw message: the crate's parsed
/// `Timer::TimeWait` carries no expiry, and TIME_WAIT's is the one we need.
fn raw_expires_ms(msg: &[u8], has_timer: bool) -> Option<u32> {
    if !has_timer {
        return None;
    }
    let b = msg.get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        time::{Duration, Instant},
    };

    use super::*;

    /// sock_diag needs no privilege to list this namespace's sockets: make a
    /// real CLOSE_WAIT and a real timewait socket on loopback and find them.
    #[test]
    fn finds_real_close_wait_and_timewait_sockets() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(b"x").unwrap();
        drop(c); // client closes first: server socket -> CLOSE_WAIT
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let cw = dump(&[TcpState::CloseWait]).unwrap();
            if let Some(d) = cw.into_iter().find(|d| d.lport == port) {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "no CLOSE_WAIT socket on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(found.state, Some(TcpState::CloseWait));
        assert!(found.inode != 0);
        assert!(
            found.recv_queue >= 1,
            "unread byte + FIN: {}",
            found.recv_queue
        );
        let mut buf = [0u8; 8];
        while s.read(&mut buf).unwrap() > 0 {}
        drop(s);
        // The client did the active close: its side becomes a timewait socket.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tw = dump_timewait().unwrap();
            if let Some(t) = tw.iter().find(|t| t.rport == port) {
                assert_eq!(t.state, Some(TcpState::TimeWait));
                assert_eq!(t.inode, 0);
                let left = t.timer_expires_ms.unwrap();
                assert!(left > 50_000 && left <= 60_000, "timer {left} ms");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no timewait socket to port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An exact lookup finds a live connection by its 4-tuple, from either
    /// end, and finds nothing for a tuple no socket holds.
    #[test]
    fn held_tuples_finds_live_connections_only() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let tuple_of =
            |a: std::net::SocketAddr, b: std::net::SocketAddr| (a.ip(), a.port(), b.ip(), b.port());
        let client = tuple_of(c.local_addr().unwrap(), c.peer_addr().unwrap());
        let server = tuple_of(s.local_addr().unwrap(), s.peer_addr().unwrap());
        // The client's tuple with a port nobody uses.
        let unheld = (client.0, client.1, client.2, 9);
        assert_eq!(
            held_tuples(&[client, unheld, server]).unwrap(),
            vec![true, false, true]
        );
        assert!(held_tuples(&[]).unwrap().is_empty());
    }
}
