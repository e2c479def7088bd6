//! sock_diag (netlink `INET_DIAG`) dumps of TCP sockets by state, through the
//! rust-netlink crates. Used for sockets older than the tracer, for the inode
//! that ties a socket to its owner's fd, and for Recv-Q.
//!
//! A netlink socket answers for the network namespace it was made in, for
//! as long as it lives: [`Diag::here`] makes one in the calling thread's
//! namespace (`host::netns` makes them in other namespaces). The free
//! functions ([`dump`], [`held_tuples`], ...) each make a [`Diag`] of their
//! own, in tcptrace's namespace.

mod raw;
#[cfg(test)]
mod tests;

use std::{
    cell::Cell,
    fmt, io,
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicU64, Ordering},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use tcptrace_common::TcpState;
use thiserror::Error;

use self::raw::{NLMSG_HEADER_LEN, diag_socket, raw_header};
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

/// A sock_diag netlink socket, bound and connected to the kernel, and the
/// network namespace it was made in, which every request answers for.
///
/// Requests go one at a time (`Diag` is `Send`, not `Sync`); each carries a
/// sequence number of its own, and replies to another number are skipped.
/// A dump that stopped before its end (an error, a visitor that panicked)
/// is read to its end before the next request: the kernel refuses a new
/// dump on a socket with one still running.
pub struct Diag {
    socket: Socket,
    /// The last request's sequence number.
    seq: Cell<u32>,
    /// The sequence number of a dump whose replies were not all read.
    unfinished: Cell<Option<u32>>,
}

impl fmt::Debug for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Diag")
            .field("fd", &self.socket.as_raw_fd())
            .field("seq", &self.seq.get())
            .finish_non_exhaustive()
    }
}

impl Diag {
    /// A socket in the calling thread's network namespace. A failure is
    /// counted in [`failed_requests`].
    pub fn here() -> Result<Diag, DiagError> {
        counted(Self::open())
    }

    fn open() -> Result<Diag, DiagError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Diag {
            socket,
            seq: Cell::new(0),
            unfinished: Cell::new(None),
        })
    }

    /// Dump TCP sockets (IPv4 and IPv6) in any of `states`.
    pub fn dump(&self, states: &[TcpState]) -> Result<Vec<DiagSocket>, DiagError> {
        let mut out = Vec::new();
        self.dump_with(states, |d| out.push(d))?;
        Ok(out)
    }

    /// Dump TCP sockets (IPv4 and IPv6) in any of `states`, handing each to
    /// `visit` as it is parsed: with 100k sockets, nothing is kept that the
    /// caller does not keep.
    pub fn dump_with(
        &self,
        states: &[TcpState],
        mut visit: impl FnMut(DiagSocket),
    ) -> Result<(), DiagError> {
        let mut flags = StateFlags::empty();
        for s in states {
            flags |= StateFlags::from_bits_retain(1 << (*s as u32));
        }
        for family in [AF_INET, AF_INET6] {
            counted(self.dump_family(family, flags.clone(), &mut visit))?;
        }
        Ok(())
    }

    /// Which of `tuples` (either form of a v4 peer: [`canonical_tuple`]) a
    /// TCP socket of the namespace holds now, in any state: one exact
    /// sock_diag lookup each (`inet_diag_find_one_icsk`, the kernel's own
    /// connection lookup), not a dump.
    pub fn held_tuples(&self, tuples: &[Tuple]) -> Result<Vec<bool>, DiagError> {
        counted(self.lookup_tuples(tuples))
    }

    /// The namespace's timewait sockets (substate TIME_WAIT, or FIN_WAIT2
    /// for an orphan): sock_diag shows them with timer 3. Only these two
    /// states are dumped, so a poll stays cheap.
    ///
    /// The FIN_WAIT2 flag also matches every full socket in FIN_WAIT2 (100k
    /// of them in a CLOSE_WAIT leak's peer): they are dropped as they are
    /// parsed.
    pub fn dump_timewait(&self) -> Result<Vec<DiagSocket>, DiagError> {
        let mut v = Vec::new();
        self.dump_with(&[TcpState::TimeWait, TcpState::FinWait2], |s| {
            if s.is_timewait() {
                v.push(s);
            }
        })?;
        Ok(v)
    }

    /// The namespace's timewait sockets that pass the family and port
    /// filters.
    pub fn timewait_sockets(&self, ports: &PortFilter) -> Result<Vec<DiagSocket>, DiagError> {
        let mut socks = self.dump_timewait()?;
        socks.retain(|s| ports.accepts(s.family(), s.lport, s.rport));
        Ok(socks)
    }

    fn dump_family(
        &self,
        family: u8,
        states: StateFlags,
        out: &mut impl FnMut(DiagSocket),
    ) -> Result<(), DiagError> {
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let seq = self.send_request(
            NLM_F_REQUEST | NLM_F_DUMP,
            InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id,
            },
        )?;
        self.unfinished.set(Some(seq));

        let mut rx = Vec::with_capacity(64 * 1024);
        loop {
            rx.clear();
            let n = self.socket.recv(&mut rx, 0)?;
            if n == 0 {
                self.unfinished.set(None);
                return Ok(());
            }
            let mut offset = 0;
            while offset < rx.len() {
                let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..])
                    .map_err(|e| DiagError::Parse(e.to_string()))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == seq {
                    match msg.payload {
                        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                            out(diag_socket(&r.header, &rx[offset..]));
                        }
                        NetlinkPayload::Done(_) => {
                            self.unfinished.set(None);
                            return Ok(());
                        }
                        NetlinkPayload::Error(e) => {
                            self.unfinished.set(None);
                            return Err(DiagError::Kernel(format!("{e:?}")));
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    fn lookup_tuples(&self, tuples: &[Tuple]) -> Result<Vec<bool>, DiagError> {
        let mut rx = Vec::with_capacity(4096);
        tuples
            .iter()
            .map(|t| {
                let (local, lport, remote, rport) = canonical_tuple(*t);
                // A v4 tuple is looked up as AF_INET: the kernel hashes a
                // dual-stack socket's v4-mapped connection the v4 way.
                let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
                let seq = self.send_request(
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
                let msg = loop {
                    rx.clear();
                    self.socket.recv(&mut rx, 0)?;
                    let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx)
                        .map_err(|e| DiagError::Parse(e.to_string()))?;
                    if msg.header.sequence_number == seq {
                        break msg;
                    }
                };
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(_)) => Ok(true),
                    NetlinkPayload::Error(e)
                        if e.raw_code() == -(nix::errno::Errno::ENOENT as i32) =>
                    {
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

    /// Send one request with the next sequence number, which it returns,
    /// after reading the rest of an unfinished dump.
    fn send_request(&self, flags: u16, request: InetRequest) -> Result<u32, DiagError> {
        if let Some(seq) = self.unfinished.get() {
            self.finish_dump(seq)?;
        }
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        self.socket.send(&buf[..], 0)?;
        Ok(seq)
    }

    /// Read replies until dump `seq` ends, looking at their headers only.
    /// Without waiting: the kernel queues a running dump's next datagram
    /// as it hands over the last one, so an empty queue means the end was
    /// already read.
    fn finish_dump(&self, seq: u32) -> Result<(), DiagError> {
        let mut rx = Vec::with_capacity(64 * 1024);
        loop {
            rx.clear();
            match self.socket.recv(&mut rx, libc::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
            let mut offset = 0;
            let mut ended = false;
            while let Some((len, kind, s)) = rx.get(offset..).and_then(raw_header) {
                ended |= s == seq && (kind == NLMSG_DONE || kind == NLMSG_ERROR);
                if len < NLMSG_HEADER_LEN {
                    break;
                }
                offset += len;
            }
            if ended {
                break;
            }
        }
        self.unfinished.set(None);
        Ok(())
    }
}

/// Dump tcptrace's namespace's TCP sockets in any of `states` ([`Diag::dump`]).
pub fn dump(states: &[TcpState]) -> Result<Vec<DiagSocket>, DiagError> {
    Diag::here()?.dump(states)
}

/// [`Diag::dump_with`] in tcptrace's namespace.
pub fn dump_with(states: &[TcpState], visit: impl FnMut(DiagSocket)) -> Result<(), DiagError> {
    Diag::here()?.dump_with(states, visit)
}

/// [`Diag::held_tuples`] in tcptrace's namespace.
pub fn held_tuples(tuples: &[Tuple]) -> Result<Vec<bool>, DiagError> {
    if tuples.is_empty() {
        return Ok(Vec::new());
    }
    Diag::here()?.held_tuples(tuples)
}

/// [`Diag::dump_timewait`] in tcptrace's namespace.
pub fn dump_timewait() -> Result<Vec<DiagSocket>, DiagError> {
    Diag::here()?.dump_timewait()
}

/// [`Diag::timewait_sockets`] in tcptrace's namespace.
pub fn timewait_sockets(ports: &PortFilter) -> Result<Vec<DiagSocket>, DiagError> {
    Diag::here()?.timewait_sockets(ports)
}
