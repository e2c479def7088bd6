//! `--prometheus`: [`Metrics`], a `/metrics` page in the Prometheus text
//! format parsed into [`Sample`]s, and [`promtool_check`], Prometheus's own
//! check of such a page.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use crate::process::{slurp, wait_exit};

/// A sample's labels, `(name, value)` in page order.
pub type Labels = Vec<(String, String)>;

/// One sample of a Prometheus text exposition: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A parsed `/metrics` page (the Prometheus text format, as prometheus-client
/// writes it).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

/// Parse `{k="v",...}` (with `\\`, `\"` and `\n` escapes) from the start of
/// `s`; returns the labels and the rest after `}`.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (key, r) = rest.split_once("=\"").ok_or("no =\" after a label name")?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &r[end + 1..];
    }
}

impl Metrics {
    /// Parse a page; panics (with the page) on a malformed line or a page
    /// that does not end with `# EOF`.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.last().copied(),
            Some("# EOF"),
            "an OpenMetrics page ends with # EOF:\n{text}"
        );
        for line in lines {
            if line.starts_with('#') {
                continue;
            }
            let parsed = (|| -> Result<Sample, String> {
                let name_end = line.find(['{', ' ']).ok_or("no value")?;
                let name = &line[..name_end];
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                {
                    return Err(format!("bad metric name {name:?}"));
                }
                let (labels, rest) = if line[name_end..].starts_with('{') {
                    parse_labels(&line[name_end..])?
                } else {
                    (Vec::new(), &line[name_end..])
                };
                // `value [timestamp]`: tcptrace's samples carry no timestamp.
                let mut fields = rest.split_whitespace();
                let value = fields.next().ok_or("no value")?;
                if fields.next().is_some() {
                    return Err("more than a value".into());
                }
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
                };
                Ok(Sample {
                    name: name.to_owned(),
                    labels,
                    value,
                })
            })();
            match parsed {
                Ok(s) => samples.push(s),
                Err(why) => panic!("malformed metrics line ({why}): {line:?}\n{text}"),
            }
        }
        Self {
            samples,
            text: text.to_owned(),
        }
    }

    /// The samples of `name` whose labels include every one of `labels`.
    #[must_use]
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect()
    }

    /// The value of the one sample named `name` with exactly `labels`;
    /// `None` when there is none, a panic when there are several.
    #[must_use]
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .matching(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert!(
            found.len() <= 1,
            "several samples {name}{labels:?}:\n{}",
            self.text
        );
        found.first().map(|s| s.value)
    }

    /// [`Metrics::get`], as an integer; panics (with the page) when absent or
    /// not a whole number.
    #[must_use]
    pub fn int(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self
            .get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text));
        assert!(
            v >= 0.0 && v.fract() == 0.0 && v < 9e15,
            "{name}{labels:?} = {v}, not a count"
        );
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked: a whole number from 0 to 9e15"
        )]
        let n = v as u64;
        n
    }

    /// The `_bucket` samples of histogram `name` whose labels include
    /// `labels`, as `(le, cumulative count)` in page order.
    #[must_use]
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
        self.matching(&format!("{name}_bucket"), labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len() + 1)
            .map(|s| {
                let le = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map_or_else(|| panic!("a bucket without le: {s:?}"), |(_, v)| v.clone());
                (le, s.value)
            })
            .collect()
    }
}

/// `promtool check metrics` on `page`: Prometheus's own parser (the text
/// format's) and linter, the strict check that a page parses. Panics, with
/// promtool's words, when promtool is missing (never skips), on a parse
/// error (exit 1), and on a lint problem other than "no help text" for a
/// `_total` sample. That one every counter of prometheus-client's page has:
/// the page is `OpenMetrics` text, which writes `# HELP` and `# TYPE` on a
/// counter's name without the `_total` its samples carry, and this promtool
/// (2.42) reads the Prometheus text format, which wants them on the
/// sample's own name. Lint problems exit 3.
pub fn promtool_check(page: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "running promtool: {e}: the /metrics tests parse the page with \
                 `promtool check metrics`; install it: apt-get install --no-install-recommends \
                 prometheus (.ci/run does)"
            )
        });
    let mut stdin = child.stdin.take().expect("piped");
    let out = slurp(child.stdout.take().expect("piped"));
    let err = slurp(child.stderr.take().expect("piped"));
    stdin
        .write_all(page.as_bytes())
        .expect("writing the page to promtool");
    drop(stdin);
    let status = wait_exit(
        &mut child,
        "promtool check metrics",
        Duration::from_secs(30),
    );
    let said = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| {
            !(l.split_once(' ')
                .is_some_and(|(name, why)| name.ends_with("_total") && why == "no help text"))
        })
        .collect();
    assert!(
        matches!(status.code(), Some(0 | 3)) && problems.is_empty(),
        "promtool check metrics: {status}: {problems:#?}\npage:\n{page}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_labels_escapes_and_inf() {
        let page = "# HELP x_seconds A histogram.\n# TYPE x_seconds histogram\n\
                    x_seconds_bucket{le=\"0.5\",state=\"CLOSE_WAIT\"} 2\n\
                    x_seconds_bucket{le=\"+Inf\",state=\"CLOSE_WAIT\"} 3\n\
                    x_seconds_count{state=\"CLOSE_WAIT\"} 3\n\
                    odd{reason=\"a \\\"q\\\" \\\\ b\"} 1.5\nplain 7\n# EOF\n";
        let m = Metrics::parse(page);
        assert_eq!(m.int("x_seconds_count", &[("state", "CLOSE_WAIT")]), 3);
        assert_eq!(
            m.buckets("x_seconds", &[("state", "CLOSE_WAIT")]),
            [("0.5".to_owned(), 2.0), ("+Inf".to_owned(), 3.0)]
        );
        assert_eq!(m.get("odd", &[("reason", "a \"q\" \\ b")]), Some(1.5));
        assert_eq!(m.int("plain", &[]), 7);
        assert_eq!(
            m.get("x_seconds_count", &[]),
            None,
            "labels must match exactly"
        );
    }

    #[test]
    #[should_panic(expected = "ends with # EOF")]
    fn metrics_without_eof_are_refused() {
        let _ = Metrics::parse("plain 7\n");
    }
}
