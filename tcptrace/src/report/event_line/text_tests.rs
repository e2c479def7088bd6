//! The text format's columns: widths (`-w`) and local time (`-T`).

use super::*;
use crate::report::event_line::tests::{printer, state_event};

/// An IPv4 line fits 120 columns by default, its columns under the
/// header's; `-w` widens the address columns for IPv6.
#[test]
fn text_columns_fit_120_by_default_and_widen_with_w() {
    let mut out = BytesMut::new();
    let narrow = printer(Format::Text);
    narrow.write(&state_event(), None, &mut out);
    let line = String::from_utf8(out.to_vec()).unwrap();
    let header = narrow.header(1_700_000_000).unwrap();
    assert!(header.starts_with("TIME(UTC) "), "{header}");
    assert!(line.trim_end().chars().count() <= 120, "{line}");
    let col = |s: &str, word: &str| s.find(word).unwrap();
    assert_eq!(
        col(&header, "RADDR"),
        col(&line, "127.0.0.2"),
        "{header}\n{line}"
    );
    assert_eq!(
        col(&header, "EVENT"),
        col(&line, "ESTABLISHED"),
        "{header}\n{line}"
    );
    let wide = printer(Format::Text).with_width(Width::Wide);
    let mut out = BytesMut::new();
    wide.write(&state_event(), None, &mut out);
    let wide_line = String::from_utf8(out.to_vec()).unwrap();
    let wide_header = wide.header(1_700_000_000).unwrap();
    assert_eq!(col(&wide_header, "EVENT"), col(&wide_line, "ESTABLISHED"));
    assert_eq!(
        col(&wide_line, "ESTABLISHED") - col(&line, "ESTABLISHED"),
        2 * (47 - 21)
    );
}

/// `-T`: times shifted by the zone's offset, the header named by it; JSON
/// keeps UTC.
#[test]
fn local_time_shifts_text_times_and_names_the_zone() {
    let zone = || -> Option<Zone> { Some(Box::new(|_| Some((3600, "CET".to_owned())))) };
    let p = printer(Format::Text).with_zone(zone());
    let mut out = BytesMut::new();
    p.write(&state_event(), None, &mut out);
    let line = String::from_utf8(out.to_vec()).unwrap();
    assert!(
        line.starts_with("23:13:20.000001 "),
        "UTC 22:13:20 + 1 h: {line}"
    );
    assert!(p.header(0).unwrap().starts_with("TIME(CET) "));
    let j = printer(Format::Json).with_zone(zone());
    let mut out = BytesMut::new();
    j.write(&state_event(), None, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    assert!(v["time"].as_str().unwrap().contains("T22:13:20"), "{v}");
}
