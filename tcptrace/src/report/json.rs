//! What every JSON object tcptrace writes shares (the contract is
//! `docs/json.md`, the schemas `docs/schema/`): the schema version, the
//! endpoint object, the report kind and the wall-clock time.

use std::{
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// The schema version every top-level object carries as `"v"`. Raised when
/// a key is added, renamed or removed, or changes meaning or type (the
/// schemas allow no other keys).
pub const VERSION: u32 = 1;

/// Append `v` as one JSON line (compact, newline-terminated) to `buf`.
pub fn json_line<T: Serialize>(buf: &mut bytes::BytesMut, v: &T) -> serde_json::Result<()> {
    buf.extend_from_slice(&serde_json::to_vec(v)?);
    buf.extend_from_slice(b"\n");
    Ok(())
}

/// One end of a connection, `{"addr": "10.0.0.1", "port": 8080}`, named
/// `local` or `remote` by the object that holds it. Where that object
/// aggregates over the address or the port (a census by destination keeps
/// no local port), it is null.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
}

impl Endpoint {
    /// Address and port.
    #[must_use]
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self {
            addr: Some(addr),
            port: Some(port),
        }
    }

    /// An address whose ports are aggregated away.
    #[must_use]
    pub fn addr(addr: IpAddr) -> Self {
        Self {
            addr: Some(addr),
            port: None,
        }
    }

    /// A port on any address.
    #[must_use]
    pub fn port(port: u16) -> Self {
        Self {
            addr: None,
            port: Some(port),
        }
    }
}

/// `"interval"` or `"final"`: which report an object is part of.
#[must_use]
pub fn report_kind(final_report: bool) -> &'static str {
    if final_report { "final" } else { "interval" }
}

/// The report an object is part of: its kind and its time (as
/// [`wall_time`] writes it), the same for every object of one report.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    pub final_report: bool,
    pub time: &'a str,
}

impl Report<'_> {
    /// `"interval"` or `"final"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        report_kind(self.final_report)
    }
}

/// A wall-clock time as every object gives it: RFC 3339, UTC, with
/// microseconds (`2026-11-21T16:05:27.123456Z`). A clock set before 1970
/// (which humantime cannot format) gives the epoch.
#[must_use]
pub fn wall_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t.max(UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn endpoints_always_have_both_keys() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for (e, want) in [
            (Endpoint::new(ip, 80), r#"{"addr":"2001:db8::1","port":80}"#),
            (Endpoint::addr(ip), r#"{"addr":"2001:db8::1","port":null}"#),
            (Endpoint::port(80), r#"{"addr":null,"port":80}"#),
        ] {
            assert_eq!(serde_json::to_string(&e).unwrap(), want);
        }
    }

    #[test]
    fn wall_times_have_microseconds_and_survive_1969() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(wall_time(t), "2023-11-14T22:13:20.123456Z");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(wall_time(before), "1970-01-01T00:00:00.000000Z");
    }
}
