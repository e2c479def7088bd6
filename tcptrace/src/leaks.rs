//! CLOSE_WAIT leak reports: which sockets count as leaks, how they group by
//! process and code path, and how a report reads (text and JSON). Pure: the
//! runtime in `leakmode` feeds it sockets and resolved stacks.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use serde::Serialize;

use crate::{output::human_duration, symbolize::Stack};

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
}

/// Process details for a group's header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub cmdline: Option<String>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointCount {
    pub local: String,
    pub remote: String,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ages {
    pub min_s: f64,
    pub p50_s: f64,
    pub max_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Classes {
    pub never_read_to_eof: usize,
    pub read_eof_not_closed: usize,
}

/// Sockets of one process that share a code path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub count: usize,
    pub oldest_age_s: f64,
    /// Some socket's age is only a lower bound (it predates the tracer).
    pub age_lower_bound: bool,
    pub ages: Ages,
    pub classes: Classes,
    /// Sum of known Recv-Q bytes.
    pub unread_bytes: u64,
    pub endpoints: Vec<EndpointCount>,
    /// Where the owner read EOF; empty when it never did.
    pub eof_stack: Vec<crate::symbolize::Frame>,
    pub eof_stack_truncated: bool,
    /// Where the owner first touched the socket (its first recv/send);
    /// empty when not captured.
    pub first_stack: Vec<crate::symbolize::Frame>,
    pub first_stack_truncated: bool,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Group leaking sockets by process and code path (the EOF stack and the
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
            .map(|((l, lport, r), count)| EndpointCount {
                local: endpoint(l, lport),
                remote: r.to_string(),
                count,
            })
            .collect();
        endpoints.sort_by(|a, b| (&a.local, &a.remote).cmp(&(&b.local, &b.remote)));
        endpoints.sort_by_key(|e| std::cmp::Reverse(e.count));
        endpoints.truncate(5);
        let eof = self.eof_stack.as_deref();
        let first = self.first_stack.as_deref();
        Group {
            pid: self.pid,
            comm: self.comm,
            process: self.pid.map(info).unwrap_or_default(),
            count: n,
            oldest_age_s: secs(oldest),
            age_lower_bound: self.age_lower_bound,
            ages: Ages {
                min_s: secs(age(0)),
                p50_s: secs(age(n / 2)),
                max_s: secs(oldest),
            },
            classes: self.classes,
            unread_bytes: self.unread_bytes,
            endpoints,
            eof_stack_truncated: eof.is_some_and(|s| s.truncated),
            eof_stack: eof.map(|s| s.frames.clone()).unwrap_or_default(),
            first_stack_truncated: first.is_some_and(|s| s.truncated),
            first_stack: first.map(|s| s.frames.clone()).unwrap_or_default(),
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
    /// By (pid, EOF stack, first stack) identity; merged by code path in
    /// [`Grouper::finish`]. The `Acc` keeps its stacks alive, so an identity
    /// is never reused while it is a key.
    groups: HashMap<(Option<u32>, usize, usize), Acc>,
}

impl Grouper {
    pub fn add(&mut self, s: LeakSocket) {
        let key = (
            s.pid,
            stack_id(s.eof_stack.as_ref()),
            stack_id(s.first_stack.as_ref()),
        );
        self.groups.entry(key).or_default().add(s);
    }

    /// The groups by process and code path, largest first.
    pub fn finish(self, mut info: impl FnMut(u32) -> ProcessInfo) -> Vec<Group> {
        type Key = (Option<u32>, Vec<String>, Vec<String>);
        let path = |s: Option<&Arc<Stack>>| s.map(|s| s.path()).unwrap_or_default();
        let mut by_path: BTreeMap<Key, Acc> = BTreeMap::new();
        for acc in self.groups.into_values() {
            let key = (
                acc.pid,
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

/// One JSON line per group per report.
#[derive(Serialize)]
pub struct JsonGroup<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// RFC 3339 time of the report.
    pub report_time: &'a str,
    /// `"interval"` or `"final"`.
    pub report: &'static str,
    pub min_age_s: f64,
    #[serde(flatten)]
    pub group: &'a Group,
}

fn write_stack(out: &mut String, title: &str, frames: &[crate::symbolize::Frame], truncated: bool) {
    if frames.is_empty() {
        return;
    }
    let _ = writeln!(out, "    {title}:");
    for f in frames {
        let name = f.function.as_deref().map_or_else(
            || format!("{:#x}", f.addr),
            |n| format!("{n}+{:#x}", f.offset),
        );
        let module = f
            .module
            .as_deref()
            .and_then(|m| m.rsplit('/').next())
            .unwrap_or("?");
        let _ = write!(out, "      {name:<40} {module}");
        if let (Some(file), Some(line)) = (&f.file, f.line) {
            let _ = write!(out, "  {file}:{line}");
        }
        if f.recovered {
            let _ = write!(
                out,
                "  [caller of a frameless syscall wrapper, from the user sp]"
            );
        }
        out.push('\n');
    }
    if truncated {
        let _ = writeln!(
            out,
            "      ... may be incomplete: the walk ended in a frame without frame pointers or symbols \
             (build the program with -fno-omit-frame-pointer for whole paths)"
        );
    }
}

/// A text report for people.
#[must_use]
pub fn render_text(groups: &[Group], when: &str, min_age: Duration, final_report: bool) -> String {
    let total: usize = groups.iter().map(|g| g.count).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} CLOSE_WAIT leaks at {when} (older than {}): {total} sockets in {} groups",
        if final_report {
            "Final report:"
        } else {
            "Report:"
        },
        humantime::format_duration(min_age),
        groups.len()
    );
    for g in groups {
        let who = match (g.pid, &g.comm) {
            (Some(pid), Some(comm)) => format!("pid {pid} ({comm})"),
            (Some(pid), None) => format!("pid {pid}"),
            _ => "owner unknown (no process holds the socket)".to_owned(),
        };
        let _ = writeln!(out, "\n  {who}: {} sockets in CLOSE_WAIT", g.count);
        if let Some(c) = &g.process.cmdline {
            let _ = writeln!(out, "    cmdline: {c}");
        }
        if let Some(c) = &g.process.cgroup {
            let _ = write!(out, "    cgroup: {c}");
            if let Some(id) = &g.process.container_id {
                let _ = write!(out, "  container: {}", &id[..12.min(id.len())]);
            }
            out.push('\n');
        }
        let ge = if g.age_lower_bound { ">= " } else { "" };
        let _ = writeln!(
            out,
            "    age: oldest {ge}{}, min {}, median {}, max {ge}{}{}",
            human_duration(Duration::from_secs_f64(g.oldest_age_s)),
            human_duration(Duration::from_secs_f64(g.ages.min_s)),
            human_duration(Duration::from_secs_f64(g.ages.p50_s)),
            human_duration(Duration::from_secs_f64(g.ages.max_s)),
            if g.age_lower_bound {
                " (some sockets predate tcptrace: their age is a lower bound)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "    {} read EOF but never closed, {} never read to EOF; {} unread bytes queued",
            g.classes.read_eof_not_closed, g.classes.never_read_to_eof, g.unread_bytes
        );
        for e in &g.endpoints {
            let _ = writeln!(out, "    {} <- {} ({} sockets)", e.local, e.remote, e.count);
        }
        write_stack(&mut out, "read EOF at", &g.eof_stack, g.eof_stack_truncated);
        write_stack(
            &mut out,
            "first touched at",
            &g.first_stack,
            g.first_stack_truncated,
        );
        if g.eof_stack.is_empty() && g.first_stack.is_empty() {
            let _ = writeln!(
                out,
                "    code path: not captured (the socket predates tcptrace, or its stack map was full)"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::symbolize::Frame;

    fn frame(f: &str) -> Frame {
        Frame {
            function: Some(f.to_owned()),
            addr: 0x1000,
            offset: 4,
            module: Some("/srv/leaky".into()),
            file: None,
            line: None,
            recovered: false,
        }
    }

    fn stack(fs: &[&str]) -> Stack {
        Stack {
            frames: fs.iter().map(|f| frame(f)).collect(),
            truncated: false,
        }
    }

    fn sock(pid: u32, age: u64, eof: Option<&[&str]>, first: &[&str], rport: u16) -> LeakSocket {
        LeakSocket {
            pid: Some(pid),
            comm: Some("leaky".into()),
            local: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lport: 8080,
            remote: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            rport,
            age: Duration::from_secs(age),
            age_lower_bound: false,
            class: LeakClass::classify(Some(eof.is_some()), None),
            recv_queue: Some(1),
            eof_stack: eof.map(|e| Arc::new(stack(e))),
            first_stack: Some(Arc::new(stack(first))),
        }
    }

    #[test]
    fn classification_prefers_what_the_kernel_saw() {
        assert_eq!(
            LeakClass::classify(Some(true), Some(5)),
            LeakClass::ReadEofNotClosed
        );
        assert_eq!(
            LeakClass::classify(Some(false), Some(0)),
            LeakClass::NeverReadToEof
        );
        assert_eq!(
            LeakClass::classify(None, Some(0)),
            LeakClass::ReadEofNotClosed
        );
        assert_eq!(
            LeakClass::classify(None, Some(1)),
            LeakClass::NeverReadToEof
        );
        assert_eq!(LeakClass::classify(None, None), LeakClass::NeverReadToEof);
    }

    #[test]
    fn groups_by_pid_and_code_path_with_exact_counts() {
        let eof_path: &[&str] = &["recv", "eof_handler", "main"];
        let mut socks = Vec::new();
        for i in 0..3 {
            socks.push(sock(
                10,
                20 + i,
                Some(eof_path),
                &["recv", "eof_handler", "main"],
                5000 + u16::try_from(i).unwrap(),
            ));
        }
        for i in 0..2 {
            socks.push(sock(
                10,
                30 + i,
                None,
                &["recv", "noread_handler", "main"],
                6000 + u16::try_from(i).unwrap(),
            ));
        }
        socks.push(sock(
            11,
            50,
            None,
            &["recv", "noread_handler", "main"],
            7000,
        ));
        let groups = group(socks, |_| ProcessInfo::default());
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].count, 3);
        assert_eq!(groups[0].classes.read_eof_not_closed, 3);
        assert_eq!(
            groups[0].eof_stack[1].function.as_deref(),
            Some("eof_handler")
        );
        assert!((groups[0].ages.min_s - 20.0).abs() < 1e-9);
        assert!((groups[0].ages.p50_s - 21.0).abs() < 1e-9);
        assert!((groups[0].oldest_age_s - 22.0).abs() < 1e-9);
        assert_eq!(groups[0].endpoints.len(), 1, "remote ports aggregate");
        assert_eq!(groups[0].endpoints[0].count, 3);
        assert_eq!(groups[1].count, 2);
        assert_eq!(groups[1].classes.never_read_to_eof, 2);
        assert!(groups[1].eof_stack.is_empty());
        assert_eq!(groups[2].pid, Some(11));
    }

    #[test]
    fn shared_and_equal_stacks_group_together_one_socket_at_a_time() {
        let shared = Arc::new(stack(&["recv", "handler", "main"]));
        let mut g = Grouper::default();
        for i in 0..4 {
            let mut s = sock(10, 5 + i, None, &[], 40_000);
            s.first_stack = Some(Arc::clone(&shared));
            g.add(s);
        }
        // Symbolized apart (another stack id), the same code path.
        let mut s = sock(10, 1, None, &[], 40_001);
        s.first_stack = Some(Arc::new(stack(&["recv", "handler", "main"])));
        g.add(s);
        let groups = g.finish(|_| ProcessInfo::default());
        assert_eq!(groups.len(), 1, "{groups:?}");
        let g = &groups[0];
        assert_eq!(g.count, 5);
        assert!((g.ages.min_s - 1.0).abs() < 1e-9);
        assert!((g.ages.p50_s - 6.0).abs() < 1e-9);
        assert!((g.oldest_age_s - 8.0).abs() < 1e-9);
        assert_eq!(g.unread_bytes, 5);
        assert_eq!(g.classes.never_read_to_eof, 5);
        assert_eq!(g.endpoints.len(), 1);
        assert_eq!(g.endpoints[0].count, 5);
        assert_eq!(g.first_stack[1].function.as_deref(), Some("handler"));
    }

    #[test]
    fn json_group_has_the_documented_keys() {
        let g = group(
            vec![sock(10, 12, Some(&["recv", "h"]), &["recv", "h"], 1)],
            |_| ProcessInfo {
                cmdline: Some("./leaky --port 8080".into()),
                ..ProcessInfo::default()
            },
        );
        let v = serde_json::to_value(JsonGroup {
            kind: "closewait_leak",
            report_time: "t",
            report: "final",
            min_age_s: 10.0,
            group: &g[0],
        })
        .unwrap();
        for key in [
            "pid",
            "comm",
            "count",
            "oldest_age_s",
            "eof_stack",
            "first_stack",
            "endpoints",
            "cmdline",
            "classes",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["eof_stack"][1]["function"], "h");
        assert_eq!(v["count"], 1);
    }

    #[test]
    fn text_names_process_path_and_truncation() {
        let mut s = sock(10, 12, Some(&["__libc_recv", "eof_handler"]), &["x"], 1);
        if let Some(st) = s.eof_stack.as_mut().map(Arc::make_mut) {
            st.truncated = true;
            st.frames[1].recovered = true;
        }
        s.age_lower_bound = true;
        let text = render_text(
            &group(vec![s], |_| ProcessInfo::default()),
            "now",
            Duration::from_secs(10),
            true,
        );
        assert!(text.contains("pid 10 (leaky)"), "{text}");
        assert!(text.contains("eof_handler+0x4"), "{text}");
        assert!(text.contains("frameless syscall wrapper"), "{text}");
        assert!(text.contains("may be incomplete"), "{text}");
        assert!(text.contains(">= 12.000s"), "{text}");
        assert!(text.starts_with("Final report:"), "{text}");
    }
}
