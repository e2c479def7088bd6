//! A real Prometheus server (Debian's `prometheus` package) inside a test's
//! namespace, scraping tcptrace every second, and `PromQL` queries through
//! its HTTP API with `promtool query instant`.

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{ChildGuard, Netns, POLL, TempDir, run_bounded};

/// A `prometheus` process and its scratch directory (config and TSDB),
/// killed and removed on drop.
pub struct PromServer {
    listen: String,
    ns_name: String,
    _child: ChildGuard,
    _dir: TempDir,
}

/// Fail, naming the Debian package to install, when `program` cannot run
/// (`program --version`).
pub fn need(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} not found: these tests need it; install it: \
         apt-get install --no-install-recommends {package} (.ci/run does)"
    );
}

impl PromServer {
    /// Start `prometheus` in `ns` on `listen`, scraping `target`'s
    /// `/metrics` every second, with `rules` (alerting rule files) loaded;
    /// returns once it answers queries.
    #[must_use]
    pub fn start(ns: &Netns, listen: &str, target: &str, rules: &[&Path]) -> Self {
        need("prometheus", "prometheus");
        need("promtool", "prometheus");
        let dir = TempDir::new("prometheus");
        let rule_files: Vec<String> = (rules.iter())
            .map(|r| format!("  - {}\n", r.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: tcptrace\n    static_configs:\n      - targets: ['{target}']\n",
            if rule_files.is_empty() {
                "  []\n".to_owned()
            } else {
                rule_files.concat()
            }
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let mut cmd = ns.command(Path::new("prometheus"));
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = ChildGuard(cmd.spawn().expect("starting prometheus"));
        let server = PromServer {
            listen: listen.to_owned(),
            ns_name: ns.name().to_owned(),
            _child: child,
            _dir: dir,
        };
        let deadline = Instant::now() + crate::patient(Duration::from_secs(30));
        while server.query("vector(1)").is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus on {listen} did not answer within 30 s"
            );
            thread::sleep(POLL);
        }
        server
    }

    /// An instant query: the result vector, or promtool's error (a bad
    /// expression, a server that does not answer).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let out = run_bounded(
            Command::new("ip").args([
                "netns",
                "exec",
                &self.ns_name,
                "promtool",
                "query",
                "instant",
                "-o",
                "json",
                &format!("http://{}", self.listen),
                expr,
            ]),
            Duration::from_secs(15),
        );
        if !out.status.success() {
            return Err(format!(
                "{expr}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{expr}: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The sample values of `expr`'s result, once `done` accepts them, at
    /// most `timeout`; the last result otherwise (the caller's assertion
    /// says what is missing).
    pub fn wait_values(
        &self,
        expr: &str,
        timeout: Duration,
        done: impl Fn(&[f64]) -> bool,
    ) -> Vec<f64> {
        let deadline = Instant::now() + crate::patient(timeout);
        loop {
            let values: Vec<f64> = self
                .query(expr)
                .unwrap_or_default()
                .iter()
                .filter_map(sample_value)
                .collect();
            if done(&values) || Instant::now() >= deadline {
                return values;
            }
            thread::sleep(POLL);
        }
    }
}

/// The value of one sample of an instant vector: `{"metric":…,"value":[t,"v"]}`.
#[must_use]
pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}
