//! The `--timewait` output: failure lines, projection announcements and the
//! census report, as JSON lines in [`json`] and as text in [`text`].

use crate::model::{
    clock::Clock,
    netns::Netns,
    socket::endpoint,
    sysctl::Sysctls,
    timewait::{
        advice::{Advice, BindFacts, ConnectFacts},
        census::{DestGroup, Snapshot},
        lives::Tracker,
    },
};

pub mod census_json;
pub mod json;
#[cfg(test)]
mod tests;
pub mod text;

/// Times of the report's lines.
#[derive(Clone, Copy, Debug)]
pub struct Times(pub Clock);

impl Times {
    /// RFC 3339 with microseconds.
    #[must_use]
    pub fn time(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.0.wall(mono_ns)).to_string()
    }

    /// `16:05:27.123456`.
    #[must_use]
    pub fn clock_of(&self, mono_ns: u64) -> String {
        let t = self.time(mono_ns);
        t.get(11..26).unwrap_or(&t).to_owned()
    }
}

/// "at 40.0/s, 100 of 100 ports to 10.0.0.5:80 in use within 2.5 s:
/// exhaustion".
#[must_use]
pub fn projection_text(g: &DestGroup) -> String {
    let p = &g.projection;
    let dest = endpoint(g.key.1, g.key.2);
    let Some(usable) = p.usable else {
        return format!(
            "{} ports to {dest} in use; ip_local_port_range unreadable: no projection",
            p.in_use
        );
    };
    let reuse = if p.reuse { " (tcp_tw_reuse)" } else { "" };
    match p.eta_s {
        Some(eta) => format!(
            "at {:.1}/s, {} of {usable} ports to {dest} in use within {:.1} s: exhaustion{reuse}",
            g.rate_per_s, p.projected, eta
        ),
        None => format!(
            "at {:.1}/s, at most {} of {usable} ports to {dest} in use over the next 60 s: ok{reuse}",
            g.rate_per_s, p.projected
        ),
    }
}

/// Everything one namespace's census report shows.
pub struct CensusReport<'a> {
    pub times: Times,
    pub now_ns: u64,
    pub final_report: bool,
    /// The namespace (null in JSON when namespaces are not followed).
    pub netns: Option<Netns>,
    /// The namespace and its `/run/netns` name, when it is not tcptrace's
    /// own: the text names it in a header line.
    pub foreign: Option<(Netns, Option<&'a str>)>,
    pub snap: &'a Snapshot,
    pub tracker: &'a Tracker,
    pub sysctls: &'a Sysctls,
    /// `tcp_max_tw_buckets` overflows since start, when readable.
    pub overflow: Option<u64>,
    pub binds: &'a [BindFacts],
    pub connects: &'a [ConnectFacts],
    pub advice: &'a [Advice],
    /// Why failed `bind()`/`connect()` calls are not caught, if they are not.
    pub failures_unavailable: Option<&'a str>,
    pub forgotten: Forgotten,
}

/// What the report no longer shows or never explained, to keep memory and
/// work bounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forgotten {
    /// Failures not explained at once: over the rate of lookups.
    pub unexplained: u64,
    /// Failure groups (pid and port, or pid and destination) dropped.
    pub failures: u64,
    /// Census destinations and ports dropped.
    pub groups: u64,
}
