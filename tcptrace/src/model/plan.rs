//! The typed plan of a run: which analyses run with which options, and the
//! filters, outputs and sizes they share. The CLI edge builds it from the
//! flags; everything below `main` reads this instead of the flags.

use std::{net::SocketAddr, time::Duration};

use tcptrace_common::HistBy;

use crate::model::filter::{Filter, PortFilter};

/// `--hist`: dwell histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistOptions {
    pub interval: Duration,
    /// [`HistBy::State`] unless `--by` splits them.
    pub by: HistBy,
}

/// `--closewait-leaks`: CLOSE_WAIT leak reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakOptions {
    /// Report a socket once it has been in CLOSE_WAIT this long.
    pub min_age: Duration,
    pub interval: Duration,
    /// How long symbolizing one process's stacks may take.
    pub symbolize_timeout: Duration,
}

/// `--timewait`: the TIME_WAIT census, port failures and advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimewaitOptions {
    pub interval: Duration,
}

/// The analyses of one run. With none of the reporting analyses, the stream
/// runs; the reporting analyses compose in any combination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Analyses {
    pub stream: bool,
    pub hist: Option<HistOptions>,
    pub closewait: Option<LeakOptions>,
    pub timewait: Option<TimewaitOptions>,
}

impl Analyses {
    /// How many analyses run.
    #[must_use]
    pub fn count(&self) -> usize {
        usize::from(self.stream)
            + usize::from(self.hist.is_some())
            + usize::from(self.closewait.is_some())
            + usize::from(self.timewait.is_some())
    }
}

/// Sizes of the kernel's maps and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Ring-buffer size in bytes: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
    /// Sockets tracked at once (`--max-sockets`).
    pub max_sockets: u32,
}

/// Everything a run needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub analyses: Analyses,
    /// Owner and state filters, applied to decoded events and reports.
    pub filter: Filter,
    /// Family and port filters, applied in the kernel and to sock_diag.
    pub ports: PortFilter,
    pub json: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Serve Prometheus metrics here.
    pub prometheus: Option<SocketAddr>,
    pub sizes: Sizes,
}

impl Plan {
    /// The report period of the reporting analyses (they share `-i`).
    #[must_use]
    pub fn report_interval(&self) -> Option<Duration> {
        let a = &self.analyses;
        a.hist
            .map(|h| h.interval)
            .or(a.closewait.map(|l| l.interval))
            .or(a.timewait.map(|t| t.interval))
    }
}
