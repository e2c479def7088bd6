//! The local time zone, as the C library sees it (`TZ`, else
//! `/etc/localtime`): for `-T`, the stream's local-time timestamps.

use std::ffi::CStr;

/// A time zone's offset from UTC at one instant, and its abbreviation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offset {
    pub seconds: i32,
    /// `CET`, `UTC`, `+0530`: as `date +%Z` prints it.
    pub name: String,
}

/// The local zone's offset at `unix_s` (it changes with daylight saving
/// time), or None when the C library cannot say.
#[must_use]
pub fn offset_at(unix_s: u64) -> Option<Offset> {
    let t = libc::time_t::try_from(unix_s).ok()?;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null
    // pointer), and localtime_r fills it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // reentrant form, safe from any thread.
    let r = unsafe { libc::localtime_r(&raw const t, &raw mut tm) };
    if r.is_null() {
        return None;
    }
    let name = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points to a NUL-terminated string owned by the C
        // library, alive for the process.
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Some(Offset {
        seconds: i32::try_from(tm.tm_gmtoff).ok()?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the machine's zone, an offset is less than a day.
    #[test]
    fn an_offset_is_within_a_day() {
        let o = offset_at(1_700_000_000).expect("localtime_r works");
        assert!(o.seconds.abs() < 24 * 3600, "{o:?}");
    }
}
