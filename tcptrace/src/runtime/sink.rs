//! Standard output for reports and events: batches written whole, and a
//! closed pipe (`| head`) remembered, after which output is dropped and the
//! run stops: that is not an error. `--agent` writes nothing: its reports
//! feed `/metrics` only.

use bytes::BytesMut;

/// Writes batches to stdout and remembers a closed pipe (`| head`), after
/// which output is dropped and the caller stops: that is not an error.
#[derive(Debug, Default)]
pub struct StdoutSink {
    closed: bool,
    /// Drop every batch (`--agent`).
    quiet: bool,
}

impl StdoutSink {
    /// A sink that drops every batch: nothing is written on stdout.
    #[must_use]
    pub fn quiet() -> Self {
        StdoutSink {
            closed: false,
            quiet: true,
        }
    }

    /// Write and clear `buf`.
    pub fn write(&mut self, buf: &mut BytesMut) -> std::io::Result<()> {
        use std::io::Write as _;
        if buf.is_empty() || self.closed || self.quiet {
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
