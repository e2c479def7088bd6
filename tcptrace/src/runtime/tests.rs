//! The runtime's timers with durations past what an instant can hold: the
//! flags bound them, and these places must not panic if a bound is missed.

use std::time::Duration;

use super::{stop::Stop, timer};

#[tokio::test]
async fn a_timer_beyond_any_instant_waits_instead_of_panicking() {
    let mut t = timer(Duration::MAX, Duration::MAX);
    let first = tokio::time::timeout(Duration::from_millis(10), t.tick()).await;
    assert!(first.is_err(), "it did not fire at once");
}

#[tokio::test]
async fn a_duration_beyond_any_instant_never_ends_the_run() {
    let mut stop = Stop::new(Some(Duration::MAX)).unwrap();
    let ended = tokio::time::timeout(Duration::from_millis(10), stop.wait()).await;
    assert!(ended.is_err(), "no deadline");
}
