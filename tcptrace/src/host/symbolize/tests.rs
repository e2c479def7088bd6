//! The symbolizer client's deadlines, with real processes standing in for
//! a symbolizer that hangs or dies (the real one is exercised by the root
//! tests in `tests/tests/symbolize.rs`).

use super::*;

fn program(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn a_symbolizer_that_never_answers_times_out_and_its_process_is_not_asked_again() {
    let stopping = Arc::new(AtomicBool::new(false));
    let mut s = Symbols::with_program(
        program(&["sleep", "30"]),
        Duration::from_millis(300),
        stopping,
    );
    let t = Instant::now();
    let frames = s.frames(4242, &[0x10, 0x20]);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the deadline bounds the wait: {took:?}"
    );
    assert_eq!(frames.len(), 2);
    assert!(
        frames
            .iter()
            .all(|f| f.function.is_none() && f.skipped == Some(Skipped::TimedOut))
    );
    assert!(s.worker.is_none(), "the overrunning symbolizer is killed");
    let t = Instant::now();
    let again = s.frames(4242, &[0x30]);
    assert_eq!(again[0].skipped, Some(Skipped::TimedOut));
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "a timed-out process is not asked again"
    );
}

#[test]
fn a_symbolizer_that_dies_fails_the_request() {
    let stopping = Arc::new(AtomicBool::new(false));
    let mut s = Symbols::with_program(program(&["true"]), Duration::from_secs(5), stopping);
    let frames = s.frames(1, &[0x10]);
    assert_eq!(frames[0].skipped, Some(Skipped::Failed));
}

#[test]
fn a_stop_interrupts_the_wait() {
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopping);
    let mut s = Symbols::with_program(program(&["sleep", "30"]), Duration::from_mins(1), stopping);
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        flag.store(true, Ordering::Relaxed);
    });
    let t = Instant::now();
    let frames = s.frames(7, &[0x10]);
    let _ = setter.join();
    assert_eq!(frames[0].skipped, Some(Skipped::Interrupted));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        !s.quarantined.contains_key(&7),
        "running out of the stop budget is not held against the process"
    );
    // Once stopping, requests share a short budget instead of the timeout.
    let t = Instant::now();
    let frames = s.frames(8, &[0x10]);
    assert_eq!(frames[0].skipped, Some(Skipped::Interrupted));
    assert!(
        t.elapsed() < STOP_BUDGET + Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn the_final_report_after_a_signal_keeps_what_the_last_report_resolved() {
    let stopping = Arc::new(AtomicBool::new(false));
    let mut s = Symbols::with_program(
        program(&["true"]),
        Duration::from_secs(5),
        Arc::clone(&stopping),
    );
    let alive = std::process::id();
    let gone = u32::MAX - 1;
    let mut named = Frame::unresolved(0x10, None);
    named.function = Some("handler".into());
    for pid in [alive, gone] {
        s.cache.insert((pid, 0x10), named.clone());
    }
    // A periodic report starts afresh.
    s.clear();
    assert!(s.cache.is_empty());

    for pid in [alive, gone] {
        s.cache.insert((pid, 0x10), named.clone());
    }
    stopping.store(true, Ordering::Relaxed);
    s.clear();
    assert_eq!(
        s.frames(alive, &[0x10]),
        vec![named],
        "a live process's frames come from the last report, not the short budget"
    );
    assert!(
        !s.cache.contains_key(&(gone, 0x10)),
        "an exited one's are gone"
    );
    // A restart (a JVM's perf map rewritten) forgets everything.
    s.restart();
    assert!(s.cache.is_empty());
}

#[test]
fn an_answer_within_the_stop_budget_is_used_and_kept_for_the_final_report() {
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopping);
    // Answers 400 ms after the request, well within the stop budget.
    let answer = r#"{"frames":[{"function":"handler","addr":"0x10","offset":0,"module":null,"file":null,"line":null,"recovered":false}]}"#;
    let script = format!("read l; sleep 0.4; echo '{answer}'; sleep 30");
    let mut s = Symbols::with_program(
        program(&["sh", "-c", &script]),
        Duration::from_mins(1),
        stopping,
    );
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, Ordering::Relaxed);
    });
    let alive = std::process::id();
    let frames = s.frames(alive, &[0x10]);
    let _ = setter.join();
    assert_eq!(frames[0].function.as_deref(), Some("handler"), "{frames:?}");
    // The final report starts: the frame is not asked for again.
    s.clear();
    s.worker = None;
    s.program = program(&["sleep", "30"]);
    let t = Instant::now();
    assert_eq!(
        s.frames(alive, &[0x10])[0].function.as_deref(),
        Some("handler")
    );
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}
