//! Census tests: sides, projections, grouping, closers and rates, on synthetic sockets.

use std::net::Ipv4Addr;

use super::*;

const NS: u64 = 1_000_000_000;

fn sysctls(range: (u16, u16), reuse: u32) -> Sysctls {
    Sysctls {
        port_range: Ok(range),
        reserved_ports: Ok(vec![]),
        tw_reuse: Ok(reuse),
        tw_reuse_delay_ms: Some(Ok(1000)),
        timestamps: Ok(1),
        max_tw_buckets: Ok(262_144),
        fin_timeout_s: Ok(60),
        tw_recycle: None,
    }
}

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn sock(state: TcpState, lport: u16, remote: IpAddr, rport: u16) -> DiagSocket {
    DiagSocket {
        state: Some(state),
        local: ME,
        lport,
        remote,
        rport,
        inode: 0,
        recv_queue: 0,
        send_queue: 0,
        timer_expires_ms: Some(50_000),
        timer: 3,
        cookie: 0,
    }
}

#[test]
fn sides_follow_listeners_then_the_ephemeral_range() {
    let s = sysctls((32768, 60999), 0);
    let mut l = HashSet::new();
    assert_eq!(side(40000, 80, &l, &s), Side::Client);
    assert_eq!(side(8080, 40000, &l, &s), Side::Server);
    assert_eq!(side(8080, 9090, &l, &s), Side::Server, "lower port serves");
    l.insert(40000);
    assert_eq!(side(40000, 80, &l, &s), Side::Server, "a listener wins");
}

#[test]
fn projections_follow_timers_rate_and_range() {
    // 28 232 ports, 2 000 in TIME_WAIT freeing over the next 20 s, and
    // 480 new ones a second: full after (28 232 - 2 000) / 480 s at most.
    let old: Vec<f64> = (0..2_000).map(|i| f64::from(i) / 100.0).collect();
    let p = project(&old, 0, 480.0, Some(28_232), 60.0, false);
    assert!(p.exhaustion);
    assert_eq!(p.projected, 28_232);
    let eta = p.eta_s.unwrap();
    assert!(
        eta > 28_232.0 / 480.0 - 20.0 && eta <= 28_232.0 / 480.0 + 0.1,
        "{eta}"
    );
    assert!((p.ceiling_per_s.unwrap() - 28_232.0 / 60.0).abs() < 1e-9);
    // 420/s: 25 200 at steady state, below the range: no exhaustion.
    let p = project(&old, 0, 420.0, Some(28_232), 60.0, false);
    assert!(!p.exhaustion, "{p:?}");
    assert_eq!(p.eta_s, None);
    assert!(p.projected >= 25_200 && p.projected < 28_232, "{p:?}");
    // The ports already held count: 100 usable, 90 held for the next
    // minute, 1/s more: full within about ten seconds.
    let held = vec![59.0; 90];
    let p = project(&held, 0, 1.0, Some(100), 60.0, false);
    let eta = p.eta_s.unwrap();
    assert!((9.9..=10.1).contains(&eta), "{eta}");
    // Reuse after a second: the same rate holds far fewer ports.
    let p = project(&[], 0, 420.0, Some(28_232), 1.0, true);
    assert!(!p.exhaustion);
    assert_eq!(p.projected, 420);
    // Unknown range: no verdict.
    let p = project(&[], 0, 420.0, None, 60.0, false);
    assert!(!p.exhaustion && p.ceiling_per_s.is_none());
    // Already full: exhaustion now, whatever the rate.
    let p = project(&held, 10, 0.0, Some(100), 60.0, false);
    assert_eq!(p.eta_s, Some(0.0));
    assert_eq!(p.in_use, 100);
}

#[test]
fn groups_by_destination_and_port_with_rates_and_closers() {
    let s = sysctls((40000, 40099), 0);
    let mut c = Census::default();
    c.saw_listeners([8080]);
    // 40 client closes to SERVER:80 in one second, by pid 7.
    for i in 0..40u16 {
        c.on_entry(
            (ME, 40000 + i, SERVER, 80),
            10 * NS + u64::from(i) * (NS / 40),
            Some((7, "client")),
            &s,
            |_| None,
        );
    }
    // 3 server-side closes on 8080 by pid 9.
    for i in 0..3u16 {
        c.on_entry(
            (ME, 8080, SERVER, 50000 + i),
            10 * NS,
            Some((9, "server")),
            &s,
            |_| None,
        );
    }
    let tw: Vec<_> = (0..40u16)
        .map(|i| sock(TcpState::TimeWait, 40000 + i, SERVER, 80))
        .chain((0..3u16).map(|i| sock(TcpState::TimeWait, 8080, SERVER, 50000 + i)))
        .collect();
    let mut live = LiveCounts::new();
    for l in [
        sock(TcpState::Established, 40050, SERVER, 80),
        sock(TcpState::Listen, 8080, SERVER, 0),
        // A server-side socket: not a port this host's clients use.
        sock(TcpState::CloseWait, 8080, SERVER, 40051),
    ] {
        let l = DiagSocket { timer: 0, ..l };
        c.count_live(&mut live, &l, &s);
    }
    assert_eq!(live.len(), 1, "{live:?}");
    let snap = c.snapshot(11 * NS, &tw, &live, &s);
    assert_eq!(snap.time_wait, 43);
    let d = &snap.destinations[0];
    assert_eq!(d.key, (ME, SERVER, 80));
    assert_eq!((d.time_wait, d.live), (40, 1));
    assert!((d.rate_per_s - 40.0).abs() < 1e-9, "{}", d.rate_per_s);
    assert_eq!(d.closers, vec![(7, "client".to_owned(), 40)]);
    assert!(d.projection.exhaustion, "40/s x 60 s > 100 ports");
    assert_eq!(d.exhaustion_projected_ns, Some(11 * NS));
    assert_eq!(snap.destination(SERVER, 80).len(), 1);
    let p = &snap.local_ports[0];
    assert_eq!((p.lport, p.time_wait, p.listening), (8080, 3, true));
    assert_eq!(p.closers, vec![(9, "server".to_owned(), 3)]);
    // The first projection time sticks.
    let snap = c.snapshot(12 * NS, &tw, &live, &s);
    assert_eq!(snap.destinations[0].exhaustion_projected_ns, Some(11 * NS));
}

#[test]
fn a_closer_without_a_comm_is_named_from_proc_or_a_later_record() {
    let s = sysctls((40000, 40099), 0);
    let me = std::process::id();
    let my_comm = "live-comm".to_owned();
    // What /proc says: only our own process is alive.
    let live = |pid| (pid == me).then(|| my_comm.clone());
    let mut c = Census::default();
    c.on_entry((ME, 40000, SERVER, 80), 10 * NS, Some((me, "")), &s, live);
    // A pid that cannot exist: its first record has no comm and /proc
    // has none, its second record names it.
    let gone = u32::MAX;
    c.on_entry((ME, 40001, SERVER, 80), 10 * NS, Some((gone, "")), &s, live);
    c.on_entry(
        (ME, 40002, SERVER, 80),
        10 * NS,
        Some((gone, "late")),
        &s,
        live,
    );
    let tw: Vec<_> = (0..3u16)
        .map(|i| sock(TcpState::TimeWait, 40000 + i, SERVER, 80))
        .collect();
    let snap = c.snapshot(11 * NS, &tw, &LiveCounts::new(), &s);
    let mut closers = snap.destinations[0].closers.clone();
    closers.sort();
    assert_eq!(
        closers,
        vec![(me, my_comm, 1), (gone, "late".to_owned(), 2)]
    );
}

#[test]
fn rates_forget_old_seconds() {
    let mut r = Rate::default();
    for i in 0..100 {
        r.add(NS + i);
    }
    assert!(
        (r.per_sec(NS + 100) - 100.0).abs() < 1e-9,
        "one-second floor"
    );
    assert!((r.per_sec(5 * NS) - 25.0).abs() < 1e-9);
    assert!(r.per_sec((2 + RATE_WINDOW_S) * NS).abs() < 1e-9);
}

#[test]
fn reuse_needs_the_sysctl_timestamps_and_for_2_loopback() {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert!(!reuse_applies(&sysctls((1, 2), 0), lo, lo));
    assert!(reuse_applies(&sysctls((1, 2), 2), lo, lo));
    assert!(!reuse_applies(&sysctls((1, 2), 2), ME, SERVER));
    assert!(reuse_applies(&sysctls((1, 2), 1), ME, SERVER));
    let mut s = sysctls((1, 2), 1);
    s.timestamps = Ok(0);
    assert!(!reuse_applies(&s, ME, SERVER));
}

/// A destination with no entry for [`STALE_AFTER`] is forgotten, closers
/// and all, at the next snapshot; one still active stays.
#[test]
fn quiet_groups_are_forgotten_after_the_stale_delay() {
    let s = sysctls((40000, 40099), 0);
    let stale = u64::try_from(STALE_AFTER.as_nanos()).unwrap();
    let mut c = Census::default();
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6));
    c.on_entry((ME, 40000, SERVER, 80), NS, Some((7, "a")), &s, |_| None);
    c.on_entry((ME, 40001, other, 80), NS, Some((7, "a")), &s, |_| None);
    c.on_entry((ME, 9000, SERVER, 40002), NS, Some((8, "b")), &s, |_| None);
    c.on_entry((ME, 40003, other, 80), stale, Some((7, "a")), &s, |_| None);
    assert_eq!(c.sizes().0, 3);
    let snap = c.snapshot(NS + stale + 1, &[], &LiveCounts::new(), &s);
    assert_eq!(c.sizes(), (1, 1), "pid 8's name expired, pid 7's is recent");
    assert_eq!(c.forgotten(), 2);
    let keys: Vec<_> = snap.destinations.iter().map(|d| d.key).collect();
    assert_eq!(keys, vec![(ME, other, 80)], "{snap:?}");
    assert!(snap.local_ports.is_empty(), "{snap:?}");
    // The active one still has its closers when its sockets show up.
    let tw = [sock(TcpState::TimeWait, 40003, other, 80)];
    let snap = c.snapshot(NS + stale + 2, &tw, &LiveCounts::new(), &s);
    assert_eq!(snap.destinations[0].closers, vec![(7, "a".to_owned(), 2)]);
}

/// Ten thousand distinct destinations, each closed once: the census holds
/// at most [`MAX_GROUPS`] of them, however many come.
#[test]
fn the_census_is_capped() {
    let s = sysctls((40000, 40099), 0);
    let mut c = Census::default();
    for i in 0..(u32::try_from(MAX_GROUPS).unwrap() + 10) {
        let r = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        c.on_entry((ME, 40000, r, 80), NS, None, &s, |_| None);
    }
    assert_eq!(c.sizes().0, MAX_GROUPS);
    assert_eq!(c.forgotten(), 10);
}

/// A pid reused by another program is another closer: the names learnt
/// from records expire after [`NAME_TTL`], so a record without a comm is
/// named from /proc (the new process), not after the old one.
#[test]
fn a_reused_pid_is_not_named_after_its_previous_process() {
    let s = sysctls((40000, 40099), 0);
    let ttl = u64::try_from(NAME_TTL.as_nanos()).unwrap();
    let mut c = Census::default();
    let now = |_| Some("new-proc".to_owned());
    c.on_entry((ME, 40000, SERVER, 80), NS, Some((7, "old-proc")), &s, now);
    c.on_entry((ME, 40001, SERVER, 80), 2 * NS, Some((7, "")), &s, now);
    // Pid 7 exits; a new process gets pid 7 and closes without a comm.
    c.snapshot(2 * NS + ttl + 1, &[], &LiveCounts::new(), &s);
    c.on_entry(
        (ME, 40002, SERVER, 80),
        3 * NS + ttl,
        Some((7, "")),
        &s,
        now,
    );
    c.on_entry(
        (ME, 40003, SERVER, 80),
        3 * NS + ttl,
        Some((7, "new-proc")),
        &s,
        now,
    );
    let tw: Vec<_> = (0..4u16)
        .map(|i| sock(TcpState::TimeWait, 40000 + i, SERVER, 80))
        .collect();
    let snap = c.snapshot(4 * NS + ttl, &tw, &LiveCounts::new(), &s);
    assert_eq!(
        snap.destinations[0].closers,
        vec![(7, "new-proc".to_owned(), 2), (7, "old-proc".to_owned(), 2)]
    );
}
