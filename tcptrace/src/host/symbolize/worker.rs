//! The symbolizer process: `tcptrace` re-executed with [`ARG`]. It reads
//! one JSON request per line on stdin and answers each with one JSON line
//! on stdout. Everything that opens or maps the traced processes' files
//! happens here, so the tracer can kill it when an open blocks (a FIFO, a
//! lease) or lose it to a SIGBUS (a binary truncated under its mapping).

use std::{
    io::{self, BufRead as _, Write as _},
    process::ExitCode,
};

use serde::{Deserialize, Serialize};

use super::{preflight, resolve::Resolver};
use crate::model::stack::Frame;

/// The first argument that makes `tcptrace` the symbolizer process.
pub const ARG: &str = "--internal-symbolizer-worker";

/// Symbolize `addrs` of process `pid`.
#[derive(Serialize, Deserialize)]
pub struct Request {
    pub pid: u32,
    pub addrs: Vec<u64>,
}

/// The frames of one request, in its order.
#[derive(Serialize, Deserialize)]
pub struct Response {
    pub frames: Vec<Frame>,
    /// Lines of the process's perf map that did not parse.
    #[serde(default)]
    pub perf_map_bad_lines: u64,
}

/// The symbolizer process's `main`: serve requests until stdin closes.
#[must_use]
pub fn main() -> ExitCode {
    // Die with the tracer, even when it is killed.
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err()
        || nix::unistd::getppid() == nix::unistd::Pid::from_raw(1)
    {
        return ExitCode::FAILURE;
    }
    let resolver = Resolver::new();
    let stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    for line in stdin.lines() {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        let Ok(req) = serde_json::from_str::<Request>(&line) else {
            return ExitCode::FAILURE;
        };
        let checked = preflight::check(req.pid, &req.addrs);
        let (frames, perf_map_bad_lines) = resolver.frames(req.pid, &req.addrs, &checked);
        let resp = Response {
            frames,
            perf_map_bad_lines,
        };
        let sent = serde_json::to_writer(&mut stdout, &resp)
            .map_err(io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if sent.is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
