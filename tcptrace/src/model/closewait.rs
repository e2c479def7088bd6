//! CLOSE_WAIT leaks: which sockets count as leaks, and how they group by
//! process and code path. Pure: the leak analysis feeds it sockets and
//! resolved stacks.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use crate::model::{
    netns::Netns,
    stack::{Frame, Stack},
};

/// The two shapes of a CLOSE_WAIT leak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeakClass {
    /// Unread bytes are still queued, or the FIN was never consumed: the
    /// program stopped reading before EOF.
    NeverReadToEof,
    /// The program's recv returned 0 (EOF) and it kept the socket.
    ReadEofNotClosed,
}

impl LeakClass {
    /// Classify from what the kernel program saw (EOF read or not), or, for
    /// sockets older than the tracer, from sock_diag's Recv-Q: an unconsumed
    /// FIN counts one byte there. Recv-Q 0 means the FIN was consumed, which
    /// a `recv` that returned the data before it also does (`tcp_recvmsg` eats
    /// a FIN that ends the data it copies): for those sockets "read EOF"
    /// means the FIN was consumed, not that the program saw `recv` return 0.
    #[must_use]
    pub fn classify(eof_seen: Option<bool>, recv_queue: Option<u32>) -> Self {
        match (eof_seen, recv_queue) {
            (Some(true), _) | (None, Some(0)) => LeakClass::ReadEofNotClosed,
            _ => LeakClass::NeverReadToEof,
        }
    }
}

/// One socket in CLOSE_WAIT past the minimum age.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakSocket {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub local: IpAddr,
    pub lport: u16,
    pub remote: IpAddr,
    pub rport: u16,
    pub age: Duration,
    /// The socket predates the tracer: `age` is only a lower bound.
    pub age_lower_bound: bool,
    pub class: LeakClass,
    /// Unread bytes (sock_diag Recv-Q), when known.
    pub recv_queue: Option<u32>,
    /// Shared: thousands of sockets of one leak have the same stacks.
    pub eof_stack: Option<Arc<Stack>>,
    pub first_stack: Option<Arc<Stack>>,
    /// The socket's network namespace, when known.
    pub netns: Option<Netns>,
    /// The owner's cgroup v2 id, as the kernel noted it with the owner.
    pub cgroup_id: Option<u64>,
}

/// Process details for a group's header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub cmdline: Option<String>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// The pid as the process's own pid namespace numbers it (`NSpid`),
    /// when that is not the host pid.
    pub nspid: Option<u32>,
}

/// Sockets of a group between one local address and port and one remote
/// address (remote ports are ephemeral, aggregated away).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointCount {
    pub local: IpAddr,
    pub lport: u16,
    pub remote: IpAddr,
    pub count: usize,
}

/// Ages in CLOSE_WAIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ages {
    pub min: Duration,
    pub p50: Duration,
    pub max: Duration,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classes {
    pub never_read_to_eof: usize,
    pub read_eof_not_closed: usize,
}

/// Sockets of one process that share a code path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The sockets' network namespace inode; None when unknown.
    pub netns: Option<u32>,
    /// The owner's cgroup v2 id, for naming its container after it exited.
    pub cgroup_id: Option<u64>,
    pub process: ProcessInfo,
    pub count: usize,
    pub oldest_age: Duration,
    /// Some socket's age is only a lower bound (it predates the tracer).
    pub age_lower_bound: bool,
    pub ages: Ages,
    pub classes: Classes,
    /// Sum of known Recv-Q bytes.
    pub unread_bytes: u64,
    pub endpoints: Vec<EndpointCount>,
    /// Where the owner read EOF; empty when it never did.
    pub eof_stack: Vec<Frame>,
    pub eof_stack_truncated: bool,
    /// Where the owner first touched the socket (its first recv/send);
    /// empty when not captured.
    pub first_stack: Vec<Frame>,
    pub first_stack_truncated: bool,
    /// What the reader should know about the owner's stacks (a JVM that
    /// hides its Java frames, say).
    pub notes: Vec<String>,
}

/// Group leaking sockets by process, namespace and code path (the EOF stack and the
/// first-touch stack), largest groups first. `info` looks up process details.
pub fn group(sockets: Vec<LeakSocket>, info: impl FnMut(u32) -> ProcessInfo) -> Vec<Group> {
    let mut g = Grouper::default();
    for s in sockets {
        g.add(s);
    }
    g.finish(info)
}

/// What a group keeps of its sockets: per socket only its age, the rest as
/// sums and counts, so that 100k leaking sockets cost 16 bytes each.
#[derive(Default)]
struct Acc {
    pid: Option<u32>,
    comm: Option<String>,
    netns: Option<Netns>,
    cgroup_id: Option<u64>,
    ages: Vec<Duration>,
    age_lower_bound: bool,
    classes: Classes,
    unread_bytes: u64,
    /// (local address, local port, remote address): remote ports are
    /// ephemeral, aggregated away.
    endpoints: BTreeMap<(IpAddr, u16, IpAddr), usize>,
    eof_stack: Option<Arc<Stack>>,
    first_stack: Option<Arc<Stack>>,
}

impl Acc {
    fn add(&mut self, s: LeakSocket) {
        if self.ages.is_empty() {
            self.pid = s.pid;
        }
        if self.comm.is_none() {
            self.comm = s.comm;
        }
        self.netns = self.netns.or(s.netns);
        self.cgroup_id = self.cgroup_id.or(s.cgroup_id);
        self.ages.push(s.age);
        self.age_lower_bound |= s.age_lower_bound;
        match s.class {
            LeakClass::NeverReadToEof => self.classes.never_read_to_eof += 1,
            LeakClass::ReadEofNotClosed => self.classes.read_eof_not_closed += 1,
        }
        self.unread_bytes += s.recv_queue.map_or(0, u64::from);
        *self
            .endpoints
            .entry((s.local, s.lport, s.remote))
            .or_default() += 1;
        if self.eof_stack.is_none() {
            self.eof_stack = s.eof_stack;
        }
        if self.first_stack.is_none() {
            self.first_stack = s.first_stack;
        }
    }

    fn merge(&mut self, mut o: Acc) {
        if self.ages.is_empty() {
            self.pid = o.pid;
        }
        if self.comm.is_none() {
            self.comm = o.comm.take();
        }
        self.netns = self.netns.or(o.netns);
        self.cgroup_id = self.cgroup_id.or(o.cgroup_id);
        self.ages.append(&mut o.ages);
        self.age_lower_bound |= o.age_lower_bound;
        self.classes.never_read_to_eof += o.classes.never_read_to_eof;
        self.classes.read_eof_not_closed += o.classes.read_eof_not_closed;
        self.unread_bytes += o.unread_bytes;
        for (k, n) in o.endpoints {
            *self.endpoints.entry(k).or_default() += n;
        }
        if self.eof_stack.is_none() {
            self.eof_stack = o.eof_stack;
        }
        if self.first_stack.is_none() {
            self.first_stack = o.first_stack;
        }
    }

    fn into_group(mut self, info: &mut impl FnMut(u32) -> ProcessInfo) -> Group {
        self.ages.sort_unstable();
        let n = self.ages.len();
        let age = |i: usize| self.ages.get(i).copied().unwrap_or_default();
        let oldest = age(n.saturating_sub(1));
        let mut endpoints: Vec<EndpointCount> = self
            .endpoints
            .into_iter()
            .map(|((local, lport, remote), count)| EndpointCount {
                local,
                lport,
                remote,
                count,
            })
            .collect();
        // Largest first; the map's order (address, port, remote) among equals.
        endpoints.sort_by_key(|e| std::cmp::Reverse(e.count));
        endpoints.truncate(5);
        let eof = self.eof_stack.as_deref();
        let first = self.first_stack.as_deref();
        Group {
            pid: self.pid,
            comm: self.comm,
            netns: self.netns.map(|n| n.0),
            cgroup_id: self.cgroup_id,
            process: self.pid.map(info).unwrap_or_default(),
            count: n,
            oldest_age: oldest,
            age_lower_bound: self.age_lower_bound,
            ages: Ages {
                min: age(0),
                p50: age(n / 2),
                max: oldest,
            },
            classes: self.classes,
            unread_bytes: self.unread_bytes,
            endpoints,
            eof_stack_truncated: eof.is_some_and(|s| s.truncated),
            eof_stack: eof.map(|s| s.frames.clone()).unwrap_or_default(),
            first_stack_truncated: first.is_some_and(|s| s.truncated),
            first_stack: first.map(|s| s.frames.clone()).unwrap_or_default(),
            notes: Vec::new(),
        }
    }
}

/// Identity of a shared stack (0 for none): sockets whose stacks are the
/// same `Arc` group without comparing frames.
fn stack_id(s: Option<&Arc<Stack>>) -> usize {
    s.map_or(0, |s| Arc::as_ptr(s) as usize)
}

/// Groups leaking sockets as they come, one at a time: a report over 100k
/// sockets never holds them all.
#[derive(Default)]
pub struct Grouper {
    /// By (pid, namespace, EOF stack, first stack) identity; merged by code path in
    /// [`Grouper::finish`]. The `Acc` keeps its stacks alive, so an identity
    /// is never reused while it is a key.
    groups: HashMap<(Option<u32>, Option<Netns>, usize, usize), Acc>,
}

impl Grouper {
    pub fn add(&mut self, s: LeakSocket) {
        let key = (
            s.pid,
            s.netns,
            stack_id(s.eof_stack.as_ref()),
            stack_id(s.first_stack.as_ref()),
        );
        self.groups.entry(key).or_default().add(s);
    }

    /// The groups by process and code path, largest first.
    pub fn finish(self, mut info: impl FnMut(u32) -> ProcessInfo) -> Vec<Group> {
        type Key = (Option<u32>, Option<Netns>, Vec<String>, Vec<String>);
        let path = |s: Option<&Arc<Stack>>| s.map(|s| s.path()).unwrap_or_default();
        let mut by_path: BTreeMap<Key, Acc> = BTreeMap::new();
        for acc in self.groups.into_values() {
            let key = (
                acc.pid,
                acc.netns,
                path(acc.eof_stack.as_ref()),
                path(acc.first_stack.as_ref()),
            );
            match by_path.get_mut(&key) {
                Some(a) => a.merge(acc),
                None => {
                    by_path.insert(key, acc);
                }
            }
        }
        let mut out: Vec<Group> = by_path
            .into_values()
            .map(|a| a.into_group(&mut info))
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests;
