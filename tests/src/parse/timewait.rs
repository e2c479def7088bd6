//! [`TimewaitLine`]: the `{"type":"hist_timewait",...}` line that ends
//! each `--hist --json` report, checked against the schema.

use std::{fmt, time::Duration};

use serde_json::Value;

use super::check;

/// The `{"type":"hist_timewait",...}` line that ends each `--hist --json`
/// report.
#[derive(Clone, Debug, PartialEq)]
pub struct TimewaitLine(pub Value);

/// Every key of a `hist_timewait` line.
const TIMEWAIT_KEYS: [&str; 13] = [
    "v",
    "type",
    "report",
    "time",
    "entered",
    "live_time_wait",
    "live_fin_wait2_orphans",
    "expired",
    "killed_early",
    "overflow",
    "predicted_dwell",
    "poll_interval_ns",
    "namespaces",
];

/// Every key of an entry of a `hist_timewait` line's `namespaces`.
const NAMESPACE_KEYS: [&str; 7] = [
    "netns",
    "entered",
    "live_time_wait",
    "live_fin_wait2_orphans",
    "expired",
    "killed_early",
    "overflow",
];

impl TimewaitLine {
    pub(super) fn validate(&self) -> Result<(), String> {
        let v = &self.0;
        let obj = v.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = TIMEWAIT_KEYS.to_vec();
        want.sort_unstable();
        if keys != want {
            return Err(format!("keys {keys:?}, documented {want:?}"));
        }
        check("report", &v["report"], |x| {
            matches!(x.as_str(), Some("interval" | "final"))
        })?;
        check("v", &v["v"], |x| x == 1)?;
        check("time", &v["time"], super::is_time)?;
        for k in [
            "entered",
            "live_time_wait",
            "live_fin_wait2_orphans",
            "expired",
            "killed_early",
            "poll_interval_ns",
        ] {
            check(k, &v[k], Value::is_u64)?;
        }
        check("overflow", &v["overflow"], |x| x.is_null() || x.is_u64())?;
        let p = &v["predicted_dwell"];
        if p.as_object().map(serde_json::Map::len) != Some(3) {
            return Err(format!("predicted_dwell = {p}"));
        }
        check("predicted_dwell.count", &p["count"], Value::is_u64)?;
        let empty = p["count"] == 0;
        for k in ["min_ns", "max_ns"] {
            if !(p[k].is_u64() || (empty && p[k].is_null())) {
                return Err(format!("predicted_dwell.{k} = {}", p[k]));
            }
        }
        if let (Some(lo), Some(hi)) = (p["min_ns"].as_u64(), p["max_ns"].as_u64())
            && lo > hi
        {
            return Err(format!("predicted min {lo} > max {hi}"));
        }
        let namespaces = v["namespaces"]
            .as_array()
            .ok_or("namespaces not an array")?;
        for n in namespaces {
            let obj = n.as_object().ok_or("a namespace entry not an object")?;
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut want = NAMESPACE_KEYS.to_vec();
            want.sort_unstable();
            if keys != want {
                return Err(format!("namespace keys {keys:?}, documented {want:?}"));
            }
            check("namespaces[].netns", &n["netns"], |x| {
                x.is_null() || x.is_u64()
            })?;
            check("namespaces[].overflow", &n["overflow"], |x| {
                x.is_null() || x.is_u64()
            })?;
            for k in &NAMESPACE_KEYS[1..6] {
                check(k, &n[*k], Value::is_u64)?;
            }
        }
        // The totals are the namespaces' sums (those gone since are in the
        // totals only).
        let sum = |k: &str| namespaces.iter().filter_map(|n| n[k].as_u64()).sum::<u64>();
        if sum("live_time_wait") != self.live_time_wait() {
            return Err(format!(
                "live_time_wait {} but the namespaces' add up to {}",
                self.live_time_wait(),
                sum("live_time_wait")
            ));
        }
        Ok(())
    }

    /// The entry of `namespaces` for the namespace with this inode.
    #[must_use]
    pub fn namespace(&self, inode: u64) -> Option<&Value> {
        self.0["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["netns"] == inode)
    }

    /// The inodes of `namespaces`, in order.
    #[must_use]
    pub fn namespaces(&self) -> Vec<u64> {
        self.0["namespaces"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["netns"].as_u64()).collect())
            .unwrap_or_default()
    }

    fn uint(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or_default()
    }

    /// `interval` or `final`.
    #[must_use]
    pub fn report(&self) -> &str {
        self.0["report"].as_str().unwrap_or_default()
    }

    #[must_use]
    pub fn entered(&self) -> u64 {
        self.uint("entered")
    }

    #[must_use]
    pub fn live_time_wait(&self) -> u64 {
        self.uint("live_time_wait")
    }

    #[must_use]
    pub fn live_fin_wait2_orphans(&self) -> u64 {
        self.uint("live_fin_wait2_orphans")
    }

    #[must_use]
    pub fn expired(&self) -> u64 {
        self.uint("expired")
    }

    #[must_use]
    pub fn killed_early(&self) -> u64 {
        self.uint("killed_early")
    }

    /// `(count, min, max)` of the predicted TIME_WAIT dwells.
    #[must_use]
    pub fn predicted(&self) -> (u64, Option<Duration>, Option<Duration>) {
        let p = &self.0["predicted_dwell"];
        let d = |k: &str| p[k].as_u64().map(Duration::from_nanos);
        (
            p["count"].as_u64().unwrap_or_default(),
            d("min_ns"),
            d("max_ns"),
        )
    }
}

impl fmt::Display for TimewaitLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
