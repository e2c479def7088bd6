//! Rendering of model types for people (text), programs (JSON) and
//! Prometheus. No I/O beyond the buffer or writer it is given.

pub mod closewait;
pub mod event_line;
pub mod hist;
pub mod histogram;
pub mod json;
pub mod prometheus;
pub mod summary;
pub mod text;
pub mod timewait;
pub mod version;

pub use json::json_line;
