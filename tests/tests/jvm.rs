//! `--closewait-leaks` on a Java service: Debian's OpenJDK 17 runs
//! `tests/peers/LeakServer.java` in namespaces of its own (a container's
//! shape: its own `/tmp`, its own pid numbers), warmed up until its handler
//! is JIT-compiled, then leaks. The report names the Java methods through
//! the JVM's perf map, which tcptrace asks the JVM to write (the attach
//! mechanism `jcmd` uses), or says how to get them; a hostile perf map
//! delays nothing and names nothing; `--no-jvm-attach` leaves the JVM
//! alone.
//!
//! Needs root and openjdk-17-jdk-headless (.ci/run installs it).

use std::{process::Command, time::Duration};

use integration_tests::{
    JavaClasses, JavaServer, LeakGroup, LeakRun, LeakTracer, Netns, jvm::NSPID, run_bounded,
};

/// Good connections before the leaks: enough for the JIT to compile the
/// handler and the socket read path.
const WARM_UP: u32 = 3000;
/// Leaking connections.
const LEAKS: u32 = 3;
/// A request the handler forgets (longer than its 16-byte limit).
const LONG: u32 = 100;
/// The final report, JVM attach included, within this (a liveness bound).
const REPORT_DEADLINE: Duration = Duration::from_secs(12);

/// A tracer started, `LEAKS` leaks made, past `--min-age`, stopped.
fn leak_run(ns: &Netns, classes: &JavaClasses, port: u16, args: &[&str]) -> LeakRun {
    let mut all = vec!["--min-age", "1s", "--json"];
    all.extend_from_slice(args);
    let tracer = LeakTracer::start(ns, &all);
    classes.clients(ns, port, LEAKS, LONG);
    std::thread::sleep(Duration::from_millis(1500));
    let t = std::time::Instant::now();
    let run = tracer.stop();
    assert!(
        t.elapsed() < REPORT_DEADLINE,
        "the final report took {:?}",
        t.elapsed()
    );
    run
}

fn groups_of(run: &LeakRun, pid: u32) -> Vec<LeakGroup> {
    run.final_groups()
        .into_iter()
        .filter(|g| g.pid() == Some(pid))
        .collect()
}

fn functions(groups: &[LeakGroup]) -> Vec<String> {
    groups.iter().flat_map(LeakGroup::functions).collect()
}

#[test]
fn java_frames_are_named_through_the_jvm_perf_map() {
    let ns = Netns::new();
    let classes = JavaClasses::build();
    let port = 19_301;
    let server = JavaServer::start(&ns, &classes, port, &["-XX:+PreserveFramePointer"]);
    classes.clients(&ns, port, WARM_UP, 4);
    assert!(
        !server.tmp_entries().iter().any(|e| e.starts_with("perf-")),
        "no perf map before tcptrace asks: {:?}",
        server.tmp_entries()
    );
    let run = leak_run(&ns, &classes, port, &[]);
    run.assert_clean_exit();
    let mine = groups_of(&run, server.pid());
    let count: u64 = mine.iter().map(LeakGroup::count).sum();
    assert_eq!(count, u64::from(LEAKS), "{}", run.text());
    let all = run.final_groups();
    assert!(
        all.iter().all(|g| g.pid() == Some(server.pid())),
        "only the server leaks; the Java clients are not blamed: {all:?}"
    );
    let names = functions(&mine);
    for want in [
        "LeakServer.handle(java.net.Socket)",
        "SocketInputStream.read",
    ] {
        assert!(
            names.iter().any(|f| f.contains(want)),
            "no frame names {want}: {names:?}"
        );
    }
    // Named from the map the JVM wrote in its own /tmp, as its pid.
    let map = format!("/tmp/perf-{NSPID}.map");
    let handler = mine
        .iter()
        .flat_map(LeakGroup::eof_stack)
        .find(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| n.contains("LeakServer.handle"))
        })
        .expect("the handler read EOF");
    assert_eq!(handler.module.as_deref(), Some(map.as_str()));
    assert!(server.tmp(&format!("perf-{NSPID}.map")).is_file());
    assert!(
        mine.iter().all(|g| g.notes().is_empty()),
        "nothing to say about a JVM with frame pointers: {mine:?}"
    );
}

#[test]
fn a_jvm_without_frame_pointers_gets_the_advice() {
    let ns = Netns::new();
    let classes = JavaClasses::build();
    let port = 19_302;
    let server = JavaServer::start(&ns, &classes, port, &[]);
    classes.clients(&ns, port, WARM_UP, 4);
    let run = leak_run(&ns, &classes, port, &[]);
    let mine = groups_of(&run, server.pid());
    assert!(!mine.is_empty(), "{}", run.text());
    for g in &mine {
        assert!(
            g.notes()
                .iter()
                .any(|n| n.contains("-XX:+PreserveFramePointer")),
            "{g:?}"
        );
    }
}

/// What a hostile perf map is made of.
enum Hostile {
    Fifo,
    Huge,
    Garbage,
}

fn plant(server: &JavaServer, kind: &Hostile) {
    let path = server.tmp(&format!("perf-{NSPID}.map"));
    let _ = std::fs::remove_file(&path);
    match kind {
        Hostile::Fifo => {
            let out = run_bounded(Command::new("mkfifo").arg(&path), Duration::from_secs(5));
            assert!(out.status.success(), "mkfifo {}", path.display());
        }
        Hostile::Huge => std::fs::File::create(&path)
            .and_then(|f| f.set_len(1 << 30))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        Hostile::Garbage => {
            let mut junk: Vec<u8> = (0..200_000u32)
                .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap_or(0))
                .collect();
            junk.extend_from_slice(b"\nzz 10 LeakServer.handle\n0x 0x LeakServer.handle\n");
            std::fs::write(&path, junk).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[test]
fn a_hostile_perf_map_delays_nothing_and_names_nothing_and_no_attach_leaves_the_jvm_alone() {
    let ns = Netns::new();
    let classes = JavaClasses::build();
    let port = 19_303;
    let server = JavaServer::start(&ns, &classes, port, &["-XX:+PreserveFramePointer"]);
    classes.clients(&ns, port, WARM_UP, 4);
    for kind in [Hostile::Fifo, Hostile::Huge, Hostile::Garbage] {
        plant(&server, &kind);
        let run = leak_run(&ns, &classes, port, &["--no-jvm-attach"]);
        let mine = groups_of(&run, server.pid());
        assert!(!mine.is_empty(), "{}", run.text());
        let names = functions(&mine);
        assert!(
            !names.iter().any(|f| f.contains("LeakServer")),
            "no Java name from a hostile map: {names:?}"
        );
        let skipped: Vec<String> = (mine.iter())
            .flat_map(|g| g.eof_stack().into_iter().chain(g.first_stack()))
            .filter_map(|f| f.skipped)
            .collect();
        match kind {
            Hostile::Fifo => assert!(
                skipped.iter().any(|s| s.contains("not a regular file")),
                "{skipped:?}"
            ),
            Hostile::Huge => assert!(
                skipped.iter().any(|s| s.contains("larger than")),
                "{skipped:?}"
            ),
            Hostile::Garbage => assert!(
                run.stderr.contains("lines did not parse"),
                "the garbage is counted: {}",
                run.stderr
            ),
        }
    }
    let attach_files: Vec<String> = (server.tmp_entries().into_iter())
        .filter(|e| e.starts_with(".attach_pid") || e.starts_with(".java_pid"))
        .collect();
    assert!(
        attach_files.is_empty(),
        "--no-jvm-attach must not touch the JVM: {attach_files:?}"
    );
}
