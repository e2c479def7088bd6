//! Text for people: durations in one human format.

use std::time::Duration;

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
}
