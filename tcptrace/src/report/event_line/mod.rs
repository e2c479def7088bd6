//! Event output: aligned text lines and JSON lines (one object per event).
//! The JSON keys are documented in `docs/json.md` and pinned by
//! `docs/schema/state.json` and `reset.json`; keep the three in step.

use std::{
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use bytes::{BufMut as _, BytesMut};

use crate::{
    model::{
        clock::Clock,
        event::{Event, Owner},
        netns::Netns,
        reset_reasons::ResetReasons,
        socket::endpoint,
    },
    report::text::{escape, human_duration},
};

#[cfg(test)]
mod generated;
mod json;
#[cfg(test)]
mod serde_reference;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The text format's address columns: `Narrow` fits IPv4 endpoints (a line
/// fits 120 columns), `Wide` (`-w`) IPv6 ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Width {
    #[default]
    Narrow,
    Wide,
}

impl Width {
    /// `255.255.255.255:65535`, or `[ffff:...:ffff]:65535`.
    fn address(self) -> usize {
        match self {
            Width::Narrow => 21,
            Width::Wide => 47,
        }
    }
}

/// The local zone's offset from UTC at a Unix time, and its name (`CET`):
/// text timestamps in local time (`-T`). The caller looks it up; this
/// module does no I/O.
pub type Zone = Box<dyn Fn(u64) -> Option<(i32, String)>>;

/// Formats events; one instance per run.
pub struct Printer {
    format: Format,
    width: Width,
    /// Local time for text timestamps; None: UTC.
    zone: Option<Zone>,
    pub(super) clock: Clock,
    pub(super) reasons: ResetReasons,
    /// tcptrace's own namespace: text lines name only the others.
    own_netns: Option<Netns>,
    /// The RFC 3339 text of the last whole second printed, up to and with
    /// the `.`: events come in bursts within one second, so the date is
    /// formatted once per second, not once per event.
    second: std::cell::RefCell<(u64, String)>,
}

pub(super) fn owner_source(o: Option<&Owner>) -> &'static str {
    match o.map(|o| o.source) {
        Some(tcptrace_common::OwnerSource::Syscall) => "syscall",
        Some(tcptrace_common::OwnerSource::Io) => "io",
        Some(tcptrace_common::OwnerSource::Procfs) => "procfs",
        Some(tcptrace_common::OwnerSource::Unknown) | None => "unknown",
    }
}

impl Printer {
    #[must_use]
    pub fn new(format: Format, clock: Clock, reasons: ResetReasons) -> Self {
        Self {
            format,
            clock,
            reasons,
            width: Width::Narrow,
            zone: None,
            own_netns: None,
            second: std::cell::RefCell::new((u64::MAX, String::new())),
        }
    }

    /// Text address columns of `width`.
    #[must_use]
    pub fn with_width(self, width: Width) -> Self {
        Self { width, ..self }
    }

    /// Text timestamps in the local time `zone` gives (JSON stays UTC).
    #[must_use]
    pub fn with_zone(self, zone: Option<Zone>) -> Self {
        Self { zone, ..self }
    }

    /// Text lines of events in namespaces other than `own` end with a
    /// column that names the container, or else the namespace.
    #[must_use]
    pub fn with_own_netns(self, own: Option<Netns>) -> Self {
        Self {
            own_netns: own,
            ..self
        }
    }

    /// The line to print before any event, if the format has one: the
    /// columns, and the zone the times are in (`TIME(UTC)`, `TIME(CET)`)
    /// at Unix time `now_s`.
    #[must_use]
    pub fn header(&self, now_s: u64) -> Option<String> {
        if self.format != Format::Text {
            return None;
        }
        let zone = match &self.zone {
            None => "UTC".to_owned(),
            Some(z) => z(now_s).map_or_else(|| "local".to_owned(), |(_, n)| n),
        };
        let a = self.width.address();
        Some(format!(
            "{:<15} {:<7} {:<15} {:<a$} {:<a$} EVENT",
            format!("TIME({zone})"),
            "PID",
            "COMM",
            "LADDR:LPORT",
            "RADDR:RPORT"
        ))
    }

    /// `HH:MM:SS.micros` of `ts_ns`, in UTC or the local zone.
    fn clock_column(&self, ts_ns: u64) -> String {
        let wall = self.clock.wall(ts_ns);
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let offset = (self.zone.as_ref())
            .and_then(|z| z(since.as_secs()))
            .map_or(0, |(o, _)| i64::from(o));
        let secs = i64::try_from(since.as_secs()).unwrap_or(0) + offset;
        let day = secs.rem_euclid(86_400);
        format!(
            "{:02}:{:02}:{:02}.{:06}",
            day / 3600,
            day / 60 % 60,
            day % 60,
            since.subsec_micros()
        )
    }

    /// Calls `f` with the RFC 3339 text of `ts_ns`'s whole second, up to
    /// and with the `.` (cached), and the microseconds within it.
    pub(super) fn with_second<R>(&self, ts_ns: u64, f: impl FnOnce(&str, u32) -> R) -> R {
        let wall = self.clock.wall(ts_ns);
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (sec, micros) = (since.as_secs(), since.subsec_micros());
        let mut cache = self.second.borrow_mut();
        if cache.0 != sec {
            let full = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(sec))
                .to_string();
            // `...:27Z` -> `...:27.`
            cache.1 = format!("{}.", full.trim_end_matches('Z'));
            cache.0 = sec;
        }
        f(&cache.1, micros)
    }

    /// `2026-11-21T16:05:27.123456Z`, as `humantime::format_rfc3339_micros`.
    #[cfg(test)]
    pub(super) fn time(&self, ts_ns: u64) -> String {
        self.with_second(ts_ns, |prefix, micros| {
            let mut t = String::with_capacity(prefix.len() + 7);
            t.push_str(prefix);
            let _ = write!(t, "{micros:06}Z");
            t
        })
    }

    /// Append one event, newline-terminated, to the batch `out`;
    /// `container` is the owner's, where known.
    pub fn write(&self, ev: &Event, container: Option<&str>, out: &mut BytesMut) {
        match self.format {
            Format::Text => self.text(ev, container, out),
            Format::Json => self.json(ev, container, out),
        }
    }

    fn text(&self, ev: &Event, container: Option<&str>, out: &mut BytesMut) {
        let Some(e) = ev.endpoints() else {
            // A failed syscall: only --timewait asks for them.
            return;
        };
        let clock = self.clock_column(ev.ts_ns());
        let (pid, comm) = match ev.owner() {
            Some(o) => (o.pid.to_string(), escape(&o.comm)),
            None => ("?".to_owned(), "?".into()),
        };
        let a = self.width.address();
        let _ = write!(
            out,
            "{clock:<15} {pid:<7} {comm:<15} {:<a$} {:<a$} ",
            endpoint(e.local, e.lport),
            endpoint(e.remote, e.rport)
        );
        match ev {
            Event::State(s) => {
                // The dwell right-aligned after the longest transition
                // (ESTABLISHED -> CLOSE_WAIT), so that the eye can scan it.
                let dwell = s.dwell.map_or_else(|| "?".to_owned(), human_duration);
                let transition = format!("{} -> {}", s.old.name(), s.new.name());
                let _ = write!(out, "{transition:<25} {dwell:>8}");
            }
            Event::Reset(r) => {
                let _ = write!(out, "RST {}", r.direction.as_str());
                if let Some(st) = r.state {
                    let _ = write!(out, " state={}", st.name());
                }
                if let Some(code) = r.reason {
                    let _ = write!(out, " reason={}", self.reasons.name(code));
                }
            }
            Event::Failure(_) => {}
        }
        if let Some(ns) = ev.netns()
            && self.own_netns.is_some_and(|own| own != ns)
        {
            match container {
                // Twelve hex digits, as `docker ps` shows an id.
                Some(c) => {
                    let short = c.get(..12).unwrap_or(c);
                    let _ = write!(out, "  container={}", escape(short));
                }
                None => {
                    let _ = write!(out, "  netns={ns}");
                }
            }
        }
        out.put_u8(b'\n');
    }
}
