//! Event output: aligned text lines and JSON lines (one object per event).
//! The JSON schema is documented in the README; keep the two in step.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{BufMut as _, BytesMut};
use serde::Serialize;

use crate::{
    event::{Endpoints, Event, Owner, Reset, StateChange},
    offsets::ResetReasons,
};

/// `CLOCK_MONOTONIC` now, in ns: the clock of `bpf_ktime_get_ns()`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// Converts `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero, in ns since the epoch.
    epoch_at_boot_ns: i128,
}

impl Clock {
    /// Sample both clocks now.
    #[must_use]
    pub fn now() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
            i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
        });
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
        Self {
            epoch_at_boot_ns: wall - mono,
        }
    }

    /// A clock whose monotonic zero is the epoch (tests).
    #[must_use]
    pub fn fixed(epoch_at_boot_ns: i128) -> Self {
        Self { epoch_at_boot_ns }
    }

    #[must_use]
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = self.epoch_at_boot_ns + i128::from(mono_ns);
        let ns = u64::try_from(ns).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

/// Writes batches to stdout and remembers a closed pipe (`| head`), after
/// which output is dropped and the caller stops: that is not an error.
#[derive(Debug, Default)]
pub struct StdoutSink {
    closed: bool,
}

impl StdoutSink {
    /// Write and clear `buf`.
    pub fn write(&mut self, buf: &mut BytesMut) -> std::io::Result<()> {
        use std::io::Write as _;
        if buf.is_empty() || self.closed {
            buf.clear();
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let r = out.write_all(buf).and_then(|()| out.flush());
        buf.clear();
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }

    #[must_use]
    pub fn closed(&self) -> bool {
        self.closed
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Formats events; one instance per run.
pub struct Printer {
    format: Format,
    clock: Clock,
    reasons: ResetReasons,
    /// The RFC 3339 text of the last whole second printed, up to and with
    /// the `.`: events come in bursts within one second, and formatting a
    /// date per event was a good part of the stream's CPU.
    second: std::cell::RefCell<(u64, String)>,
}

/// The header line of the text format.
pub const TEXT_HEADER: &str = "TIME(UTC)        PID     COMM             LADDR:LPORT                                  RADDR:RPORT                                  EVENT";

fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

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

fn owner_source(o: Option<&Owner>) -> &'static str {
    match o.map(|o| o.source) {
        Some(tcptrace_common::OwnerSource::Syscall) => "syscall",
        Some(tcptrace_common::OwnerSource::Io) => "io",
        Some(tcptrace_common::OwnerSource::Procfs) => "procfs",
        Some(tcptrace_common::OwnerSource::Unknown) | None => "unknown",
    }
}

/// One event line. Flat, not `#[serde(flatten)]`-composed: flatten goes
/// through serde's buffering map serializer, several times slower. Keys of
/// the other event type are left out (`None`); an inner `None` is a JSON null.
#[derive(Serialize)]
#[expect(
    clippy::option_option,
    reason = "outer None: the key is absent; inner None: JSON null"
)]
struct JsonEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_ns: u64,
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<&'a str>,
    owner_source: &'static str,
    family: &'static str,
    saddr: String,
    sport: u16,
    daddr: String,
    dport: u16,
    skaddr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dwell_ns: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sock_cookie: Option<Option<u64>>,
}

impl Printer {
    #[must_use]
    pub fn new(format: Format, clock: Clock, reasons: ResetReasons) -> Self {
        Self {
            format,
            clock,
            reasons,
            second: std::cell::RefCell::new((u64::MAX, String::new())),
        }
    }

    /// The line to print before any event, if the format has one.
    #[must_use]
    pub fn header(&self) -> Option<&'static str> {
        (self.format == Format::Text).then_some(TEXT_HEADER)
    }

    /// `2026-11-21T16:05:27.123456Z`, as `humantime::format_rfc3339_micros`.
    fn time(&self, ts_ns: u64) -> String {
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
        let mut t = String::with_capacity(cache.1.len() + 7);
        t.push_str(&cache.1);
        let _ = write!(t, "{micros:06}Z");
        t
    }

    /// Append one event, newline-terminated, to the batch `out`.
    pub fn write(&self, ev: &Event, out: &mut BytesMut) {
        match self.format {
            Format::Text => self.text(ev, out),
            Format::Json => {
                let w = (&mut *out).writer();
                let r = match ev {
                    Event::State(s) => serde_json::to_writer(w, &self.json_state(s)),
                    Event::Reset(r) => serde_json::to_writer(w, &self.json_reset(r)),
                    // Only --timewait asks for them, and prints its own.
                    Event::Failure(_) => return,
                };
                // Plain structs into memory: serde_json cannot fail here.
                debug_assert!(r.is_ok());
                out.put_u8(b'\n');
            }
        }
    }

    fn common<'a>(
        &self,
        kind: &'static str,
        ts_ns: u64,
        owner: Option<&'a Owner>,
        e: &Endpoints,
        skaddr: u64,
    ) -> JsonEvent<'a> {
        JsonEvent {
            kind,
            time: self.time(ts_ns),
            ts_ns,
            pid: owner.map(|o| o.pid),
            tid: owner.map(|o| o.tid),
            comm: owner.map(|o| o.comm.as_str()),
            owner_source: owner_source(owner),
            family: if e.is_ipv6() { "ipv6" } else { "ipv4" },
            saddr: e.local.to_string(),
            sport: e.lport,
            daddr: e.remote.to_string(),
            dport: e.rport,
            skaddr: format!("{skaddr:#x}"),
            old_state: None,
            new_state: None,
            dwell_ns: None,
            direction: None,
            state: None,
            reason: None,
            reason_code: None,
            sock_cookie: None,
        }
    }

    fn json_state<'a>(&self, s: &'a StateChange) -> JsonEvent<'a> {
        JsonEvent {
            old_state: Some(s.old.name()),
            new_state: Some(s.new.name()),
            dwell_ns: Some(
                s.dwell
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            ),
            ..self.common("state", s.ts_ns, s.owner.as_ref(), &s.endpoints, s.skaddr)
        }
    }

    fn json_reset<'a>(&self, r: &'a Reset) -> JsonEvent<'a> {
        JsonEvent {
            direction: Some(r.direction.as_str()),
            state: Some(r.state.map(tcptrace_common::TcpState::name)),
            reason: Some(r.reason.map(|c| self.reasons.name(c))),
            reason_code: Some(r.reason),
            sock_cookie: Some((r.cookie != 0).then_some(r.cookie)),
            ..self.common("reset", r.ts_ns, r.owner.as_ref(), &r.endpoints, r.skaddr)
        }
    }

    fn text(&self, ev: &Event, out: &mut BytesMut) {
        let Some(e) = ev.endpoints() else {
            // A failed syscall: only --timewait asks for them.
            return;
        };
        let time = self.time(ev.ts_ns());
        // `2026-11-21T16:05:27.123456Z` -> `16:05:27.123456`
        let clock = time.get(11..26).unwrap_or(&time);
        let (pid, comm) = match ev.owner() {
            Some(o) => (o.pid.to_string(), o.comm.as_str()),
            None => ("?".to_owned(), "?"),
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
        out.put_u8(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::TcpState;

    use super::*;
    use crate::event::{decode, tests::raw_state};

    fn printer(format: Format) -> Printer {
        Printer::new(
            format,
            Clock::fixed(1_700_000_000_000_000_000),
            ResetReasons::from_pairs(vec![(14, "TCP_STATE".into())]),
        )
    }

    fn state_event() -> Event {
        let raw = raw_state(TcpState::Established, TcpState::CloseWait);
        decode(&crate::event::as_bytes(&raw)).unwrap()
    }

    #[test]
    fn json_state_has_the_documented_keys() {
        let mut out = BytesMut::new();
        printer(Format::Json).write(&state_event(), &mut out);
        assert!(out.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "state");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["comm"], "server");
        assert_eq!(v["owner_source"], "io");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["saddr"], "127.0.0.1");
        assert_eq!(v["sport"], 8080);
        assert_eq!(v["daddr"], "127.0.0.2");
        assert_eq!(v["dport"], 40000);
        assert_eq!(v["old_state"], "ESTABLISHED");
        assert_eq!(v["new_state"], "CLOSE_WAIT");
        assert_eq!(v["dwell_ns"], 1_500_000);
        assert_eq!(v["time"], "2023-11-14T22:13:20.000001Z");
    }

    #[test]
    fn json_unknown_owner_is_null_not_the_cpu_task() {
        let mut raw = raw_state(TcpState::Established, TcpState::CloseWait);
        raw.owner_source = 0;
        raw.dwell_ns = tcptrace_common::DWELL_UNKNOWN;
        let ev = decode(&crate::event::as_bytes(&raw)).unwrap();
        let mut out = BytesMut::new();
        printer(Format::Json).write(&ev, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["pid"].is_null());
        assert!(v["comm"].is_null());
        assert!(v["dwell_ns"].is_null());
        assert_eq!(v["owner_source"], "unknown");
    }

    #[test]
    fn json_reset_has_direction_state_and_named_reason() {
        let ev = Event::Reset(Reset {
            ts_ns: 0,
            skaddr: 0,
            cookie: 0,
            owner: None,
            endpoints: *state_event().endpoints().expect("a state event"),
            direction: crate::event::Direction::Sent,
            state: Some(TcpState::Established),
            reason: Some(14),
        });
        let mut out = BytesMut::new();
        printer(Format::Json).write(&ev, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "reset");
        assert_eq!(v["direction"], "sent");
        assert_eq!(v["state"], "ESTABLISHED");
        assert_eq!(v["reason"], "TCP_STATE");
        assert_eq!(v["reason_code"], 14);
    }

    /// An owner whose comm comes from raw kernel bytes, as `decode` makes it.
    fn owner(pid: u32, raw_comm: &[u8], source: tcptrace_common::OwnerSource) -> Owner {
        let mut comm = [0u8; tcptrace_common::COMM_LEN];
        comm[..raw_comm.len()].copy_from_slice(raw_comm);
        let raw = tcptrace_common::Owner {
            tgid: pid,
            tid: pid + 1,
            comm,
        };
        Owner {
            pid,
            tid: pid + 1,
            comm: raw.comm_lossy().to_string(),
            source,
        }
    }

    fn endpoints(local: &str, lport: u16, remote: &str, rport: u16) -> Endpoints {
        Endpoints {
            local: local.parse().unwrap(),
            lport,
            remote: remote.parse().unwrap(),
            rport,
        }
    }

    /// One of each shape of JSON line: v4 and v6, both reset directions,
    /// known and unknown reasons, unknown owner and dwell, awkward comms.
    fn golden_events() -> Vec<Event> {
        use tcptrace_common::OwnerSource as S;
        let v4 = endpoints("10.0.0.1", 8080, "192.168.255.0", 0);
        let v6 = endpoints("2001:db8::1", 65535, "::ffff:10.1.2.3", 443);
        vec![
            Event::State(StateChange {
                ts_ns: 1_500_000_123,
                skaddr: 0xffff_8880_0000_1000,
                owner: Some(owner(42, b"server", S::Io)),
                endpoints: v4,
                old: TcpState::Established,
                new: TcpState::CloseWait,
                dwell: Some(Duration::from_micros(1_500)),
            }),
            Event::State(StateChange {
                ts_ns: 0,
                skaddr: 0,
                owner: None,
                endpoints: v6,
                old: TcpState::Close,
                new: TcpState::SynSent,
                dwell: None,
            }),
            Event::State(StateChange {
                ts_ns: u64::MAX / 4,
                skaddr: u64::MAX,
                owner: Some(owner(u32::MAX - 1, b"a\"b\\c\n\x01\x1f\x7f", S::Syscall)),
                endpoints: endpoints("::", 1, "::1", 2),
                old: TcpState::FinWait1,
                new: TcpState::TimeWait,
                dwell: Some(Duration::ZERO),
            }),
            Event::State(StateChange {
                ts_ns: 999_999_999,
                skaddr: 0xabc,
                owner: Some(owner(1, b"\xff\xfeok\xc3\xa9\xe2\x82", S::Procfs)),
                endpoints: endpoints("fe80::1:0:0:2", 3, "1:0:0:2::", 4),
                old: TcpState::Listen,
                new: TcpState::NewSynRecv,
                dwell: Some(Duration::from_hours(24)),
            }),
            Event::Reset(Reset {
                ts_ns: 2_000,
                skaddr: 0x10,
                cookie: 0,
                owner: Some(owner(7, b"\t\x08\x0c\r", S::Io)),
                endpoints: v4,
                direction: crate::event::Direction::Sent,
                state: Some(TcpState::Established),
                reason: Some(14),
            }),
            Event::Reset(Reset {
                ts_ns: 3_000,
                skaddr: 0,
                cookie: 0,
                owner: None,
                endpoints: v6,
                direction: crate::event::Direction::Sent,
                state: None,
                reason: Some(99),
            }),
            Event::Reset(Reset {
                ts_ns: 4_000,
                skaddr: 0xffff_8880_dead_beef,
                cookie: u64::MAX,
                owner: Some(owner(8, b"sixteen-bytes-xx", S::Syscall)),
                endpoints: v4,
                direction: crate::event::Direction::Received,
                state: Some(TcpState::LastAck),
                reason: None,
            }),
            Event::Reset(Reset {
                ts_ns: 5_000,
                skaddr: 1,
                cookie: 12_345,
                owner: Some(owner(9, b"", S::Io)),
                endpoints: v6,
                direction: crate::event::Direction::Sent,
                state: Some(TcpState::SynRecv),
                reason: Some(15),
            }),
        ]
    }

    /// The JSON lines of `golden_events`, byte for byte: the schema is public.
    /// The file holds a raw DEL and invalid-UTF-8 replacement characters.
    const GOLDEN_JSON: &str = include_str!("testdata/golden.jsonl");

    #[test]
    fn json_lines_are_byte_for_byte_stable() {
        let p = Printer::new(
            Format::Json,
            Clock::fixed(1_700_000_000_000_000_000),
            ResetReasons::from_pairs(vec![(14, "TCP_STATE".into()), (15, "we\"ird\\".into())]),
        );
        let mut out = BytesMut::new();
        for ev in golden_events() {
            p.write(&ev, &mut out);
        }
        let out = String::from_utf8(out.to_vec()).unwrap();
        assert_eq!(out, GOLDEN_JSON);
    }

    #[test]
    fn text_line_shows_owner_endpoints_transition_and_dwell() {
        let mut out = BytesMut::new();
        printer(Format::Text).write(&state_event(), &mut out);
        let out = String::from_utf8(out.to_vec()).unwrap();
        assert!(out.starts_with("22:13:20.000001 "), "{out}");
        assert!(out.contains(" 42 "), "{out}");
        assert!(out.contains("server"), "{out}");
        assert!(out.contains("127.0.0.1:8080"), "{out}");
        assert!(out.contains("127.0.0.2:40000"), "{out}");
        assert!(
            out.trim_end()
                .ends_with("ESTABLISHED -> CLOSE_WAIT after 1.50ms"),
            "{out}"
        );
    }

    #[test]
    fn cached_second_formats_like_humantime() {
        let p = Printer::new(
            Format::Json,
            Clock::fixed(1_763_740_000_000_000_000),
            ResetReasons::default(),
        );
        // Within one second, across a second, backwards, and micros at both ends.
        for ts in [
            0u64,
            999,
            1_000,
            999_999_000,
            1_000_000_000,
            1_000_000_001,
            5,
            86_400_999_999_999,
        ] {
            let want = humantime::format_rfc3339_micros(p.clock.wall(ts)).to_string();
            assert_eq!(p.time(ts), want, "ts {ts}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_nanos(812)), "812ns");
        assert_eq!(human_duration(Duration::from_nanos(3_200)), "3.2µs");
        assert_eq!(human_duration(Duration::from_micros(1_500)), "1.50ms");
        assert_eq!(human_duration(Duration::from_millis(2_001)), "2.001s");
    }
}
