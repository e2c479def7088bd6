//! Each analysis's kernel settings, alone and combined.

use std::time::Duration;

use tcptrace_common::{
    TcpState,
    config::{SET_STATE_GENERIC, SET_STATE_VARIANTS, set_state_program, shapes},
    ports::{PortList, PortLists},
};

use super::*;
use crate::model::{
    filter::{Filter, PortFilter},
    plan::{Analyses, GroupLabel, Scope, Sizes, TextStyle, TimewaitOptions},
};

fn plan(analyses: Analyses) -> Plan {
    Plan {
        analyses,
        filter: Filter::default(),
        ports: PortFilter::default(),
        scope: Scope::default(),
        json: false,
        text: TextStyle::default(),
        quiet: false,
        duration: None,
        prometheus: None,
        metrics_top: 20,
        sizes: Sizes {
            ringbuf_bytes: 1 << 22,
            max_sockets: 1 << 17,
        },
    }
}

const HIST: HistOptions = HistOptions {
    interval: Duration::from_secs(10),
    by: HistBy::State,
    label: GroupLabel::Key,
};
const LEAKS: LeakOptions = LeakOptions {
    min_age: Duration::from_secs(10),
    interval: Duration::from_secs(10),
    symbolize_timeout: Duration::from_secs(2),
    jvm_attach: true,
};
const TIMEWAIT: TimewaitOptions = TimewaitOptions {
    interval: Duration::from_secs(10),
};

fn all_three() -> Analyses {
    Analyses {
        hist: Some(HIST),
        closewait: Some(LEAKS),
        timewait: Some(TIMEWAIT),
        ..Analyses::default()
    }
}

#[test]
fn the_union_asks_for_everything_each_analysis_asks_for() {
    let alone: Vec<Config> = [
        Analyses {
            hist: Some(HIST),
            ..Analyses::default()
        },
        Analyses {
            closewait: Some(LEAKS),
            ..Analyses::default()
        },
        Analyses {
            timewait: Some(TIMEWAIT),
            ..Analyses::default()
        },
    ]
    .into_iter()
    .map(|a| kernel_config(&plan(a)))
    .collect();
    let c = kernel_config(&plan(all_three()));
    for one in &alone {
        assert_eq!(c.timed_states & one.timed_states, one.timed_states);
        assert_eq!(c.log_old_states & one.log_old_states, one.log_old_states);
        assert_eq!(
            c.noted_new_states & one.noted_new_states,
            one.noted_new_states
        );
        assert!(c.emit_resets >= one.emit_resets);
        assert!(c.emit_failures >= one.emit_failures);
        assert!(c.capture_stacks >= one.capture_stacks);
        assert!(c.io_hooks >= one.io_hooks);
        assert!(c.long_dwell_ns >= one.long_dwell_ns);
    }
    assert_eq!((c.lean_socks, c.sock_details), (1, 1), "lean, with details");
    assert_eq!(c.hist_by, HistBy::State as u32);
    assert_eq!(c.emit_old_states, 0, "no per-transition record");
    assert_eq!(
        c.log_old_states,
        shapes::TIMEWAIT.log_old_states,
        "only TIME_WAIT entries are logged"
    );
    assert_eq!(c.long_dwell_ns, 10_000_000_000);
}

#[test]
fn a_combination_gets_the_program_compiled_for_its_shape_or_the_generic_one() {
    let c = kernel_config(&plan(all_three()));
    assert_eq!(set_state_program(&c), "inet_sock_set_state_combined");
    assert!(
        SET_STATE_VARIANTS
            .iter()
            .any(|(_, s)| *s == shapes::COMBINED)
    );
    // Leaks with timewait: neither single variant serves both.
    let c = kernel_config(&plan(Analyses {
        closewait: Some(LEAKS),
        timewait: Some(TIMEWAIT),
        ..Analyses::default()
    }));
    assert_eq!(set_state_program(&c), SET_STATE_GENERIC);
}

#[test]
fn hist_by_comm_takes_the_full_socket_map_for_everyone() {
    let c = kernel_config(&plan(Analyses {
        hist: Some(HistOptions {
            by: HistBy::Comm,
            ..HIST
        }),
        timewait: Some(TIMEWAIT),
        ..Analyses::default()
    }));
    assert_eq!((c.lean_socks, c.sock_details), (0, 0));
    assert_eq!(c.hist_by, HistBy::Comm as u32);
    assert_eq!(c.io_hooks, 1, "owners of accepted sockets for comm");
    assert_eq!(c.emit_failures, 1);
    assert_ne!(
        c.log_old_states & (1 << TcpState::FinWait2 as u32),
        0,
        "TIME_WAIT entries still logged"
    );
}

#[test]
fn filters_apply_to_every_combination() {
    let mut p = plan(all_three());
    p.ports = PortFilter {
        families: PortFilter::families(false, true),
        ports: PortLists {
            lport: PortList::new(&[80, 443]).unwrap(),
            ..PortLists::ANY
        },
    };
    let c = kernel_config(&p);
    assert_eq!(c.ports, p.ports.ports);
    assert!(c.accepts(tcptrace_common::AF_INET6, 80, 5000));
    assert!(c.accepts(tcptrace_common::AF_INET6, 443, 5000));
    assert!(!c.accepts(tcptrace_common::AF_INET, 80, 5000));
    assert!(!c.accepts(tcptrace_common::AF_INET6, 81, 5000));
}
