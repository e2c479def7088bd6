//! Tests of the lives of timewait sockets, fed synthetic polls and entries.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

const S: u64 = 1_000_000_000;

fn tw(port: u16, state: TcpState, remaining_ms: u32) -> DiagSocket {
    DiagSocket {
        state: Some(state),
        local: IpAddr::V4(Ipv4Addr::LOCALHOST),
        lport: port,
        remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
        rport: 80,
        inode: 0,
        recv_queue: 0,
        send_queue: 0,
        timer_expires_ms: Some(remaining_ms),
        timer: 3,
        cookie: 0,
    }
}

/// `port`'s tuple enters TIME_WAIT at `at` (closer unknown), and a poll
/// 1 s later sees it with 59 s left.
fn entered_and_seen(t: &mut Tracker, port: u16, at: u64) {
    t.on_entry(tuple(port), at, None);
    t.on_poll(
        at + S,
        Duration::from_secs(1),
        &[tw(port, TcpState::TimeWait, 59_000)],
    );
}

fn tuple(port: u16) -> Tuple {
    (
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        80,
    )
}

#[test]
fn natural_expiry_gives_the_timer_exact_dwell() {
    let mut t = Tracker::default();
    t.on_entry(tuple(5000), 10 * S, Some(7));
    // First poll 1 s later: TIME_WAIT with 59 s left.
    t.on_poll(
        11 * S,
        Duration::from_secs(1),
        &[tw(5000, TcpState::TimeWait, 59_000)],
    );
    assert_eq!(t.population_time_wait, 1);
    let pred = t.predicted();
    assert_eq!(pred[0].1, TIMEWAIT_LEN);
    // Gone at the poll after its expiry (t = 70 s).
    let ended = t.on_poll(71 * S, Duration::from_secs(1), &[]);
    assert_eq!(ended, vec![(tuple(5000), End::Expired, Some(7))]);
    assert_eq!(t.expired, 1);
    assert_eq!(t.time_wait.count(), 1);
    assert_eq!(t.time_wait.max_ns, 60 * S);
}

#[test]
fn early_disappearance_is_a_kill_and_orphan_fin_wait2_is_timed() {
    let mut t = Tracker::default();
    t.on_entry(tuple(5001), 10 * S, None);
    t.on_poll(
        10 * S + S / 2,
        Duration::from_secs(1),
        &[tw(5001, TcpState::FinWait2, 59_500)],
    );
    assert_eq!(t.population_fin_wait2, 1);
    // The peer's FIN arrived at 12 s: TIME_WAIT with 60 s from then.
    t.on_poll(
        13 * S,
        Duration::from_secs(1),
        &[tw(5001, TcpState::TimeWait, 59_000)],
    );
    assert_eq!(t.fin_wait2_orphan.count(), 1);
    assert_eq!(t.fin_wait2_orphan.max_ns, 2 * S);
    let ended = t.on_poll(20 * S, Duration::from_secs(1), &[]);
    assert_eq!(ended[0].1, End::KilledEarly);
    assert_eq!(t.killed_early, 1);
}

#[test]
fn reuse_within_a_poll_ends_the_old_life_early() {
    let mut t = Tracker::default();
    entered_and_seen(&mut t, 5003, 10 * S);
    // Reused and closed again before the next poll.
    t.on_entry(tuple(5003), 11 * S + S / 2, None);
    assert_eq!(t.killed_early, 1);
    assert_eq!(t.killed_by_reuse, 1);
    assert_eq!(t.entered, 2);
    assert_eq!(t.time_wait.count(), 1);
}

#[test]
fn reentry_ends_the_followed_life_early_or_at_its_timer() {
    let mut t = Tracker::default();
    // Seen alive at 11 s, reused and closed again at 13 s: the end is
    // the midpoint between the last sighting and the new entry.
    entered_and_seen(&mut t, 5005, 10 * S);
    t.on_entry(tuple(5005), 13 * S, None);
    assert_eq!((t.killed_early, t.killed_by_reuse, t.expired), (1, 1, 0));
    assert_eq!(t.time_wait.max_ns, 2 * S);
    // Reused before any poll saw it (a short tcp_tw_reuse_delay): over
    // all the same, with no dwell to report.
    t.on_entry(tuple(5006), 20 * S, None);
    t.on_entry(tuple(5006), 20 * S + S / 2, None);
    assert_eq!((t.killed_early, t.killed_by_reuse), (2, 2));
    assert_eq!(t.time_wait.count(), 1);
    // Entering again after the timer ran out, before a poll noticed:
    // the old life expired, at its timer.
    t.on_entry(tuple(5007), 30 * S, None);
    t.on_poll(
        31 * S,
        Duration::from_secs(1),
        &[tw(5007, TcpState::TimeWait, 100)],
    );
    t.on_entry(tuple(5007), 31 * S + S / 2, None);
    assert_eq!((t.killed_early, t.expired), (2, 1));
    assert_eq!(t.time_wait.count(), 2);
    assert_eq!(t.entered, 6);
    // One life followed per tuple: the three new lives, never seen by a
    // poll, end as such and nothing else is counted.
    t.on_poll(33 * S, Duration::from_secs(1), &[]);
    assert!(t.live.is_empty());
    assert_eq!((t.never_seen, t.killed_early, t.expired), (3, 2, 1));
}

#[test]
fn open_connections_on_killed_tuples_count_as_reuse() {
    let mut t = Tracker::default();
    entered_and_seen(&mut t, 5008, 10 * S);
    let ended = t.on_poll(12 * S, Duration::from_secs(1), &[]);
    assert_eq!(ended, vec![(tuple(5008), End::KilledEarly, None)]);
    assert_eq!((t.killed_early, t.killed_by_reuse), (1, 0));
    t.reused_by_open_connections(1);
    assert_eq!((t.killed_early, t.killed_by_reuse), (1, 1));
}

#[test]
fn no_orphan_sample_without_an_orphan_phase() {
    let mut t = Tracker::default();
    t.on_entry(tuple(5004), 10 * S, None);
    // Straight to TIME_WAIT; the timer's jiffy makes `began` a bit late.
    t.on_poll(
        11 * S,
        Duration::from_secs(1),
        &[tw(5004, TcpState::TimeWait, 59_003)],
    );
    assert_eq!(t.fin_wait2_orphan.count(), 0);
}

#[test]
fn polls_alone_count_entries_and_time_the_orphan_phase_from_its_timer() {
    let mut t = Tracker::from_polls(Some(TIMEWAIT_LEN));
    // An orphan first seen at 11 s with 59.5 s left of a 60 s
    // tcp_fin_timeout: it became a timewait socket at 10.5 s.
    t.on_poll(
        11 * S,
        Duration::from_secs(1),
        &[tw(5010, TcpState::FinWait2, 59_500)],
    );
    assert_eq!((t.entered, t.population_fin_wait2), (1, 1));
    // The peer's FIN at 12 s; the timer now runs 60 s from then.
    t.on_poll(
        13 * S,
        Duration::from_secs(1),
        &[tw(5010, TcpState::TimeWait, 59_000)],
    );
    assert_eq!(t.entered, 1, "the move to TIME_WAIT is not a new life");
    assert_eq!(t.killed_early, 0);
    assert_eq!(t.fin_wait2_orphan.count(), 1);
    assert_eq!(t.fin_wait2_orphan.max_ns, S + S / 2);
    // Seen again, the same timer: nothing new.
    t.on_poll(
        14 * S,
        Duration::from_secs(1),
        &[tw(5010, TcpState::TimeWait, 58_000)],
    );
    assert_eq!((t.entered, t.never_seen), (1, 0));
    let ended = t.on_poll(73 * S, Duration::from_secs(1), &[]);
    assert_eq!(ended, vec![(tuple(5010), End::Expired, None)]);
    assert_eq!(t.time_wait.max_ns, 60 * S);
}

#[test]
fn polls_alone_see_a_renewed_time_wait_timer_as_a_new_life() {
    let mut t = Tracker::from_polls(None);
    t.on_poll(
        11 * S,
        Duration::from_secs(1),
        &[tw(5011, TcpState::TimeWait, 59_000)],
    );
    // Reused and closed again between two polls, at 11.5 s: the timer
    // now ends 1.5 s later.
    t.on_poll(
        12 * S,
        Duration::from_secs(1),
        &[tw(5011, TcpState::TimeWait, 59_500)],
    );
    assert_eq!((t.entered, t.killed_early, t.killed_by_reuse), (2, 1, 1));
    // The old life: from 10 s to between the polls.
    assert_eq!(t.time_wait.count(), 1);
    assert_eq!(t.time_wait.max_ns, S + S / 2);
    assert_eq!(t.population_time_wait, 1);
    // Without tcp_fin_timeout an orphan's phase is not timed.
    t.on_poll(
        12 * S,
        Duration::from_secs(1),
        &[
            tw(5011, TcpState::TimeWait, 59_500),
            tw(5012, TcpState::FinWait2, 30_000),
        ],
    );
    t.on_poll(
        13 * S,
        Duration::from_secs(1),
        &[
            tw(5011, TcpState::TimeWait, 58_500),
            tw(5012, TcpState::TimeWait, 60_000),
        ],
    );
    assert_eq!(t.entered, 3);
    assert_eq!(t.fin_wait2_orphan.count(), 0);
}

#[test]
fn an_entry_that_never_shows_up_is_counted() {
    let mut t = Tracker::default();
    t.on_entry(tuple(5002), 10 * S, None);
    t.on_poll(10 * S + S / 2, Duration::from_secs(1), &[]);
    assert_eq!(t.never_seen, 0, "one poll of grace");
    t.on_poll(12 * S, Duration::from_secs(1), &[]);
    assert_eq!(t.never_seen, 1);
    assert_eq!(t.entered, 1);
}

/// A namespace polled rarely while idle: a TIME_WAIT first seen 7 s after
/// it began still gets its start from the timer, so its dwell at the
/// timer's expiry is exact.
#[test]
fn polls_alone_date_a_late_first_sighting_from_the_timer() {
    let mut t = Tracker::from_polls(None);
    assert_eq!(t.following(), 0);
    // Entered TIME_WAIT at 10 s; first polled at 17 s, 53 s left.
    t.on_poll(
        17 * S,
        Duration::from_secs(1),
        &[tw(5020, TcpState::TimeWait, 53_000)],
    );
    assert_eq!((t.entered, t.following()), (1, 1));
    assert_eq!(t.predicted(), vec![(tuple(5020), TIMEWAIT_LEN)]);
    t.on_poll(
        18 * S,
        Duration::from_secs(1),
        &[tw(5020, TcpState::TimeWait, 52_000)],
    );
    let ended = t.on_poll(70 * S + S / 2, Duration::from_secs(1), &[]);
    assert_eq!(ended, vec![(tuple(5020), End::Expired, None)]);
    assert_eq!(t.time_wait.max_ns, 60 * S, "the timer's 60 s, not 53 s");
    assert_eq!(t.following(), 0);
}

#[test]
fn trackers_add_up_without_their_lives() {
    let mut a = Tracker::default();
    entered_and_seen(&mut a, 5030, 10 * S);
    a.on_poll(71 * S, Duration::from_secs(1), &[]);
    let mut b = Tracker::default();
    entered_and_seen(&mut b, 5030, 20 * S);
    let mut total = Tracker::default();
    total.absorb(&a);
    total.absorb(&b);
    assert_eq!((total.entered, total.expired), (2, 1));
    assert_eq!(total.population_time_wait, 1);
    assert_eq!(total.time_wait.count(), 1);
    assert_eq!(total.following(), 0, "lives stay with their namespace");
}
