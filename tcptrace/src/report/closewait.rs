//! CLOSE_WAIT leak reports for people (text) and programs (one JSON line
//! per group).

use std::{borrow::Cow, fmt::Write as _, time::Duration};

use crate::{
    model::{
        closewait::Group, container::short_id, histogram::Hist, socket::endpoint, stack::Frame,
    },
    report::text::{escape, human_duration},
};

mod json;
pub use json::JsonGroup;

fn write_stack(out: &mut String, title: &str, frames: &[Frame], truncated: bool) {
    if frames.is_empty() {
        return;
    }
    let _ = writeln!(out, "    {title}:");
    for f in frames {
        let name = f.function.as_deref().map_or_else(
            || format!("{:#x}", f.addr),
            |n| format!("{}+{:#x}", escape(n), f.offset),
        );
        let module = f
            .module
            .as_deref()
            .and_then(|m| m.rsplit('/').next())
            .map_or(Cow::Borrowed("?"), escape);
        let _ = write!(out, "      {name:<40} {module}");
        if let (Some(file), Some(line)) = (&f.file, f.line) {
            let _ = write!(out, "  {}:{line}", escape(file));
        }
        if f.recovered {
            let _ = write!(
                out,
                "  [caller of a frameless syscall wrapper, from the user sp]"
            );
        }
        // A refusal names a path the traced process chose.
        match (&f.skipped, &f.function) {
            (Some(why), None) => {
                let _ = write!(out, "  (not symbolized: {})", escape(&why.to_string()));
            }
            (Some(why), Some(_)) => {
                let _ = write!(out, "  (no debug info read: {})", escape(&why.to_string()));
            }
            (None, _) => {}
        }
        out.push('\n');
    }
    if truncated {
        let _ = writeln!(
            out,
            "      ... may be incomplete: the walk ended in a frame without frame pointers or symbols \
             (build the program with -fno-omit-frame-pointer for whole paths)"
        );
    }
}

/// A text report for people.
#[must_use]
/// `own` is tcptrace's own namespace: groups in others name theirs.
pub fn render_text(
    groups: &[Group],
    when: &str,
    min_age: Duration,
    final_report: bool,
    own: Option<u32>,
) -> String {
    let total: usize = groups.iter().map(|g| g.count).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} CLOSE_WAIT leaks at {when} (older than {}): {total} sockets in {} groups",
        if final_report {
            "Final report:"
        } else {
            "Report:"
        },
        humantime::format_duration(min_age),
        groups.len()
    );
    for g in groups {
        let who = match (g.pid, &g.comm) {
            (Some(pid), Some(comm)) => format!("pid {pid} ({})", escape(comm)),
            (Some(pid), None) => format!("pid {pid}"),
            _ => "owner unknown (no process holds the socket)".to_owned(),
        };
        let inside = g
            .process
            .nspid
            .map(|n| format!(" (pid {n} in its namespace)"))
            .unwrap_or_default();
        let _ = writeln!(out, "\n  {who}{inside}: {} sockets in CLOSE_WAIT", g.count);
        if let Some(c) = &g.process.cmdline {
            let _ = writeln!(out, "    cmdline: {}", escape(c));
        }
        if let Some(ns) = g.netns.filter(|ns| own.is_some_and(|o| o != *ns)) {
            let _ = writeln!(out, "    netns: {ns}");
        }
        if let Some(c) = &g.process.cgroup {
            let _ = write!(out, "    cgroup: {}", escape(c));
            if let Some(id) = &g.process.container_id {
                let _ = write!(out, "  container: {}", escape(short_id(id)));
            }
            out.push('\n');
        }
        let ge = if g.age_lower_bound { ">= " } else { "" };
        let _ = writeln!(
            out,
            "    age: oldest {ge}{}, min {}, median {}, max {ge}{}{}",
            human_duration(g.oldest_age),
            human_duration(g.ages.min),
            human_duration(g.ages.p50),
            human_duration(g.ages.max),
            if g.age_lower_bound {
                " (some sockets predate tcptrace: their age is a lower bound)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "    {} read EOF but never closed, {} never read to EOF; {} unread bytes queued",
            g.classes.read_eof_not_closed, g.classes.never_read_to_eof, g.unread_bytes
        );
        for e in &g.endpoints {
            let _ = writeln!(
                out,
                "    {} <- {} ({} sockets)",
                endpoint(e.local, e.lport),
                e.remote,
                e.count
            );
        }
        write_stack(&mut out, "read EOF at", &g.eof_stack, g.eof_stack_truncated);
        write_stack(
            &mut out,
            "first touched at",
            &g.first_stack,
            g.first_stack_truncated,
        );
        for n in &g.notes {
            let _ = writeln!(out, "    note: {}", escape(n));
        }
        if g.eof_stack.is_empty() && g.first_stack.is_empty() {
            let _ = writeln!(
                out,
                "    code path: not captured (the socket predates tcptrace, or its stack map was full)"
            );
        }
    }
    out
}

/// The exit line on CLOSE_WAIT sockets closed during the run: how many,
/// how many after leaking past `min_age`, and their dwell from the kernel's
/// histogram (exact minimum and maximum, the median at its bucket's
/// midpoint).
#[must_use]
pub fn closed_line(ended_leaks: u64, min_age: Duration, row: Option<(&Hist, u64)>) -> String {
    let n = row.map_or(0, |(h, _)| h.count());
    let mut s = format!(
        "tcptrace: {n} CLOSE_WAIT sockets closed during the run, {ended_leaks} of them after leaking longer than {}",
        humantime::format_duration(min_age)
    );
    if let Some((h, min)) = row {
        let _ = write!(
            s,
            "; CLOSE_WAIT dwell min {}, median {}, max {}",
            human_duration(Duration::from_nanos(min)),
            human_duration(Duration::from_nanos(h.percentile(0.5).unwrap_or(h.max_ns))),
            human_duration(Duration::from_nanos(h.max_ns))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::model::{
        closewait::{ProcessInfo, group, tests::sock},
        stack::Skipped,
    };

    #[test]
    fn json_group_has_the_documented_keys() {
        let g = group(
            vec![sock(10, 12, Some(&["recv", "h"]), &["recv", "h"], 1)],
            |_| ProcessInfo {
                cmdline: Some("./leaky --port 8080".into()),
                ..ProcessInfo::default()
            },
        );
        let report = crate::report::json::Report {
            final_report: true,
            time: "2026-01-01T00:00:00.000000Z",
        };
        let v =
            serde_json::to_value(JsonGroup::new(report, Duration::from_secs(10), &g[0])).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "v",
            "type",
            "report",
            "time",
            "min_age_ns",
            "pid",
            "comm",
            "nspid",
            "cmdline",
            "cgroup",
            "container",
            "netns",
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
        want.sort_unstable();
        assert_eq!(keys, want, "{v}");
        assert_eq!(v["type"], "closewait_leak");
        assert_eq!(v["min_age_ns"], 10_000_000_000_u64);
        assert_eq!(v["oldest_age_ns"], 12_000_000_000_u64);
        assert_eq!(v["ages"]["p50_ns"], 12_000_000_000_u64);
        assert!(v["nspid"].is_null(), "{v}");
        assert_eq!(
            v["endpoints"][0],
            serde_json::json!({
                "local": {"addr": "127.0.0.1", "port": 8080},
                "remote": {"addr": "10.0.0.2", "port": null},
                "count": 1,
            })
        );
        assert_eq!(v["eof_stack"][1]["function"], "h");
        assert_eq!(v["eof_stack"][1]["addr"], "0x1000");
        assert!(v["eof_stack"][1]["skipped"].is_null(), "{v}");
        assert_eq!(v["count"], 1);
    }

    #[test]
    fn text_names_process_path_and_truncation() {
        let mut s = sock(10, 12, Some(&["__libc_recv", "eof_handler"]), &["x"], 1);
        if let Some(st) = s.eof_stack.as_mut().map(Arc::make_mut) {
            st.truncated = true;
            st.frames[1].recovered = true;
        }
        s.age_lower_bound = true;
        let text = render_text(
            &group(vec![s], |_| ProcessInfo::default()),
            "now",
            Duration::from_secs(10),
            true,
            None,
        );
        assert!(text.contains("pid 10 (leaky)"), "{text}");
        assert!(text.contains("eof_handler+0x4"), "{text}");
        assert!(text.contains("frameless syscall wrapper"), "{text}");
        assert!(text.contains("may be incomplete"), "{text}");
        assert!(text.contains(">= 12.000s"), "{text}");
        assert!(text.starts_with("Final report:"), "{text}");
    }

    /// What a traced process controls (comm, command line, cgroup path,
    /// function names, module and source paths) reaches no line raw.
    #[test]
    fn text_escapes_what_the_process_controls() {
        const HOSTILE: &str = "\x1b[2J\nFake: \"\\";
        const SHOWN: &str = "\\x1b[2J\\nFake: \"\\\\";
        let mut s = sock(10, 12, Some(&[HOSTILE, "eof_handler"]), &["x"], 1);
        s.comm = Some(HOSTILE.into());
        if let Some(st) = s.eof_stack.as_mut().map(Arc::make_mut) {
            st.frames[1].module = Some(format!("/srv/{HOSTILE}"));
            st.frames[1].file = Some(format!("/src/{HOSTILE}.c"));
            st.frames[1].line = Some(7);
            let mut unresolved = st.frames[1].clone();
            unresolved.function = None;
            unresolved.skipped = Some(Skipped::Refused(format!(
                "debug file /tmp/{HOSTILE} is not a regular file"
            )));
            st.frames.push(unresolved);
        }
        let g = group(vec![s], |_| ProcessInfo {
            cmdline: Some(format!("./leaky {HOSTILE}")),
            cgroup: Some(format!("/system.slice/{HOSTILE}")),
            container_id: None,
            nspid: None,
        });
        let text = render_text(&g, "now", Duration::from_secs(10), true, None);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("Fake")), "{text}");
        for want in [
            format!("pid 10 ({SHOWN})"),
            format!("cmdline: ./leaky {SHOWN}\n"),
            format!("cgroup: /system.slice/{SHOWN}\n"),
            format!("{SHOWN}+0x4"),
            format!(" {SHOWN}  /src/{SHOWN}.c:7"),
            format!("(not symbolized: debug file /tmp/{SHOWN} is not a regular file)"),
        ] {
            assert!(text.contains(&want), "{want:?} in {text}");
        }
    }
}
