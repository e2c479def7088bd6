//! Event output: aligned text lines and JSON lines (one object per event).
//! The JSON schema is documented in the README; keep the two in step.

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

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Formats events; one instance per run.
pub struct Printer {
    format: Format,
    pub(super) clock: Clock,
    pub(super) reasons: ResetReasons,
    /// tcptrace's own namespace: text lines name only the others.
    own_netns: Option<Netns>,
    /// The RFC 3339 text of the last whole second printed, up to and with
    /// the `.`: events come in bursts within one second, so the date is
    /// formatted once per second, not once per event.
    second: std::cell::RefCell<(u64, String)>,
}

/// The header line of the text format.
pub const TEXT_HEADER: &str = "TIME(UTC)        PID     COMM             LADDR:LPORT                                  RADDR:RPORT                                  EVENT";

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
            own_netns: None,
            second: std::cell::RefCell::new((u64::MAX, String::new())),
        }
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

    /// The line to print before any event, if the format has one.
    #[must_use]
    pub fn header(&self) -> Option<&'static str> {
        (self.format == Format::Text).then_some(TEXT_HEADER)
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
        let time = self.time(ev.ts_ns());
        // `2026-11-21T16:05:27.123456Z` -> `16:05:27.123456`
        let clock = time.get(11..26).unwrap_or(&time);
        let (pid, comm) = match ev.owner() {
            Some(o) => (o.pid.to_string(), escape(&o.comm)),
            None => ("?".to_owned(), "?".into()),
        };
        let _ = write!(
            out,
            "{clock:<16} {pid:<7} {comm:<16} {:<44} {:<44} ",
            endpoint(e.local, e.lport),
            endpoint(e.remote, e.rport)
        );
        match ev {
            Event::State(s) => {
                let dwell = s.dwell.map_or_else(|| "?".to_owned(), human_duration);
                let _ = write!(out, "{} -> {} after {dwell}", s.old.name(), s.new.name());
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
