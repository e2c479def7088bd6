//! The `closewait_leak` JSON line (`docs/schema/closewait_leak.json`): one
//! per group per report.

use std::time::Duration;

use serde::Serialize;

use crate::{
    model::{closewait::Group, stack::Frame},
    report::json::{Endpoint, Report, VERSION},
};

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One group of leaking sockets in one report.
#[derive(Serialize)]
pub struct JsonGroup<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    report: &'static str,
    time: &'a str,
    /// `--min-age`.
    min_age_ns: u64,
    pid: Option<u32>,
    comm: Option<&'a str>,
    /// The pid in the owner's own pid namespace; null when it is `pid`.
    nspid: Option<u32>,
    cmdline: Option<&'a str>,
    cgroup: Option<&'a str>,
    container: Option<&'a str>,
    netns: Option<u32>,
    count: usize,
    oldest_age_ns: u64,
    age_lower_bound: bool,
    ages: JsonAges,
    classes: JsonClasses,
    unread_bytes: u64,
    endpoints: Vec<JsonEndpoints>,
    eof_stack: Vec<JsonFrame<'a>>,
    eof_stack_truncated: bool,
    first_stack: Vec<JsonFrame<'a>>,
    first_stack_truncated: bool,
    /// What the reader should know about the stacks.
    notes: &'a [String],
}

#[derive(Serialize)]
#[expect(
    clippy::struct_field_names,
    reason = "JSON keys: a duration's name carries its unit"
)]
struct JsonAges {
    min_ns: u64,
    p50_ns: u64,
    max_ns: u64,
}

#[derive(Serialize)]
struct JsonClasses {
    never_read_to_eof: usize,
    read_eof_not_closed: usize,
}

/// The group's sockets between one local endpoint and one remote address
/// (remote ports aggregated: `port` is null).
#[derive(Serialize)]
struct JsonEndpoints {
    local: Endpoint,
    remote: Endpoint,
    count: usize,
}

/// One frame; `skipped` is null unless the symbolizer skipped the frame
/// or its debug info.
#[derive(Serialize)]
struct JsonFrame<'a> {
    function: Option<&'a str>,
    addr: String,
    offset: u64,
    module: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
    recovered: bool,
    skipped: Option<String>,
}

fn frames(fs: &[Frame]) -> Vec<JsonFrame<'_>> {
    fs.iter()
        .map(|f| JsonFrame {
            function: f.function.as_deref(),
            addr: format!("{:#x}", f.addr),
            offset: f.offset,
            module: f.module.as_deref(),
            file: f.file.as_deref(),
            line: f.line,
            recovered: f.recovered,
            skipped: f.skipped.as_ref().map(ToString::to_string),
        })
        .collect()
}

impl<'a> JsonGroup<'a> {
    #[must_use]
    pub fn new(report: Report<'a>, min_age: Duration, g: &'a Group) -> Self {
        Self {
            v: VERSION,
            kind: "closewait_leak",
            report: report.kind(),
            time: report.time,
            min_age_ns: ns(min_age),
            pid: g.pid,
            comm: g.comm.as_deref(),
            nspid: g.process.nspid,
            cmdline: g.process.cmdline.as_deref(),
            cgroup: g.process.cgroup.as_deref(),
            container: g.process.container_id.as_deref(),
            netns: g.netns,
            count: g.count,
            oldest_age_ns: ns(g.oldest_age),
            age_lower_bound: g.age_lower_bound,
            ages: JsonAges {
                min_ns: ns(g.ages.min),
                p50_ns: ns(g.ages.p50),
                max_ns: ns(g.ages.max),
            },
            classes: JsonClasses {
                never_read_to_eof: g.classes.never_read_to_eof,
                read_eof_not_closed: g.classes.read_eof_not_closed,
            },
            unread_bytes: g.unread_bytes,
            endpoints: (g.endpoints.iter())
                .map(|e| JsonEndpoints {
                    local: Endpoint::new(e.local, e.lport),
                    remote: Endpoint::addr(e.remote),
                    count: e.count,
                })
                .collect(),
            eof_stack: frames(&g.eof_stack),
            eof_stack_truncated: g.eof_stack_truncated,
            first_stack: frames(&g.first_stack),
            first_stack_truncated: g.first_stack_truncated,
            notes: &g.notes,
        }
    }
}
