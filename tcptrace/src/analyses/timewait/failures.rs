//! Failed `bind()` (EADDRINUSE) and `connect()` (EADDRNOTAVAIL) calls,
//! caught in the caller's context and explained at once with a fresh look
//! at what holds the port or the destination in the caller's namespace.

use std::{collections::HashSet, net::IpAddr};

use tcptrace_common::TcpState;

use super::{LIVE_STATES, Timewait, push_json, space::warn};
use crate::{
    analyses::Cx,
    host::{procs, sockdiag::Diag},
    kernel::clock::monotonic_ns,
    model::{
        event::{FailedCall, Failure},
        socket::{DiagSocket, canonical_tuple},
        timewait::{
            advice::{BindFacts, ConnectFacts},
            spaces::Place,
        },
    },
};

/// The timewait and the live sockets of namespace `place` bound to `port`
/// (on `addr`, or any address when either side is a wildcard), as its
/// sock_diag socket shows them now.
fn sockets_on(
    cx: &mut Cx<'_>,
    place: Place,
    addr: IpAddr,
    port: u16,
) -> (Vec<DiagSocket>, Vec<DiagSocket>) {
    let matches = |s: &DiagSocket| {
        s.lport == port && (addr.is_unspecified() || s.local.is_unspecified() || s.local == addr)
    };
    let tw = cx.diag(place, Diag::dump_timewait).map_or_else(
        |e| {
            warn("sock_diag dump for a failed bind", place, &e);
            Vec::new()
        },
        |v| v.into_iter().filter(|s| matches(s)).collect(),
    );
    let mut live = Vec::new();
    if let Err(e) = cx.diag(place, |d| {
        d.dump_with(&LIVE_STATES, |s| {
            if !s.is_timewait() && matches(&s) {
                live.push(s);
            }
        })
    }) {
        warn(
            "sock_diag dump of live sockets for a failed bind",
            place,
            &e,
        );
    }
    (tw, live)
}

impl Timewait {
    /// A failed call in namespace `place`.
    pub(super) fn on_failure(&mut self, cx: &mut Cx<'_>, place: Place, f: &Failure) {
        let Some((addr, port)) = f.addr else {
            log::warn!(
                "{}() by pid {} failed with {} but its address was unreadable",
                f.call.syscall(),
                f.owner.pid,
                f.call.errno()
            );
            return;
        };
        match f.call {
            FailedCall::BindInUse => self.on_bind_failure(cx, place, f, addr, port),
            FailedCall::ConnectNoPort => self.on_connect_failure(cx, place, f, addr, port),
        }
    }

    /// Explain a failed bind with what holds the port right now; one
    /// over the rate of lookups is only counted, as unexplained.
    fn on_bind_failure(
        &mut self,
        cx: &mut Cx<'_>,
        place: Place,
        f: &Failure,
        addr: IpAddr,
        port: u16,
    ) {
        let key = (f.owner.pid, port);
        let now = monotonic_ns();
        let space = Self::space(&mut self.spaces, cx, place);
        if let Some(b) = space.binds.touch_existing(&key, now) {
            b.count += 1;
            return;
        }
        if !self.lookups.take(now) {
            space.unexplained += 1;
            return;
        }
        let (tw, live) = sockets_on(cx, place, addr, port);
        let time_wait = tw
            .iter()
            .filter(|s| s.state == Some(TcpState::TimeWait))
            .count() as u64;
        let fin_wait2 = tw.len() as u64 - time_wait;
        // Socket inodes are unique across namespaces: one /proc scan finds
        // the holders wherever they run.
        let inodes: HashSet<u64> = live.iter().map(|s| u64::from(s.inode)).collect();
        let holders = procs::socket_holders(&inodes);
        let holder = |s: &DiagSocket| {
            holders
                .get(&u64::from(s.inode))
                .map(|h| (h.pid, h.comm.to_string()))
        };
        let mut listeners: Vec<(u32, String)> = live.iter().filter_map(holder).collect();
        listeners.sort();
        listeners.dedup();
        if self.json {
            let v = self.times.bind_failure_json(
                f,
                place,
                (addr, port),
                (time_wait, fin_wait2),
                &live,
                holder,
            );
            push_json(cx, &v);
        } else {
            let text = self.times.bind_failure_text(
                f,
                cx.foreign(place),
                (addr, port),
                (time_wait, fin_wait2),
                live.len(),
                &listeners,
            );
            cx.out.extend_from_slice(text.as_bytes());
        }
        let facts = BindFacts {
            pid: f.owner.pid,
            comm: f.owner.comm.clone(),
            port,
            count: 1,
            time_wait,
            listeners,
        };
        if let Some(space) = self.spaces.get_mut(place) {
            space.binds.touch(key, now, || facts);
        }
    }

    /// Explain a failed connect with the census of its destination in its
    /// namespace now; one over the rate of lookups is only counted, as
    /// unexplained.
    fn on_connect_failure(
        &mut self,
        cx: &mut Cx<'_>,
        place: Place,
        f: &Failure,
        addr: IpAddr,
        port: u16,
    ) {
        let dest = canonical_tuple((addr, 0, addr, 0)).0;
        let key = (f.owner.pid, dest, port);
        let now = monotonic_ns();
        let space = Self::space(&mut self.spaces, cx, place);
        if let Some(c) = space.connects.touch_existing(&key, now) {
            c.count += 1;
            return;
        }
        space.connects.touch(key, now, || ConnectFacts {
            pid: f.owner.pid,
            comm: f.owner.comm.clone(),
            dest: (dest, port),
            count: 1,
        });
        if !self.lookups.take(now) {
            space.unexplained += 1;
            return;
        }
        // A fresh look, as of the failure.
        space.poll_timewait(cx, place, &self.ports);
        space.count_live(cx, place);
        let snap = space.snapshot();
        let groups = snap.destination(dest, port);
        if self.json {
            let v = self
                .times
                .connect_failure_json(f, place, (dest, port), &groups);
            push_json(cx, &v);
        } else {
            let line = self
                .times
                .connect_failure_text(f, cx.foreign(place), (dest, port), &groups);
            cx.out.extend_from_slice(line.as_bytes());
        }
    }
}
