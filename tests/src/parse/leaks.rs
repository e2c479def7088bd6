//! `--closewait-leaks --json`: [`LeakGroup`], one `closewait_leak` line
//! checked against the schema, its stacks' [`LeakFrame`]s, and the
//! [`LeakReport`]s those lines make up.

use std::{fmt, time::Duration};

use serde_json::Value;

use super::check;

/// One report of a `--json` leak run: its groups (a report with no leak
/// prints nothing, so only reports with groups are seen).
#[derive(Clone, Debug)]
pub struct LeakReport {
    /// `interval` or `final`.
    pub report: String,
    pub report_time: String,
    pub groups: Vec<LeakGroup>,
}

impl LeakReport {
    /// Split JSON lines into reports: consecutive lines with the same
    /// `report` and `time` (reports are at least an interval apart).
    /// Panics on any line off the documented schema. In a run with other
    /// analyses, their lines (another `type`) are left out.
    #[must_use]
    pub fn parse_all(lines: &[String]) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for line in lines {
            let other = serde_json::from_str::<Value>(line)
                .ok()
                .is_some_and(|v| v["type"].as_str().is_some_and(|t| t != "closewait_leak"));
            if other {
                continue;
            }
            let g = LeakGroup::parse(line);
            match out.last_mut() {
                Some(r) if r.report == g.report() && r.report_time == g.report_time() => {
                    r.groups.push(g);
                }
                _ => out.push(Self {
                    report: g.report().to_owned(),
                    report_time: g.report_time().to_owned(),
                    groups: vec![g],
                }),
            }
        }
        out
    }

    #[must_use]
    pub fn is_final(&self) -> bool {
        self.report == "final"
    }

    /// The groups owned by `pid`.
    #[must_use]
    pub fn of_pid(&self, pid: u32) -> Vec<&LeakGroup> {
        self.groups
            .iter()
            .filter(|g| g.pid() == Some(pid))
            .collect()
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} report at {}:", self.report, self.report_time)?;
        for g in &self.groups {
            writeln!(f, "  {g}")?;
        }
        Ok(())
    }
}

/// One frame of a leak group's stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakFrame {
    pub function: Option<String>,
    pub addr: String,
    pub offset: u64,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub recovered: bool,
    /// Why the symbolizer skipped the frame ("timed out", a refusal).
    pub skipped: Option<String>,
}

/// One `closewait_leak` JSON line, checked against the documented schema.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakGroup(pub Value);

/// Every key of a `closewait_leak` line.
const LEAK_KEYS: [&str; 24] = [
    "v",
    "type",
    "netns",
    "time",
    "report",
    "min_age_ns",
    "pid",
    "comm",
    "nspid",
    "cmdline",
    "cgroup",
    "container",
    "count",
    "oldest_age_ns",
    "age_lower_bound",
    "ages",
    "classes",
    "unread_bytes",
    "endpoints",
    "eof_stack",
    "eof_stack_truncated",
    "first_stack",
    "first_stack_truncated",
    "notes",
];

impl LeakGroup {
    /// Parse and validate one line; panics on anything off-schema.
    #[must_use]
    pub fn parse(line: &str) -> Self {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("tcptrace printed a line that is not JSON ({e}): {line}"));
        let g = Self(v);
        if let Err(why) = g.validate() {
            panic!("off-schema closewait_leak line ({why}): {line}");
        }
        g
    }

    fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        check("nspid", &v["nspid"], |x| x.is_null() || x.is_u64())?;
        check("netns", &v["netns"], |x| x.is_null() || x.is_u64())?;
        keys.sort_unstable();
        let mut want = LEAK_KEYS.to_vec();
        want.sort_unstable();
        if keys != want {
            return Err(format!("keys {keys:?}, documented {want:?}"));
        }
        let str_or_null = |x: &Value| x.is_null() || x.is_string();
        check("v", &v["v"], |x| x == 1)?;
        check("type", &v["type"], |x| x == "closewait_leak")?;
        check("time", &v["time"], super::is_time)?;
        check("report", &v["report"], |x| {
            matches!(x.as_str(), Some("interval" | "final"))
        })?;
        check("min_age_ns", &v["min_age_ns"], |x| {
            x.as_u64().is_some_and(|n| n > 0)
        })?;
        check("pid", &v["pid"], |x| {
            x.is_null() || x.as_u64().is_some_and(|p| u32::try_from(p).is_ok())
        })?;
        for k in ["comm", "cmdline", "cgroup", "container"] {
            check(k, &v[k], str_or_null)?;
        }
        if v["pid"].is_null() != v["comm"].is_null() {
            return Err("pid and comm must be null together".into());
        }
        check("count", &v["count"], |x| x.as_u64().is_some_and(|n| n >= 1))?;
        check("oldest_age_ns", &v["oldest_age_ns"], Value::is_u64)?;
        check("age_lower_bound", &v["age_lower_bound"], Value::is_boolean)?;
        check("unread_bytes", &v["unread_bytes"], Value::is_u64)?;
        if v["ages"].as_object().map(serde_json::Map::len) != Some(3) {
            return Err(format!("ages = {}", v["ages"]));
        }
        for k in ["min_ns", "p50_ns", "max_ns"] {
            check(k, &v["ages"][k], Value::is_u64)?;
        }
        let ns = |x: &Value| x.as_u64().unwrap_or_default();
        let (min, p50, max) = (
            ns(&v["ages"]["min_ns"]),
            ns(&v["ages"]["p50_ns"]),
            ns(&v["ages"]["max_ns"]),
        );
        let oldest = ns(&v["oldest_age_ns"]);
        if !(min <= p50 && p50 <= max && max == oldest) {
            return Err(format!(
                "ages out of order: min {min}, p50 {p50}, max {max}, oldest {oldest}"
            ));
        }
        // Reported once older than --min-age.
        if min < ns(&v["min_age_ns"]) {
            return Err(format!(
                "a socket of age {min} ns is younger than min_age_ns {}",
                v["min_age_ns"]
            ));
        }
        for k in ["never_read_to_eof", "read_eof_not_closed"] {
            check(k, &v["classes"][k], Value::is_u64)?;
        }
        if v["classes"].as_object().map(serde_json::Map::len) != Some(2) {
            return Err(format!("classes = {}", v["classes"]));
        }
        if self.never_read_to_eof() + self.read_eof_not_closed() != self.count() {
            return Err("the classes do not add up to count".into());
        }
        let notes = v["notes"].as_array().ok_or("notes not an array")?;
        if !notes
            .iter()
            .all(|n| n.as_str().is_some_and(|s| !s.is_empty()))
        {
            return Err(format!("notes = {}", v["notes"]));
        }
        self.validate_lists()
    }

    /// What the report notes about the owner's stacks.
    #[must_use]
    pub fn notes(&self) -> Vec<String> {
        (self.0["notes"].as_array().into_iter().flatten())
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }

    /// The endpoints and the two stacks.
    fn validate_lists(&self) -> Result<(), String> {
        let v = &self.0;
        let str_or_null = |x: &Value| x.is_null() || x.is_string();
        let uint_or_null = |x: &Value| x.is_null() || x.is_u64();
        let endpoints = v["endpoints"].as_array().ok_or("endpoints not an array")?;
        if endpoints.is_empty() || endpoints.len() > 5 {
            return Err(format!("{} endpoints (1 to 5)", endpoints.len()));
        }
        for e in endpoints {
            if e.as_object().map(serde_json::Map::len) != Some(3) {
                return Err(format!("endpoint {e}"));
            }
            check("endpoint.local", &e["local"], super::is_full_endpoint)?;
            check("endpoint.remote", &e["remote"], |x| {
                super::is_endpoint(x) && x["addr"].is_string() && x["port"].is_null()
            })?;
            check("endpoint.count", &e["count"], |x| {
                x.as_u64().is_some_and(|n| n >= 1)
            })?;
        }
        let listed: u64 = self.endpoints().iter().map(|e| e.2).sum();
        if listed > self.count() || (endpoints.len() < 5 && listed != self.count()) {
            return Err(format!(
                "endpoint counts add up to {listed}, count {}",
                self.count()
            ));
        }
        for (stack, truncated) in [
            ("eof_stack", "eof_stack_truncated"),
            ("first_stack", "first_stack_truncated"),
        ] {
            check(truncated, &v[truncated], Value::is_boolean)?;
            let frames = v[stack]
                .as_array()
                .ok_or_else(|| format!("{stack} not an array"))?;
            if frames.is_empty() && v[truncated] == true {
                return Err(format!("an empty {stack} cannot be truncated"));
            }
            for f in frames {
                if f.as_object().map(serde_json::Map::len) != Some(8) {
                    return Err(format!("{stack} frame {f}"));
                }
                // `skipped` is null unless the symbolizer skipped the frame.
                check("skipped", &f["skipped"], |x| {
                    x.is_null() || x.as_str().is_some_and(|s| !s.is_empty())
                })?;
                check("function", &f["function"], str_or_null)?;
                check("addr", &f["addr"], |x| {
                    x.as_str().is_some_and(|s| {
                        s.strip_prefix("0x")
                            .is_some_and(|h| u64::from_str_radix(h, 16).is_ok())
                    })
                })?;
                check("offset", &f["offset"], Value::is_u64)?;
                check("module", &f["module"], str_or_null)?;
                check("file", &f["file"], str_or_null)?;
                check("line", &f["line"], uint_or_null)?;
                check("recovered", &f["recovered"], Value::is_boolean)?;
            }
        }
        Ok(())
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0[key].as_str()
    }

    fn uint(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or_default()
    }

    /// `interval` or `final`.
    #[must_use]
    pub fn report(&self) -> &str {
        self.str("report").unwrap_or_default()
    }

    /// The report's time.
    #[must_use]
    pub fn report_time(&self) -> &str {
        self.str("time").unwrap_or_default()
    }

    /// The owner; `None` is JSON null (no process holds the sockets).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.0["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }

    #[must_use]
    pub fn comm(&self) -> Option<&str> {
        self.str("comm")
    }

    #[must_use]
    pub fn cmdline(&self) -> Option<&str> {
        self.str("cmdline")
    }

    /// The sockets' network namespace inode.
    #[must_use]
    pub fn netns(&self) -> Option<u64> {
        self.0["netns"].as_u64()
    }

    /// The owner's container id (`container`).
    #[must_use]
    pub fn container_id(&self) -> Option<&str> {
        self.str("container")
    }

    /// The owner's pid in its own pid namespace, when it differs.
    #[must_use]
    pub fn nspid(&self) -> Option<u64> {
        self.0["nspid"].as_u64()
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.uint("count")
    }

    /// The oldest socket's age in seconds (from `oldest_age_ns`).
    #[must_use]
    pub fn oldest_age_s(&self) -> f64 {
        Duration::from_nanos(self.uint("oldest_age_ns")).as_secs_f64()
    }

    #[must_use]
    pub fn age_lower_bound(&self) -> bool {
        self.0["age_lower_bound"] == true
    }

    #[must_use]
    pub fn never_read_to_eof(&self) -> u64 {
        self.0["classes"]["never_read_to_eof"]
            .as_u64()
            .unwrap_or_default()
    }

    #[must_use]
    pub fn read_eof_not_closed(&self) -> u64 {
        self.0["classes"]["read_eof_not_closed"]
            .as_u64()
            .unwrap_or_default()
    }

    #[must_use]
    pub fn unread_bytes(&self) -> u64 {
        self.uint("unread_bytes")
    }

    /// `(local IP:PORT, remote IP, count)`, from the endpoint objects.
    #[must_use]
    pub fn endpoints(&self) -> Vec<(String, String, u64)> {
        self.0["endpoints"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| {
                        (
                            super::endpoint_text(&e["local"]),
                            super::endpoint_text(&e["remote"]),
                            e["count"].as_u64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn frames(&self, key: &str) -> Vec<LeakFrame> {
        let s = |f: &Value, k: &str| f[k].as_str().map(str::to_owned);
        self.0[key]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| LeakFrame {
                        function: s(f, "function"),
                        addr: s(f, "addr").unwrap_or_default(),
                        offset: f["offset"].as_u64().unwrap_or_default(),
                        module: s(f, "module"),
                        file: s(f, "file"),
                        line: f["line"].as_u64(),
                        recovered: f["recovered"] == true,
                        skipped: s(f, "skipped"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Where the owner read EOF, innermost first; empty when it never did.
    #[must_use]
    pub fn eof_stack(&self) -> Vec<LeakFrame> {
        self.frames("eof_stack")
    }

    /// Where the owner first touched the socket, innermost first.
    #[must_use]
    pub fn first_stack(&self) -> Vec<LeakFrame> {
        self.frames("first_stack")
    }

    /// Every function name in either stack.
    #[must_use]
    pub fn functions(&self) -> Vec<String> {
        self.eof_stack()
            .into_iter()
            .chain(self.first_stack())
            .filter_map(|f| f.function)
            .collect()
    }
}

impl fmt::Display for LeakGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
