//! The kernel side's configuration (`CONFIG`) for a plan: each analysis's
//! settings start from its compiled shape ([`shapes`]); a combination gets
//! their union, then the family and port filters.

use tcptrace_common::{
    Config, HistBy,
    config::{SetStateShape, shapes},
};

use crate::model::plan::{HistOptions, LeakOptions, Plan};

/// The settings `plan`'s analyses need together, and its filters. Alone, an
/// analysis gets its shape, and with it the `inet_sock_set_state` program
/// compiled for it ([`tcptrace_common::config::set_state_program`]).
#[must_use]
pub fn kernel_config(plan: &Plan) -> Config {
    let a = &plan.analyses;
    let parts = [
        a.stream.then(stream),
        a.hist.map(hist),
        a.closewait.map(leaks),
        a.timewait.map(|_| timewait()),
    ];
    let mut config = parts
        .into_iter()
        .flatten()
        .reduce(|a, b| union(&a, &b))
        .unwrap_or_else(stream);
    let p = &plan.ports;
    config.families = p.families;
    config.ports = p.ports;
    config
}

/// The stream: every transition and reset as a record. Its owners come
/// from the recv/send hooks too (accepted sockets' first transitions run
/// in softirq).
fn stream() -> Config {
    shapes::STREAM.apply(Config {
        emit_resets: 1,
        io_hooks: 1,
        ..Config::default()
    })
}

/// `--hist`: dwell counted in the kernel, resets streamed. By state, its
/// shape; split otherwise (comm needs the full socket map for the owner's
/// comm, and the recv/send hooks for the owners of accepted sockets).
fn hist(o: HistOptions) -> Config {
    let by_comm = o.by == HistBy::Comm;
    let base = shapes::HIST.apply(Config {
        emit_resets: 1,
        io_hooks: u8::from(by_comm),
        ..Config::default()
    });
    Config {
        hist_by: o.by as u32,
        lean_socks: u8::from(!by_comm),
        ..base
    }
}

/// `--closewait-leaks`: stacks at first touch and at EOF (from the
/// recv/send hooks), and the count of CLOSE_WAIT exits past `--min-age`.
fn leaks(o: LeakOptions) -> Config {
    shapes::LEAKS.apply(Config {
        capture_stacks: 1,
        io_hooks: 1,
        long_dwell_ns: u64::try_from(o.min_age.as_nanos()).unwrap_or(u64::MAX),
        ..Config::default()
    })
}

/// `--timewait`: TIME_WAIT entries in the per-CPU log, and failed
/// `bind()`/`connect()` calls. Owners come from `close()` alone.
fn timewait() -> Config {
    shapes::TIMEWAIT.apply(Config {
        emit_failures: 1,
        ..Config::default()
    })
}

/// What `a` and `b` need together: the union of their shapes
/// ([`SetStateShape::union`]), and every record, hook and count either
/// asks for.
fn union(a: &Config, b: &Config) -> Config {
    let shape = SetStateShape::of(a).union(SetStateShape::of(b));
    shape.apply(Config {
        emit_resets: a.emit_resets | b.emit_resets,
        capture_stacks: a.capture_stacks | b.capture_stacks,
        emit_failures: a.emit_failures | b.emit_failures,
        io_hooks: a.io_hooks | b.io_hooks,
        long_dwell_ns: a.long_dwell_ns.max(b.long_dwell_ns),
        ..*a
    })
}

#[cfg(test)]
mod tests;
