use super::*;
use crate::model::cardinality::OTHER;

fn page(s: Snapshot) -> String {
    render(&Arc::new(Mutex::new(s))).unwrap()
}

#[test]
fn text_format_has_conventional_names_and_values() {
    let mut h = Hist::default();
    for _ in 0..50 {
        h.add(200_000_000);
    }
    let text = page(Snapshot {
        build: BuildInfo {
            version: "1.2.3".into(),
            kernel: "6.18.0".into(),
        },
        dwell: vec![("CLOSE_WAIT".into(), None, h)],
        transitions: vec![("ESTABLISHED", "CLOSE_WAIT", 50)],
        resets: vec![("sent", "TCP_STATE".into(), 2)],
        close_wait: Some(4),
        timewait: vec![
            TimewaitCounts {
                netns: Some(Netns(4_026_531_840)),
                time_wait: 7,
                entered: 9,
                ..TimewaitCounts::default()
            },
            TimewaitCounts {
                netns: Some(Netns(4_026_532_001)),
                time_wait: 2,
                ..TimewaitCounts::default()
            },
        ],
        losses: vec![("ringbuf_full", 1), ("histogram_map_full", 3)],
        untracked: Some(6),
        ..Snapshot::default()
    });
    for want in [
        "tcptrace_build_info{version=\"1.2.3\",kernel=\"6.18.0\"} 1",
        "tcptrace_state_dwell_seconds_count{state=\"CLOSE_WAIT\"} 50",
        "tcptrace_transitions_total{from=\"ESTABLISHED\",to=\"CLOSE_WAIT\"} 50",
        "tcptrace_resets_total{direction=\"sent\",reason=\"TCP_STATE\"} 2",
        "tcptrace_sockets{state=\"CLOSE_WAIT\"} 4",
        "tcptrace_sockets{state=\"TIME_WAIT\",netns=\"4026531840\"} 7",
        "tcptrace_sockets{state=\"TIME_WAIT\",netns=\"4026532001\"} 2",
        "tcptrace_timewait_sockets_total{event=\"entered\",netns=\"4026531840\"} 9",
        "tcptrace_lost_events_total{reason=\"ringbuf_full\"} 1",
        "tcptrace_lost_events_total{reason=\"histogram_map_full\"} 3",
        "tcptrace_untracked_transitions_total{} 6",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(
        text.contains("tcptrace_state_dwell_seconds_bucket{le=\"+Inf\",state=\"CLOSE_WAIT\"} 50")
            || text.contains(
                "tcptrace_state_dwell_seconds_bucket{state=\"CLOSE_WAIT\",le=\"+Inf\"} 50"
            ),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    assert!(
        !text.contains("tcptrace_closewait_leaked_sockets")
            && !text.contains("tcptrace_timewait_destination"),
        "families with no series are left out: {text}"
    );
}

#[test]
fn leaks_are_labelled_by_process_container_and_namespace() {
    let text = page(Snapshot {
        leaks: vec![LeakGauge {
            comm: "le\"aky".into(),
            netns: Some(4_026_532_281),
            container: Some("0123abcd".into()),
            sockets: 5,
            oldest_s: 12.5,
        }],
        ..Snapshot::default()
    });
    let labels = "{comm=\"le\\\"aky\",container=\"0123abcd\",netns=\"4026532281\"}";
    assert!(
        text.contains(&format!("tcptrace_closewait_leaked_sockets{labels} 5")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tcptrace_closewait_oldest_leak_seconds{labels} 12.5"
        )),
        "{text}"
    );
}

#[test]
fn destinations_and_failures_have_their_labels() {
    let ns = Some(Netns(4_026_532_001));
    let text = page(Snapshot {
        destinations: vec![
            DestGauge {
                netns: ns,
                destination: "10.0.0.2:80".into(),
                time_wait: 900,
                rate_per_s: 15.0,
                usable_ports: Some(28_232),
                exhaustion_s: Some(42.0),
            },
            DestGauge {
                netns: ns,
                destination: OTHER.into(),
                time_wait: 3,
                ..DestGauge::default()
            },
        ],
        failures: vec![FailureCount {
            call: "connect",
            errno: "EADDRNOTAVAIL",
            netns: ns,
            target: "10.0.0.2:80".into(),
            count: 7,
        }],
        ..Snapshot::default()
    });
    let dest = "{destination=\"10.0.0.2:80\",netns=\"4026532001\"}";
    for want in [
        format!("tcptrace_timewait_destination_sockets{dest} 900"),
        format!("tcptrace_timewait_destination_entries_per_second{dest} 15.0"),
        format!("tcptrace_timewait_destination_usable_ports{dest} 28232"),
        format!("tcptrace_timewait_destination_exhaustion_seconds{dest} 42.0"),
        "tcptrace_timewait_destination_sockets{destination=\"other\",netns=\"4026532001\"} 3"
            .to_owned(),
        "tcptrace_socket_call_failures_total{call=\"connect\",errno=\"EADDRNOTAVAIL\",\
         target=\"10.0.0.2:80\",netns=\"4026532001\"} 7"
            .to_owned(),
    ] {
        assert!(text.contains(&want), "{want} missing from\n{text}");
    }
    assert!(
        !text.contains("usable_ports{destination=\"other\""),
        "other has no usable ports: {text}"
    );
}

#[test]
fn buckets_are_cumulative_ready_and_complete() {
    let mut h = Hist::default();
    h.add(1_500); // 1.5 µs
    h.add(3_000_000_000_000_000); // beyond the last bound
    let (_, b) = prom_buckets(&h);
    assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 2);
    assert!(b.last().unwrap().0.is_infinite());
    assert_eq!(b.last().unwrap().1, 1);
}

/// Every histogram ends in a `+Inf` bucket that holds its count, and a
/// `--by comm` label value is escaped as the exposition format says.
#[test]
fn every_histogram_has_an_inf_bucket_and_label_values_are_escaped() {
    let mut h = Hist::default();
    h.add(1_500);
    h.add(3_000_000_000_000_000);
    let hostile = "\x1b[2J\n\"} 1\nfake 2\\";
    let text = page(Snapshot {
        by: Some("comm"),
        dwell: vec![
            ("CLOSE_WAIT".into(), Some(hostile.into()), h.clone()),
            ("ESTABLISHED".into(), Some("nginx".into()), h),
            ("TIME_WAIT".into(), None, Hist::default()),
        ],
        ..Snapshot::default()
    });
    let count = |suffix: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("tcptrace_state_dwell_seconds_{suffix}")))
            .count()
    };
    assert_eq!(count("count"), 3, "{text}");
    let inf: Vec<&str> = text.lines().filter(|l| l.contains("le=\"+Inf\"")).collect();
    assert_eq!(inf.len(), 3, "{text}");
    assert!(inf[0].ends_with("} 2") && inf[2].ends_with("} 0"), "{text}");
    assert!(!text.contains("e308"), "{text}");
    assert!(
        text.contains("comm=\"\x1b[2J\\n\\\"} 1\\nfake 2\\\\\""),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("fake")), "{text}");
}
