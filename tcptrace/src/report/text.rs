//! Text for people: durations in one human format, report times, and
//! untrusted strings made safe for a terminal.

use std::{
    borrow::Cow,
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A duration printed for people: `812ns`, `3.2µs`, `1.50ms`, `2.001s`.
#[must_use]
pub fn human_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.3}s", f / 1e9)
    }
}

/// A report's time, `2026-11-21T16:05:27Z`. A wall clock set before 1970
/// (which humantime cannot format: it panics) prints as the epoch.
#[must_use]
pub fn report_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t.max(UNIX_EPOCH)).to_string()
}

/// Whether `c` needs [`escape`]: a backslash or a control character (C0,
/// DEL, C1).
fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control()
}

/// A string that a traced process controls (its comm, command line or
/// cgroup, a symbol name, a module or source path), made safe to print in
/// text output: no control character reaches the terminal, so no escape
/// sequence runs and no line break fakes a report line.
///
/// The style, Rust's and C's: `\n`, `\r` and `\t`; other C0 characters and
/// DEL as `\xNN` (`\x1b` for ESC, `\x7f`); C1 characters (U+0080 to U+009F)
/// as `\u{NN}` (`\u{9b}`); a backslash as `\\`, so that the text `\x1b` in
/// a comm prints as `\\x1b` and cannot pass for an escape. Everything else,
/// other non-ASCII text included, is printed as it is. Borrows when nothing
/// needs escaping (the usual case).
#[must_use]
pub fn escape(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(s.get(..first).unwrap_or_default());
    for c in s.get(first..).unwrap_or_default().chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_nanos(812)), "812ns");
        assert_eq!(human_duration(Duration::from_nanos(3_200)), "3.2µs");
        assert_eq!(human_duration(Duration::from_micros(1_500)), "1.50ms");
        assert_eq!(human_duration(Duration::from_millis(2_001)), "2.001s");
    }

    #[test]
    fn report_times_before_1970_print_as_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        assert_eq!(report_time(t), "2026-09-21T14:13:20Z");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(report_time(before), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn escape_borrows_plain_text() {
        for s in [
            "",
            "nginx",
            "python3.12",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "äöü µs \"q\"",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn escape_makes_every_control_character_visible() {
        assert_eq!(escape("\x1b[2J\n\"\\"), "\\x1b[2J\\n\"\\\\");
        assert_eq!(escape("a\rb\tc\0d\x07\x7f"), "a\\rb\\tc\\x00d\\x07\\x7f");
        assert_eq!(
            escape("x\u{9b}31m\u{80}\u{9f}"),
            "x\\u{9b}31m\\u{80}\\u{9f}"
        );
        // U+00A0 and later are printable text.
        assert_eq!(escape("\u{a0}é"), "\u{a0}é");
        // An escape already spelt out cannot pass for one of ours.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        for c in (0..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let e = escape(&c.to_string()).into_owned();
            assert!(!e.chars().any(char::is_control), "{c:?} -> {e:?}");
            assert!(e.starts_with('\\'), "{c:?} -> {e:?}");
        }
    }
}
