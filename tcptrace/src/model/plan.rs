//! The typed plan of a run: which analyses run with which options, and the
//! filters, outputs and sizes they share. The CLI edge builds it from the
//! flags; everything below `main` reads this instead of the flags.

use std::{net::SocketAddr, time::Duration};

use tcptrace_common::HistBy;

use crate::model::{
    filter::{self, Filter, PortFilter},
    histogram,
    netns::NetnsSpec,
};

/// `--hist`: dwell histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistOptions {
    pub interval: Duration,
    /// [`HistBy::State`] unless `--by` splits them: the kernel's group key.
    pub by: HistBy,
    /// How reports name a group: [`GroupLabel::Container`] only with
    /// [`HistBy::Netns`] (`--by container`).
    pub label: GroupLabel,
}

impl HistOptions {
    /// The name of the split, as `--by`, reports and metric labels spell it
    /// (`container` for `--by container`); None when not split.
    #[must_use]
    pub fn by_name(&self) -> Option<&'static str> {
        match self.label {
            GroupLabel::Container => Some("container"),
            GroupLabel::Key => histogram::by_name(self.by),
        }
    }
}

/// How `--hist` reports name each group of a split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupLabel {
    /// By the kernel's key itself: a port, an address, a comm, a network
    /// namespace's inode.
    #[default]
    Key,
    /// `--by container`: the groups are network namespaces
    /// ([`HistBy::Netns`]), each named by the container in it, which
    /// userspace finds.
    Container,
}

/// `--closewait-leaks`: CLOSE_WAIT leak reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakOptions {
    /// Report a socket once it has been in CLOSE_WAIT this long.
    pub min_age: Duration,
    pub interval: Duration,
    /// How long symbolizing one process's stacks may take.
    pub symbolize_timeout: Duration,
    /// Ask JVMs to rewrite their perf maps (`--no-jvm-attach` turns it off).
    pub jvm_attach: bool,
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

/// Which sockets a run looks at. The default, all `None`, is every network
/// namespace and cgroup on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// `--netns`: one network namespace, for every analysis; filtered in
    /// the kernel once resolved to its inode.
    pub netns: Option<NetnsSpec>,
    /// `--container`: a container id prefix, as [`filter::container_prefix`]
    /// returns it (never empty).
    pub container: Option<String>,
    /// `--cgroup`: an absolute cgroup v2 path, as [`filter::cgroup_prefix`]
    /// returns it; the owner's cgroup must be it or below it.
    pub cgroup: Option<String>,
}

impl Scope {
    /// Whether an owner passes `--container` and `--cgroup`, given its
    /// cgroup path and the id of the container named in it. An owner not
    /// known, or not in a container, never matches a filter that asks for
    /// one: tcptrace does not guess owners.
    #[must_use]
    pub fn accepts_owner(&self, cgroup: Option<&str>, container_id: Option<&str>) -> bool {
        let container = self.container.as_deref().is_none_or(|prefix| {
            container_id.is_some_and(|id| filter::container_matches(prefix, id))
        });
        let cgroup = self
            .cgroup
            .as_deref()
            .is_none_or(|prefix| cgroup.is_some_and(|path| filter::cgroup_matches(prefix, path)));
        container && cgroup
    }
}

/// How the stream's text lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextStyle {
    /// `-T`: times in local time (JSON stays UTC).
    pub local_time: bool,
    /// `-w`: address columns wide enough for IPv6.
    pub wide: bool,
}

/// Everything a run needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub analyses: Analyses,
    /// Owner and state filters, applied to decoded events and reports.
    pub filter: Filter,
    /// Family and port filters, applied in the kernel and to sock_diag.
    pub ports: PortFilter,
    /// Network namespace, container and cgroup (`--netns`, `--container`,
    /// `--cgroup`).
    pub scope: Scope,
    pub json: bool,
    /// `-T` and `-w`: how the stream's text lines look.
    pub text: TextStyle,
    /// `--agent`: the reports feed `/metrics` only; nothing is written on
    /// stdout.
    pub quiet: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Serve Prometheus metrics here.
    pub prometheus: Option<SocketAddr>,
    /// `--top`: how many destinations, processes and ports `/metrics`
    /// names; the rest are summed as `other`.
    pub metrics_top: usize,
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2a9e0b7d3c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";

    #[test]
    fn the_default_scope_accepts_every_owner() {
        let s = Scope::default();
        assert!(s.accepts_owner(None, None));
        assert!(s.accepts_owner(Some("/user.slice"), Some(ID)));
    }

    #[test]
    fn scope_filters_need_a_known_owner_and_all_match() {
        let s = Scope {
            container: Some("4f1c".into()),
            cgroup: Some("/system.slice".into()),
            ..Scope::default()
        };
        let path = "/system.slice/docker-4f1c.scope";
        assert!(s.accepts_owner(Some(path), Some(ID)));
        assert!(!s.accepts_owner(Some(path), None), "not in a container");
        assert!(!s.accepts_owner(None, Some(ID)), "no cgroup path");
        assert!(!s.accepts_owner(Some("/system.slicer"), Some(ID)));
        assert!(!s.accepts_owner(Some(path), Some("9abc")));
    }

    #[test]
    fn splits_are_named_as_by_spells_them() {
        let hist = |by, label| HistOptions {
            interval: Duration::from_secs(1),
            by,
            label,
        };
        assert_eq!(hist(HistBy::State, GroupLabel::Key).by_name(), None);
        assert_eq!(
            hist(HistBy::Netns, GroupLabel::Key).by_name(),
            Some("netns")
        );
        assert_eq!(
            hist(HistBy::Netns, GroupLabel::Container).by_name(),
            Some("container")
        );
    }
}
