//! Event output: aligned text lines and JSON lines (one object per event).
//! The JSON schema is documented in the README; keep the two in step.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{BufMut as _, BytesMut};

use crate::{
    event::{Event, Owner},
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

/// A decimal integer, as `serde_json` (which uses itoa) writes it.
fn put_int(out: &mut BytesMut, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// An integer or `null`.
fn put_opt_int(out: &mut BytesMut, v: Option<impl itoa::Integer>) {
    match v {
        Some(v) => put_int(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// Microseconds as six digits, zero-padded (`{:06}`).
fn put_micros(out: &mut BytesMut, micros: u32) {
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + u8::try_from(m % 10).unwrap_or(0);
        m /= 10;
    }
    out.extend_from_slice(&digits);
}

/// `{:#x}`: `0x` and lowercase hex without leading zeros (`0x0` for zero).
fn put_hex(out: &mut BytesMut, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (pair, b) in digits.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
    }
    let first = digits.iter().position(|&d| d != b'0').unwrap_or(15);
    out.extend_from_slice(b"0x");
    out.extend_from_slice(digits.get(first..).unwrap_or_default());
}

/// An address as its `Display` text. IPv4 by hand (the common case); IPv6
/// through std's formatter, whose `::` compression and `::ffff:a.b.c.d`
/// rules are not worth copying, writing into `out` without a String.
fn put_ip(out: &mut BytesMut, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            put_int(out, a);
            out.put_u8(b'.');
            put_int(out, b);
            out.put_u8(b'.');
            put_int(out, c);
            out.put_u8(b'.');
            put_int(out, d);
        }
        // Writing into a BytesMut cannot fail.
        std::net::IpAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// A JSON string, escaped as `serde_json` does: `"` and `\\`, the short
/// escapes `\b \f \n \r \t`, other control characters as `\u00XX`
/// (lowercase hex); everything else, DEL and non-ASCII included, as is.
/// `s` is valid UTF-8 (comms are decoded lossily), so the output is too.
fn put_json_str(out: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.put_u8(b'"');
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(bytes.get(plain..i).unwrap_or_default());
        out.extend_from_slice(short);
        plain = i + 1;
    }
    out.extend_from_slice(bytes.get(plain..).unwrap_or_default());
    out.put_u8(b'"');
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

    /// Calls `f` with the RFC 3339 text of `ts_ns`'s whole second, up to
    /// and with the `.` (cached), and the microseconds within it.
    fn with_second<R>(&self, ts_ns: u64, f: impl FnOnce(&str, u32) -> R) -> R {
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
    fn time(&self, ts_ns: u64) -> String {
        self.with_second(ts_ns, |prefix, micros| {
            let mut t = String::with_capacity(prefix.len() + 7);
            t.push_str(prefix);
            let _ = write!(t, "{micros:06}Z");
            t
        })
    }

    /// Append one event, newline-terminated, to the batch `out`.
    pub fn write(&self, ev: &Event, out: &mut BytesMut) {
        match self.format {
            Format::Text => self.text(ev, out),
            Format::Json => self.json(ev, out),
        }
    }

    /// One JSON line, written straight into `out`: serde's many small writes
    /// and the Strings it needed for addresses, `skaddr` and the time were
    /// most of the stream's CPU. The bytes are exactly what serializing the
    /// flat struct in `serde_reference` (tests) gives: keys in that order,
    /// compact, the other event type's keys absent, unknowns as null.
    fn json(&self, ev: &Event, out: &mut BytesMut) {
        let (kind, ts_ns, owner, e, skaddr) = match ev {
            Event::State(s) => ("state", s.ts_ns, s.owner.as_ref(), &s.endpoints, s.skaddr),
            Event::Reset(r) => ("reset", r.ts_ns, r.owner.as_ref(), &r.endpoints, r.skaddr),
            // Only --timewait asks for them, and prints its own.
            Event::Failure(_) => return,
        };
        // A v6 line is about 400 bytes: one reservation, not one per piece.
        out.reserve(512);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"time\":\"");
        self.with_second(ts_ns, |prefix, micros| {
            out.extend_from_slice(prefix.as_bytes());
            put_micros(out, micros);
        });
        out.extend_from_slice(b"Z\",\"ts_ns\":");
        put_int(out, ts_ns);
        out.extend_from_slice(b",\"pid\":");
        put_opt_int(out, owner.map(|o| o.pid));
        out.extend_from_slice(b",\"tid\":");
        put_opt_int(out, owner.map(|o| o.tid));
        out.extend_from_slice(b",\"comm\":");
        match owner {
            Some(o) => put_json_str(out, &o.comm),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"owner_source\":\"");
        out.extend_from_slice(owner_source(owner).as_bytes());
        out.extend_from_slice(if e.is_ipv6() {
            b"\",\"family\":\"ipv6\",\"saddr\":\""
        } else {
            b"\",\"family\":\"ipv4\",\"saddr\":\""
        });
        put_ip(out, e.local);
        out.extend_from_slice(b"\",\"sport\":");
        put_int(out, e.lport);
        out.extend_from_slice(b",\"daddr\":\"");
        put_ip(out, e.remote);
        out.extend_from_slice(b"\",\"dport\":");
        put_int(out, e.rport);
        out.extend_from_slice(b",\"skaddr\":\"");
        put_hex(out, skaddr);
        out.put_u8(b'"');
        match ev {
            Event::State(s) => {
                out.extend_from_slice(b",\"old_state\":\"");
                out.extend_from_slice(s.old.name().as_bytes());
                out.extend_from_slice(b"\",\"new_state\":\"");
                out.extend_from_slice(s.new.name().as_bytes());
                out.extend_from_slice(b"\",\"dwell_ns\":");
                put_opt_int(
                    out,
                    s.dwell
                        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                );
            }
            Event::Reset(r) => {
                out.extend_from_slice(b",\"direction\":\"");
                out.extend_from_slice(r.direction.as_str().as_bytes());
                out.extend_from_slice(b"\",\"state\":");
                match r.state {
                    Some(st) => {
                        out.put_u8(b'"');
                        out.extend_from_slice(st.name().as_bytes());
                        out.put_u8(b'"');
                    }
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"reason\":");
                match (r.reason, r.reason.and_then(|c| self.reasons.get(c))) {
                    // Names come from the kernel's tracefs: escape them.
                    (Some(_), Some(name)) => put_json_str(out, name),
                    (Some(c), None) => {
                        out.extend_from_slice(b"\"UNKNOWN(");
                        put_int(out, c);
                        out.extend_from_slice(b")\"");
                    }
                    (None, _) => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"reason_code\":");
                put_opt_int(out, r.reason);
                out.extend_from_slice(b",\"sock_cookie\":");
                put_opt_int(out, (r.cookie != 0).then_some(r.cookie));
            }
            Event::Failure(_) => {}
        }
        out.extend_from_slice(b"}\n");
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

/// The serde writer the JSON lines used to come from, kept as the reference
/// the hand-written one must match byte for byte.
#[cfg(test)]
mod serde_reference {
    use bytes::{BufMut as _, BytesMut};
    use serde::Serialize;

    use super::{Owner, Printer, owner_source};
    use crate::event::{Endpoints, Event, Reset, StateChange};

    /// One event line. Keys of the other event type are left out (`None`);
    /// an inner `None` is a JSON null.
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
        /// What `write` appended for a JSON event before it was hand-written.
        pub(super) fn serde_json_line(&self, ev: &Event, out: &mut BytesMut) {
            let w = (&mut *out).writer();
            let r = match ev {
                Event::State(s) => serde_json::to_writer(w, &self.json_state(s)),
                Event::Reset(r) => serde_json::to_writer(w, &self.json_reset(r)),
                Event::Failure(_) => return,
            };
            assert!(r.is_ok());
            out.put_u8(b'\n');
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
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::TcpState;

    use super::*;
    use crate::event::{Endpoints, Reset, StateChange, decode, tests::raw_state};

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

    /// splitmix64: a fixed sequence, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[usize::try_from(self.below(xs.len() as u64)).unwrap()]
        }

        /// Edge values often, any width otherwise.
        fn int(&mut self) -> u64 {
            match self.below(4) {
                0 => self.pick(&[0, 1, 9, 10, 99, 100, 255, 65_535, 1 << 32, u64::MAX]),
                1 => {
                    let shift = self.below(64);
                    self.next() >> shift
                }
                _ => self.next(),
            }
        }

        fn u32(&mut self) -> u32 {
            u32::try_from(self.int() & u64::from(u32::MAX)).unwrap()
        }

        fn byte(&mut self) -> u8 {
            u8::try_from(self.below(256)).unwrap()
        }

        fn addr(&mut self, v6: bool) -> [u8; 16] {
            let mut a = [0u8; 16];
            if !v6 {
                for b in &mut a[..4] {
                    *b = self.pick(&[0, 1, 9, 10, 99, 100, 199, 200, 255, 127]);
                }
                return a;
            }
            match self.below(5) {
                // ::ffff:a.b.c.d and ::a.b.c.d
                0 | 1 => {
                    if self.below(2) == 0 {
                        a[10..12].copy_from_slice(&[0xff, 0xff]);
                    }
                    a[12..].copy_from_slice(&self.addr(false)[..4]);
                }
                // ::, ::1, 1::
                2 => a[self.pick(&[0, 1, 15])] = self.pick(&[0, 1]),
                // Runs of zero groups of every length, where `::` applies.
                _ => {
                    for group in a.chunks_exact_mut(2) {
                        if self.below(2) == 0 {
                            group.copy_from_slice(&[self.byte() >> 4, self.byte()]);
                        }
                    }
                }
            }
            a
        }

        /// Up to 16 bytes of anything a kernel comm can hold.
        fn comm(&mut self) -> [u8; tcptrace_common::COMM_LEN] {
            let mut bytes = Vec::new();
            let len = self.below(17);
            while (bytes.len() as u64) < len {
                match self.below(9) {
                    0 => bytes.push(b'"'),
                    1 => bytes.push(b'\\'),
                    2 => bytes.push(self.byte() & 0x1f),
                    3 => bytes.push(0x7f),
                    4 => bytes.push(self.byte() | 0x80),
                    5 => bytes.extend_from_slice("é€😀".as_bytes()),
                    _ => bytes.push(b'a' + u8::try_from(self.below(26)).unwrap()),
                }
            }
            let mut comm = [0u8; tcptrace_common::COMM_LEN];
            let n = bytes.len().min(comm.len());
            comm[..n].copy_from_slice(&bytes[..n]);
            comm
        }
    }

    /// Raw records of every field combination, through the real decoder.
    fn generated_events(n: usize) -> Vec<Event> {
        use tcptrace_common::{
            AF_INET, AF_INET6, Addrs, DWELL_UNKNOWN, Header, RST_RECEIVED, RST_SENT, RecordKind,
            ResetEvent, StateEvent,
        };
        let mut rng = Rng(0x7c9_7ace);
        let mut ts = 0u64;
        (0..n)
            .map(|_| {
                // Mostly close together (the cached second), sometimes a jump.
                ts = if rng.below(8) == 0 {
                    rng.int()
                } else {
                    ts.wrapping_add(rng.below(400_000_000))
                };
                let v6 = rng.below(2) == 0;
                let addrs = Addrs {
                    family: if v6 { AF_INET6 } else { AF_INET },
                    sport: u16::try_from(rng.int() & 0xffff).unwrap(),
                    dport: u16::try_from(rng.int() & 0xffff).unwrap(),
                    _pad: 0,
                    saddr: rng.addr(v6),
                    daddr: rng.addr(v6),
                };
                let owner = tcptrace_common::Owner {
                    tgid: rng.pick(&[0, 1, 4242, u32::MAX]),
                    tid: rng.u32(),
                    comm: rng.comm(),
                };
                let owner_source = u32::try_from(rng.below(5)).unwrap();
                let bytes = if rng.below(2) == 0 {
                    crate::event::as_bytes(&StateEvent {
                        header: Header {
                            kind: RecordKind::State as u32,
                            cpu: 0,
                            ts_ns: ts,
                        },
                        skaddr: rng.int(),
                        dwell_ns: if rng.below(4) == 0 {
                            DWELL_UNKNOWN
                        } else {
                            rng.int()
                        },
                        owner,
                        addrs,
                        old_state: u32::try_from(1 + rng.below(12)).unwrap(),
                        new_state: u32::try_from(1 + rng.below(12)).unwrap(),
                        owner_source,
                        _pad: 0,
                    })
                } else {
                    crate::event::as_bytes(&ResetEvent {
                        header: Header {
                            kind: RecordKind::Reset as u32,
                            cpu: 1,
                            ts_ns: ts,
                        },
                        skaddr: if rng.below(3) == 0 { 0 } else { rng.int() },
                        cookie: if rng.below(3) == 0 { 0 } else { rng.int() },
                        owner,
                        addrs,
                        direction: rng.pick(&[RST_SENT, RST_RECEIVED]),
                        // 0 and 13: no state.
                        state: u32::try_from(rng.below(14)).unwrap(),
                        reason: if rng.below(8) == 0 {
                            rng.u32()
                        } else {
                            rng.pick(&[0, 1, 2, 3, 4, 5, 77])
                        },
                        owner_source,
                    })
                };
                decode(&bytes).unwrap()
            })
            .collect()
    }

    #[test]
    fn json_writer_matches_the_serde_reference() {
        let events = generated_events(600);
        let reasons = ResetReasons::from_pairs(vec![
            (1, "NOT_SPECIFIED".into()),
            (2, "NO_SOCKET".into()),
            (3, "we\"ird\\name\n\u{1f}".into()),
            (4, "ünïcödé\u{7f}".into()),
            (5, String::new()),
        ]);
        let mut all = BytesMut::new();
        for epoch in [0, 1_700_000_000_000_000_000, 1_763_740_000_999_999_999] {
            let p = Printer::new(Format::Json, Clock::fixed(epoch), reasons.clone());
            for ev in &events {
                let (mut got, mut want) = (BytesMut::new(), BytesMut::new());
                p.write(ev, &mut got);
                p.serde_json_line(ev, &mut want);
                assert_eq!(got, want, "{ev:?}");
                all.extend_from_slice(&got);
            }
        }
        // The set covers what it is meant to.
        let all = String::from_utf8(all.to_vec()).unwrap();
        for needle in [
            "\"type\":\"state\"",
            "\"type\":\"reset\"",
            "\"family\":\"ipv6\"",
            "\"saddr\":\"::ffff:",
            "\"daddr\":\"::\"",
            "\"pid\":null",
            "\"dwell_ns\":null",
            "\"state\":null",
            "\"reason\":null",
            "\"sock_cookie\":null",
            "\"reason\":\"UNKNOWN(",
            "\"reason\":\"we\\\"ird\\\\name\\n\\u001f\"",
            "\"skaddr\":\"0x0\"",
            "\\u00",
            "\\\"",
            "\\\\",
            "\u{7f}",
            "\u{fffd}",
            "€",
        ] {
            assert!(all.contains(needle), "no {needle} in the generated lines");
        }
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
