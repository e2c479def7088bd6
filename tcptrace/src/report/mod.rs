//! Rendering of model types for people (text), programs (JSON) and
//! Prometheus. No I/O beyond the buffer or writer it is given.

pub mod closewait;
pub mod event_line;
pub mod hist;
pub mod histogram;
pub mod prometheus;
pub mod summary;
pub mod text;
pub mod timewait;
pub mod version;

/// Append `v` as one JSON line (compact, newline-terminated) to `buf`.
pub fn json_line<T: serde::Serialize>(buf: &mut bytes::BytesMut, v: &T) -> serde_json::Result<()> {
    buf.extend_from_slice(&serde_json::to_vec(v)?);
    buf.extend_from_slice(b"\n");
    Ok(())
}
