//! The serde writer of the JSON event line: the reference the hand-written
//! one must match byte for byte.

use bytes::{BufMut as _, BytesMut};
use serde::Serialize;

use super::{Owner, Printer, owner_source};
use crate::{
    model::event::{Endpoints, Event, Reset, StateChange},
    report::json::{Endpoint, VERSION},
};

/// One event line. Keys of the other event type are left out (`None`);
/// an inner `None` is a JSON null.
#[derive(Serialize)]
#[expect(
    clippy::option_option,
    reason = "outer None: the key is absent; inner None: JSON null"
)]
struct JsonEvent<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_ns: u64,
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<&'a str>,
    owner_source: &'static str,
    netns: Option<u32>,
    container: Option<&'a str>,
    family: &'static str,
    local: Endpoint,
    remote: Endpoint,
    skaddr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dwell_ns: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sock_cookie: Option<Option<u64>>,
}

impl Printer {
    /// The line serde writes for a JSON event.
    pub(super) fn serde_json_line(&self, ev: &Event, container: Option<&str>, out: &mut BytesMut) {
        let w = (&mut *out).writer();
        let r = match ev {
            Event::State(s) => serde_json::to_writer(
                w,
                &JsonEvent {
                    netns: s.netns.map(|n| n.0),
                    container,
                    ..self.json_state(s)
                },
            ),
            Event::Reset(r) => serde_json::to_writer(
                w,
                &JsonEvent {
                    netns: r.netns.map(|n| n.0),
                    container,
                    ..self.json_reset(r)
                },
            ),
            Event::Failure(_) => return,
        };
        assert!(r.is_ok());
        out.put_u8(b'\n');
    }

    fn common<'a>(
        &self,
        kind: &'static str,
        ts_ns: u64,
        owner: Option<&'a Owner>,
        e: &Endpoints,
        skaddr: u64,
    ) -> JsonEvent<'a> {
        JsonEvent {
            v: VERSION,
            kind,
            time: self.time(ts_ns),
            ts_ns,
            pid: owner.map(|o| o.pid),
            tid: owner.map(|o| o.tid),
            comm: owner.map(|o| o.comm.as_str()),
            owner_source: owner_source(owner),
            netns: None,
            container: None,
            family: if e.is_ipv6() { "ipv6" } else { "ipv4" },
            local: Endpoint::new(e.local, e.lport),
            remote: Endpoint::new(e.remote, e.rport),
            skaddr: format!("{skaddr:#x}"),
            old_state: None,
            new_state: None,
            dwell_ns: None,
            direction: None,
            state: None,
            reason: None,
            reason_code: None,
            sock_cookie: None,
        }
    }

    fn json_state<'a>(&self, s: &'a StateChange) -> JsonEvent<'a> {
        JsonEvent {
            old_state: Some(s.old.name()),
            new_state: Some(s.new.name()),
            dwell_ns: Some(
                s.dwell
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            ),
            ..self.common("state", s.ts_ns, s.owner.as_ref(), &s.endpoints, s.skaddr)
        }
    }

    fn json_reset<'a>(&self, r: &'a Reset) -> JsonEvent<'a> {
        JsonEvent {
            direction: Some(r.direction.as_str()),
            state: Some(r.state.map(tcptrace_common::TcpState::name)),
            reason: Some(r.reason.map(|c| self.reasons.name(c))),
            reason_code: Some(r.reason),
            sock_cookie: Some((r.cookie != 0).then_some(r.cookie)),
            ..self.common("reset", r.ts_ns, r.owner.as_ref(), &r.endpoints, r.skaddr)
        }
    }
}
