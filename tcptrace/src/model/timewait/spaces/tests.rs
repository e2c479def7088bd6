//! Tests of the per-namespace bookkeeping: which namespaces are polled,
//! when a state is dropped, and the cap.

use super::*;

const A: Place = Some(Netns(4_026_531_840));
const B: Place = Some(Netns(4_026_532_001));
const C: Place = Some(Netns(4_026_532_002));

/// A state that follows `n` sockets.
fn following(n: usize) -> usize {
    n
}

#[test]
fn a_namespace_is_polled_when_first_seen_then_only_while_busy() {
    let mut s: Spaces<usize> = Spaces::default();
    let listed = [A, B, C];
    assert_eq!(s.due(&listed, 0, None, |n| *n > 0), vec![A, B, C]);
    for p in listed {
        s.entry(p, 0, A, || following(0));
        s.polled(p);
    }
    assert!(
        s.due(&listed, 1, None, |n| *n > 0).is_empty(),
        "idle namespaces cost no poll"
    );
    // B gets entries (a record, or its first poll found sockets).
    *s.entry(B, 1, A, || 0) = 3;
    assert_eq!(s.due(&listed, 2, None, |n| *n > 0), vec![B]);
    // A state made by an event before any poll of its namespace: both.
    let d = Some(Netns(4_026_532_003));
    s.entry(d, 2, A, || 0);
    assert_eq!(s.due(&[A, B, C, d], 3, None, |n| *n > 0), vec![B, d]);
}

#[test]
fn idle_namespaces_take_turns_every_n_ticks() {
    let mut s: Spaces<usize> = Spaces::default();
    let listed: Vec<Place> = (0..10).map(|i| Some(Netns(100 + i))).collect();
    for p in &listed {
        s.entry(*p, 0, None, || 0);
        s.polled(*p);
    }
    let mut polls = vec![0u32; listed.len()];
    for tick in 0..50 {
        let due = s.due(&listed, tick, Some(5), |n| *n > 0);
        assert_eq!(due.len(), 2, "staggered: two of ten per tick");
        for p in due {
            polls[listed.iter().position(|l| *l == p).unwrap()] += 1;
        }
    }
    assert!(
        polls.iter().all(|n| *n == 10),
        "each every 5th tick: {polls:?}"
    );
}

#[test]
fn a_gone_namespace_reports_once_more_then_is_dropped() {
    let mut s: Spaces<&str> = Spaces::default();
    s.entry(A, 0, A, || "own");
    s.entry(B, 0, A, || "b");
    s.entry(C, 0, A, || "c");
    // C is listed by no refresh, B by the second again: one miss is a
    // grace (a namespace found late), two are gone.
    s.refreshed(&[B], A);
    assert!(!s.is_gone(C));
    s.refreshed(&[], A);
    s.refreshed(&[B], A);
    assert!(s.is_gone(C) && !s.is_gone(B) && !s.is_gone(A), "A is kept");
    assert!(
        !s.due(&[A, B], 9, None, |_| true).contains(&C),
        "a gone namespace is not polled"
    );
    assert_eq!(s.get(C), Some(&"c"), "still there for its last report");
    assert_eq!(s.sweep(), vec![(C, "c")]);
    assert_eq!((s.len(), s.dropped), (2, 1));
    assert!(s.sweep().is_empty());
}

#[test]
fn the_cap_drops_the_least_recently_touched_but_never_the_kept_one() {
    let mut s: Spaces<u32> = Spaces::new(3);
    s.entry(A, 0, A, || 0);
    s.entry(B, 1, A, || 1);
    s.entry(C, 2, A, || 2);
    s.entry(B, 5, A, || 9);
    let d = Some(Netns(7));
    s.entry(d, 6, A, || 3);
    assert_eq!(s.len(), 3);
    assert!(s.get(A).is_some(), "kept, though the oldest");
    assert!(s.get(C).is_none(), "the least recently touched other one");
    assert_eq!(s.get(B), Some(&1), "touching keeps the state");
    assert_eq!(s.dropped, 1);
    // A thousand namespaces more: still three.
    for i in 0..1000 {
        s.entry(Some(Netns(1000 + i)), 10 + u64::from(i), A, || i);
    }
    assert_eq!(s.len(), 3);
    assert!(s.get(A).is_some());
}

#[test]
fn without_namespaces_everything_is_one_place() {
    let mut s: Spaces<u32> = Spaces::default();
    assert_eq!(s.due(&[None], 0, None, |_| false), vec![None]);
    s.entry(None, 0, None, || 0);
    s.polled(None);
    s.refreshed(&[None], None);
    assert!(s.due(&[None], 1, None, |_| false).is_empty());
    assert!(!s.is_gone(None));
}

#[test]
fn idle_namespaces_share_a_budget_of_polls() {
    // A few namespaces: the shortest period.
    assert_eq!(idle_every(3, 8, 5, 50), 5);
    assert_eq!(idle_every(0, 8, 5, 50), 5);
    // 200 namespaces, 8 a poll: each one poll in 25.
    assert_eq!(idle_every(200, 8, 5, 50), 25);
    // Beyond the longest period the budget gives way.
    assert_eq!(idle_every(8192, 8, 5, 50), 50);
    assert_eq!(idle_every(9, 0, 1, 50), 9, "a zero budget is one a poll");
}
