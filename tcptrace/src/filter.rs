//! Filters. Family and ports are applied in the kernel (cheapest, before any
//! map work); pid, comm and state need the owner and the decoded event, so
//! they are applied here.

use tcptrace_common::{
    Config, TcpState,
    config::{FAMILY_V4, FAMILY_V6},
};

use crate::{cli::Cli, event::Event};

/// The userspace half of the filters.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comm: Option<String>,
    pub states: Vec<TcpState>,
}

impl Filter {
    #[must_use]
    pub fn from_cli(cli: &Cli) -> Self {
        Self {
            pids: cli.pids.clone(),
            comm: cli.comm.clone(),
            states: cli.states.clone(),
        }
    }

    /// Whether `ev` passes. Events whose owner is unknown never match a pid or
    /// comm filter: tcptrace does not guess owners.
    #[must_use]
    pub fn matches(&self, ev: &Event) -> bool {
        if !self.pids.is_empty() && !ev.owner().is_some_and(|o| self.pids.contains(&o.pid)) {
            return false;
        }
        if let Some(comm) = &self.comm
            && ev.owner().is_none_or(|o| &o.comm != comm)
        {
            return false;
        }
        if self.states.is_empty() {
            return true;
        }
        match ev {
            Event::State(s) => self.states.contains(&s.old) || self.states.contains(&s.new),
            Event::Reset(r) => r.state.is_some_and(|st| self.states.contains(&st)),
            Event::Failure(_) => false,
        }
    }
}

/// Write the kernel half of the filters into `cfg`.
pub fn apply_kernel_filters(cli: &Cli, cfg: &mut Config) {
    cfg.families = match (cli.ipv4, cli.ipv6) {
        (true, false) => FAMILY_V4,
        (false, true) => FAMILY_V6,
        _ => FAMILY_V4 | FAMILY_V6,
    };
    cfg.port = cli.port.unwrap_or(0);
    cfg.lport = cli.lport.unwrap_or(0);
    cfg.rport = cli.rport.unwrap_or(0);
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tcptrace_common::{AF_INET, AF_INET6, OwnerSource};

    use super::*;
    use crate::event::{decode, tests::raw_state};

    fn ev(old: TcpState, new: TcpState, source: OwnerSource) -> Event {
        let mut raw = raw_state(old, new);
        raw.owner_source = source as u32;
        decode(&crate::event::as_bytes(&raw)).unwrap()
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tcptrace").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn pid_filter_matches_the_owner_and_never_an_unknown_owner() {
        let f = Filter::from_cli(&cli(&["-p", "42"]));
        assert!(f.matches(&ev(
            TcpState::Established,
            TcpState::CloseWait,
            OwnerSource::Io
        )));
        assert!(!f.matches(&ev(
            TcpState::Established,
            TcpState::CloseWait,
            OwnerSource::Unknown
        )));
        let f = Filter::from_cli(&cli(&["-p", "7"]));
        assert!(!f.matches(&ev(
            TcpState::Established,
            TcpState::CloseWait,
            OwnerSource::Io
        )));
    }

    #[test]
    fn comm_filter_is_exact() {
        let e = ev(
            TcpState::Established,
            TcpState::FinWait1,
            OwnerSource::Syscall,
        );
        assert!(Filter::from_cli(&cli(&["--comm", "server"])).matches(&e));
        assert!(!Filter::from_cli(&cli(&["--comm", "serv"])).matches(&e));
    }

    #[test]
    fn state_filter_matches_old_or_new() {
        let f = Filter::from_cli(&cli(&["--state", "CLOSE_WAIT"]));
        assert!(f.matches(&ev(
            TcpState::Established,
            TcpState::CloseWait,
            OwnerSource::Io
        )));
        assert!(f.matches(&ev(TcpState::CloseWait, TcpState::LastAck, OwnerSource::Io)));
        assert!(!f.matches(&ev(
            TcpState::Established,
            TcpState::FinWait1,
            OwnerSource::Io
        )));
        assert!(Filter::default().matches(&ev(
            TcpState::Established,
            TcpState::FinWait1,
            OwnerSource::Io
        )));
    }

    #[test]
    fn kernel_filters_from_flags() {
        let mut cfg = Config::default();
        apply_kernel_filters(&cli(&["-6", "--lport", "80"]), &mut cfg);
        assert_eq!(cfg.families, FAMILY_V6);
        assert!(cfg.accepts(AF_INET6, 80, 5000));
        assert!(!cfg.accepts(AF_INET, 80, 5000));
        assert!(!cfg.accepts(AF_INET6, 81, 5000));

        let mut cfg = Config::default();
        apply_kernel_filters(&cli(&["--port", "443"]), &mut cfg);
        assert!(cfg.accepts(AF_INET, 443, 1));
        assert!(cfg.accepts(AF_INET6, 1, 443));
        assert!(!cfg.accepts(AF_INET, 1, 2));
        assert!(!cfg.accepts(1, 443, 443), "unknown family never passes");

        let mut cfg = Config::default();
        apply_kernel_filters(&cli(&["--rport", "53"]), &mut cfg);
        assert!(cfg.accepts(AF_INET, 9, 53));
        assert!(!cfg.accepts(AF_INET, 53, 9));
    }
}
