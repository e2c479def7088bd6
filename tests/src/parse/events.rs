//! The default `--json` event stream: [`Event`], one line checked against the
//! schema, and [`Socket`], one socket's life grouped from those events.

use std::{collections::HashMap, fmt, time::Duration};

use serde_json::Value;

/// One JSON line of tcptrace, checked against the documented schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Event(pub Value);

const STATES: [&str; 12] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

impl Event {
    /// Parse and validate one line; panics on anything off-schema.
    #[must_use]
    pub fn parse(line: &str) -> Self {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("tcptrace printed a line that is not JSON ({e}): {line}"));
        let ev = Self(v);
        if let Err(why) = ev.validate() {
            panic!("off-schema event ({why}): {line}");
        }
        ev
    }

    fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let has = |k: &str, ok: fn(&Value) -> bool| -> Result<(), String> {
            match obj.get(k) {
                Some(x) if ok(x) => Ok(()),
                Some(x) => Err(format!("{k} = {x}")),
                None => Err(format!("no {k}")),
            }
        };
        let uint_or_null = |x: &Value| x.is_null() || x.is_u64();
        let str_or_null = |x: &Value| x.is_null() || x.is_string();
        let state_or_null =
            |x: &Value| x.is_null() || x.as_str().is_some_and(|s| STATES.contains(&s));
        has("v", |x| x == 1)?;
        has("time", super::is_time)?;
        has("ts_ns", Value::is_u64)?;
        has("pid", uint_or_null)?;
        has("tid", uint_or_null)?;
        has("comm", str_or_null)?;
        has("owner_source", |x| {
            matches!(x.as_str(), Some("syscall" | "io" | "procfs" | "unknown"))
        })?;
        has("netns", |x| {
            x.is_null() || x.as_u64().is_some_and(|n| u32::try_from(n).is_ok())
        })?;
        has("container", str_or_null)?;
        has("family", |x| matches!(x.as_str(), Some("ipv4" | "ipv6")))?;
        has("local", super::is_full_endpoint)?;
        has("remote", super::is_full_endpoint)?;
        has("skaddr", |x| {
            x.as_str().is_some_and(|s| s.starts_with("0x"))
        })?;
        // The owner is all or nothing.
        if v["pid"].is_null() != v["comm"].is_null() || v["pid"].is_null() != v["tid"].is_null() {
            return Err("pid, tid and comm must be null together".into());
        }
        if v["pid"].is_null() != (v["owner_source"] == "unknown") {
            return Err("owner_source must be unknown exactly when pid is null".into());
        }
        match v["type"].as_str() {
            Some("state") => {
                has("old_state", |x| {
                    x.as_str().is_some_and(|s| STATES.contains(&s))
                })?;
                has("new_state", |x| {
                    x.as_str().is_some_and(|s| STATES.contains(&s))
                })?;
                has("dwell_ns", uint_or_null)?;
            }
            Some("reset") => {
                has("direction", |x| {
                    matches!(x.as_str(), Some("sent" | "received"))
                })?;
                has("state", state_or_null)?;
                has("reason", str_or_null)?;
                has("reason_code", uint_or_null)?;
                has("sock_cookie", uint_or_null)?;
            }
            _ => return Err(format!("type = {}", v["type"])),
        }
        Ok(())
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0[key].as_str()
    }

    #[must_use]
    pub fn kind(&self) -> &str {
        self.str("type").unwrap_or_default()
    }

    #[must_use]
    pub fn is_state(&self) -> bool {
        self.kind() == "state"
    }

    #[must_use]
    pub fn is_reset(&self) -> bool {
        self.kind() == "reset"
    }

    /// The owner's pid; `None` is JSON null (owner unknown).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.0["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }

    #[must_use]
    pub fn comm(&self) -> Option<&str> {
        self.str("comm")
    }

    /// The socket's network namespace inode; None when unknown.
    #[must_use]
    pub fn netns(&self) -> Option<u64> {
        self.0["netns"].as_u64()
    }

    /// The owner's container id, when it runs in one.
    #[must_use]
    pub fn container(&self) -> Option<&str> {
        self.str("container")
    }

    #[must_use]
    pub fn owner_source(&self) -> &str {
        self.str("owner_source").unwrap_or_default()
    }

    #[must_use]
    pub fn family(&self) -> &str {
        self.str("family").unwrap_or_default()
    }

    /// The local address (`local.addr`).
    #[must_use]
    pub fn saddr(&self) -> &str {
        self.0["local"]["addr"].as_str().unwrap_or_default()
    }

    /// The remote address (`remote.addr`).
    #[must_use]
    pub fn daddr(&self) -> &str {
        self.0["remote"]["addr"].as_str().unwrap_or_default()
    }

    /// The local port (`local.port`).
    #[must_use]
    pub fn sport(&self) -> u16 {
        self.0["local"]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_default()
    }

    /// The remote port (`remote.port`).
    #[must_use]
    pub fn dport(&self) -> u16 {
        self.0["remote"]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_default()
    }

    #[must_use]
    pub fn skaddr(&self) -> &str {
        self.str("skaddr").unwrap_or_default()
    }

    #[must_use]
    pub fn ts_ns(&self) -> u64 {
        self.0["ts_ns"].as_u64().unwrap_or_default()
    }

    #[must_use]
    pub fn old_state(&self) -> &str {
        self.str("old_state").unwrap_or_default()
    }

    #[must_use]
    pub fn new_state(&self) -> &str {
        self.str("new_state").unwrap_or_default()
    }

    /// `(old, new)` of a state event.
    #[must_use]
    pub fn transition(&self) -> (&str, &str) {
        (self.old_state(), self.new_state())
    }

    /// Time spent in the old state; `None` is JSON null.
    #[must_use]
    pub fn dwell(&self) -> Option<Duration> {
        self.0["dwell_ns"].as_u64().map(Duration::from_nanos)
    }

    /// `sent` or `received` (reset events).
    #[must_use]
    pub fn direction(&self) -> &str {
        self.str("direction").unwrap_or_default()
    }

    /// The socket's state at a reset; `None` is JSON null.
    #[must_use]
    pub fn reset_state(&self) -> Option<&str> {
        self.str("state")
    }

    /// The kernel's reason for a sent reset.
    #[must_use]
    pub fn reason(&self) -> Option<&str> {
        self.str("reason")
    }

    /// Whether either endpoint's port is `port`.
    #[must_use]
    pub fn touches_port(&self, port: u16) -> bool {
        self.sport() == port || self.dport() == port
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pid = self
            .pid()
            .map_or_else(|| "null".to_owned(), |p| p.to_string());
        write!(
            f,
            "{:<5} {} {}:{} -> {}:{} pid={pid} ({}) ",
            self.kind(),
            self.skaddr(),
            self.saddr(),
            self.sport(),
            self.daddr(),
            self.dport(),
            self.owner_source(),
        )?;
        if self.is_state() {
            let dwell = self
                .dwell()
                .map_or_else(|| "null".to_owned(), |d| format!("{d:?}"));
            write!(
                f,
                "{} -> {} dwell={dwell}",
                self.old_state(),
                self.new_state()
            )
        } else {
            write!(
                f,
                "RST {} state={} reason={}",
                self.direction(),
                self.reset_state().unwrap_or("null"),
                self.reason().unwrap_or("null")
            )
        }
    }
}

/// One life of one socket: its state events from its first transition to its
/// `-> CLOSE` (a freed `struct sock` address may be reused by a later socket).
#[derive(Clone, Debug)]
pub struct Socket {
    pub skaddr: String,
    pub events: Vec<Event>,
}

impl Socket {
    /// The `(old, new)` sequence.
    #[must_use]
    pub fn transitions(&self) -> Vec<(&str, &str)> {
        self.events.iter().map(Event::transition).collect()
    }

    /// The owner pid of each transition.
    #[must_use]
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.events.iter().map(Event::pid).collect()
    }

    /// Whether any of its events has this local and remote port. (A
    /// connecting socket's first event, CLOSE -> `SYN_SENT`, has local port 0:
    /// the kernel picks the port after that transition.)
    #[must_use]
    pub fn has_ports(&self, sport: u16, dport: u16) -> bool {
        self.events
            .iter()
            .any(|e| e.sport() == sport && e.dport() == dport)
    }

    /// Whether this is the life of a listener on `port`: it starts with
    /// `CLOSE -> LISTEN` there. (On 6.1 an accepted socket's first
    /// transition, `LISTEN -> SYN_RECV`, shows remote port 0 too: the
    /// kernel sets the peer's address after it; 6.18 sets it before.)
    #[must_use]
    pub fn is_listener_on(&self, port: u16) -> bool {
        self.events
            .first()
            .is_some_and(|e| e.transition() == ("CLOSE", "LISTEN") && e.sport() == port)
    }

    /// The event of the transition `old -> new`.
    #[must_use]
    pub fn event(&self, old: &str, new: &str) -> &Event {
        self.events
            .iter()
            .find(|e| e.transition() == (old, new))
            .unwrap_or_else(|| panic!("no {old} -> {new} in\n{self}"))
    }

    pub fn assert_transitions(&self, what: &str, expected: &[(&str, &str)]) {
        assert_eq!(
            self.transitions(),
            expected,
            "the {what} socket's transitions:\n{self}"
        );
    }

    pub fn assert_pids(&self, what: &str, expected: &[Option<u32>]) {
        assert_eq!(
            self.pids(),
            expected,
            "the {what} socket's owner pids:\n{self}"
        );
    }
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.events {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Group state events by socket address into lives: a life ends with its
/// `-> CLOSE` transition; the next event at that address starts a new one.
pub fn group_sockets<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<Socket> {
    let mut out: Vec<Socket> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for e in events.filter(|e| e.is_state()) {
        let i = *open.entry(e.skaddr().to_owned()).or_insert_with(|| {
            out.push(Socket {
                skaddr: e.skaddr().to_owned(),
                events: Vec::new(),
            });
            out.len() - 1
        });
        out[i].events.push(e.clone());
        if e.new_state() == "CLOSE" {
            open.remove(e.skaddr());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(skaddr: &str, old: &str, new: &str, pid: Option<u32>) -> String {
        serde_json::json!({
            "v": 1, "type": "state", "time": "2026-01-01T00:00:00.000001Z", "ts_ns": 1,
            "pid": pid, "tid": pid, "comm": pid.map(|_| "x"),
            "owner_source": if pid.is_some() { "syscall" } else { "unknown" },
            "netns": 4_026_531_840_u64, "container": null,
            "family": "ipv4", "local": {"addr": "127.0.0.1", "port": 1},
            "remote": {"addr": "127.0.0.1", "port": 2}, "skaddr": skaddr, "old_state": old, "new_state": new, "dwell_ns": null,
        })
        .to_string()
    }

    #[test]
    fn sockets_split_into_lives_at_close() {
        let evs: Vec<Event> = [
            state("0x1", "CLOSE", "SYN_SENT", Some(5)),
            state("0x2", "CLOSE", "LISTEN", Some(6)),
            state("0x1", "SYN_SENT", "CLOSE", Some(5)),
            state("0x1", "CLOSE", "LISTEN", Some(7)),
        ]
        .iter()
        .map(|l| Event::parse(l))
        .collect();
        let socks = group_sockets(evs.iter());
        assert_eq!(socks.len(), 3);
        assert_eq!(
            socks[0].transitions(),
            [("CLOSE", "SYN_SENT"), ("SYN_SENT", "CLOSE")]
        );
        assert_eq!(socks[1].pids(), [Some(6)]);
        assert_eq!(socks[2].skaddr, "0x1");
    }

    #[test]
    #[should_panic(expected = "owner_source must be unknown")]
    fn schema_check_catches_a_half_owner() {
        let mut v: Value = serde_json::from_str(&state("0x1", "CLOSE", "LISTEN", Some(1))).unwrap();
        v["owner_source"] = "unknown".into();
        let _ = Event::parse(&v.to_string());
    }
}
