//! The JSON event line, written straight into the output batch.

use std::fmt::Write as _;

use bytes::{BufMut as _, BytesMut};

use super::{Printer, owner_source};
use crate::model::event::Event;

/// `{"v":1,"type":"`: the start of every line, with the schema version
/// ([`crate::report::json::VERSION`], which the serde reference writes:
/// the byte-for-byte test keeps the two equal).
const VERSION_PREFIX: &[u8] = b"{\"v\":1,\"type\":\"";

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
    /// One JSON line, written straight into `out`, with no String per
    /// address, `skaddr` or time and no small write per key: the stream's
    /// CPU goes into this. The bytes are exactly what serializing the flat
    /// struct in `serde_reference` (tests) gives: keys in that order,
    /// compact, the other event type's keys absent, unknowns as null.
    pub(super) fn json(&self, ev: &Event, container: Option<&str>, out: &mut BytesMut) {
        let (kind, ts_ns, owner, e, skaddr) = match ev {
            Event::State(s) => ("state", s.ts_ns, s.owner.as_ref(), &s.endpoints, s.skaddr),
            Event::Reset(r) => ("reset", r.ts_ns, r.owner.as_ref(), &r.endpoints, r.skaddr),
            // Only --timewait asks for them, and prints its own.
            Event::Failure(_) => return,
        };
        // A v6 line is about 400 bytes: one reservation, not one per piece.
        out.reserve(512);
        out.extend_from_slice(VERSION_PREFIX);
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
        out.extend_from_slice(b"\",\"netns\":");
        put_opt_int(out, ev.netns().map(|n| n.0));
        out.extend_from_slice(b",\"container\":");
        match container {
            Some(c) => put_json_str(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if e.is_ipv6() {
            b",\"family\":\"ipv6\",\"local\":{\"addr\":\""
        } else {
            b",\"family\":\"ipv4\",\"local\":{\"addr\":\""
        });
        put_ip(out, e.local);
        out.extend_from_slice(b"\",\"port\":");
        put_int(out, e.lport);
        out.extend_from_slice(b"},\"remote\":{\"addr\":\"");
        put_ip(out, e.remote);
        out.extend_from_slice(b"\",\"port\":");
        put_int(out, e.rport);
        out.extend_from_slice(b"},\"skaddr\":\"");
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
}
