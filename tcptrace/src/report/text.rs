//! Text for people: durations in one human format, and report times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}
