//! Leak grouping tests: classification, and groups by process and code path.

use std::net::Ipv4Addr;

use super::*;

pub(crate) fn frame(f: &str) -> Frame {
    Frame {
        function: Some(f.to_owned()),
        addr: 0x1000,
        offset: 4,
        module: Some("/srv/leaky".into()),
        file: None,
        line: None,
        recovered: false,
        skipped: None,
    }
}

pub(crate) fn stack(fs: &[&str]) -> Stack {
    Stack {
        frames: fs.iter().map(|f| frame(f)).collect(),
        truncated: false,
    }
}

pub(crate) fn sock(
    pid: u32,
    age: u64,
    eof: Option<&[&str]>,
    first: &[&str],
    rport: u16,
) -> LeakSocket {
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
        netns: None,
        cgroup_id: None,
    }
}

/// One process's sockets in two namespaces are two groups, each with its
/// namespace; the cgroup id the kernel noted is kept for the container.
#[test]
fn a_namespace_is_part_of_a_group() {
    use crate::model::netns::Netns;
    let mut a = sock(10, 30, Some(&["eof"]), &["x"], 1);
    a.netns = Some(Netns(7));
    a.cgroup_id = Some(99);
    let mut b = sock(10, 40, Some(&["eof"]), &["x"], 2);
    b.netns = Some(Netns(8));
    let mut c = sock(10, 50, Some(&["eof"]), &["x"], 3);
    c.netns = Some(Netns(7));
    let groups = group(vec![a, b, c], |_| ProcessInfo::default());
    assert_eq!(groups.len(), 2);
    assert_eq!((groups[0].netns, groups[0].count), (Some(7), 2));
    assert_eq!(groups[0].cgroup_id, Some(99));
    assert_eq!((groups[1].netns, groups[1].count), (Some(8), 1));
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
    assert_eq!(groups[0].ages.min, Duration::from_secs(20));
    assert_eq!(groups[0].ages.p50, Duration::from_secs(21));
    assert_eq!(groups[0].oldest_age, Duration::from_secs(22));
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
    assert_eq!(g.ages.min, Duration::from_secs(1));
    assert_eq!(g.ages.p50, Duration::from_secs(6));
    assert_eq!(g.oldest_age, Duration::from_secs(8));
    assert_eq!(g.unread_bytes, 5);
    assert_eq!(g.classes.never_read_to_eof, 5);
    assert_eq!(g.endpoints.len(), 1);
    assert_eq!(g.endpoints[0].count, 5);
    assert_eq!(g.first_stack[1].function.as_deref(), Some("handler"));
}
