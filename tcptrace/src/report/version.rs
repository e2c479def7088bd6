//! `tcptrace --version -v`: after the version line, what the running kernel
//! offers tcptrace, one line each, for a bug report or a machine check.

use std::fmt::Write as _;

use crate::model::features::{KernelFeatures, Probe, has_fallback, since};

/// Append the lines of `f` to `out` (each ends with a newline).
pub fn kernel_features(out: &mut String, f: &KernelFeatures) {
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "{key:<11} {value}");
    };
    line("kernel:", &f.release);
    line(
        "BTF:",
        &probe(
            &f.btf,
            |path| format!("yes ({path})"),
            || "no (network namespaces are then unknown: 0)".to_owned(),
        ),
    );
    line(
        "tracefs:",
        &probe(
            &f.tracefs,
            |root| format!("yes ({root})"),
            || "not mounted (tcptrace mounts it at /sys/kernel/tracing when it runs)".to_owned(),
        ),
    );
    line(
        "bpf_stats:",
        &probe(
            &f.bpf_stats,
            |v| {
                let what = if v == "0" {
                    "off: no kernel cost per call (sysctl kernel.bpf_stats_enabled=1)"
                } else {
                    "on"
                };
                format!("kernel.bpf_stats_enabled = {v} ({what})")
            },
            || "no kernel.bpf_stats_enabled on this kernel".to_owned(),
        ),
    );
    if f.tracepoints.is_empty() {
        line("tracepoints:", "not checked (tracefs not found)");
        return;
    }
    let _ = writeln!(out, "tracepoints:");
    let width = f
        .tracepoints
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    for tp in &f.tracepoints {
        let short = tp.name.split_once(':').map_or(tp.name.as_str(), |(_, n)| n);
        let missing = if tp.optional {
            "no (optional: --timewait then cannot explain failed binds and connects)".to_owned()
        } else if has_fallback(&tp.name) {
            format!(
                "no (Linux {}+): recv and send are traced by fexit on tcp_recvmsg and \
                 tcp_sendmsg instead (needs BTF and Linux 5.17+)",
                since(short)
            )
        } else {
            format!("MISSING (tcptrace needs it: Linux {}+)", since(short))
        };
        let found = probe(&tp.found, |()| "yes".to_owned(), || missing);
        let _ = writeln!(out, "  {:<width$}  {found}", tp.name);
    }
}

fn probe<T>(
    p: &Probe<T>,
    found: impl FnOnce(&T) -> String,
    missing: impl FnOnce() -> String,
) -> String {
    match p {
        Probe::Found(t) => found(t),
        Probe::Missing => missing(),
        Probe::Unreadable(why) => format!("unreadable ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::features::{NEEDS_ROOT, Tracepoint};

    fn features(tracefs: Probe<String>, tracepoints: Vec<Tracepoint>) -> KernelFeatures {
        KernelFeatures {
            release: "6.12.0-test".to_owned(),
            btf: Probe::Found("/sys/kernel/btf/vmlinux".to_owned()),
            tracefs,
            tracepoints,
            bpf_stats: Probe::Found("0".to_owned()),
        }
    }

    #[test]
    fn every_tracepoint_has_a_line_and_a_missing_one_says_so() {
        let tps = vec![
            Tracepoint {
                name: "sock:inet_sock_set_state".to_owned(),
                optional: false,
                found: Probe::Found(()),
            },
            Tracepoint {
                name: "tcp:tcp_destroy_sock".to_owned(),
                optional: false,
                found: Probe::Missing,
            },
            Tracepoint {
                name: "syscalls:sys_exit_bind".to_owned(),
                optional: true,
                found: Probe::Missing,
            },
        ];
        let mut out = String::new();
        kernel_features(
            &mut out,
            &features(Probe::Found("/sys/kernel/tracing".to_owned()), tps),
        );
        assert!(out.starts_with("kernel:     6.12.0-test\n"), "{out}");
        assert!(
            out.contains("BTF:        yes (/sys/kernel/btf/vmlinux)\n"),
            "{out}"
        );
        assert!(
            out.contains("tracefs:    yes (/sys/kernel/tracing)\n"),
            "{out}"
        );
        assert!(out.contains("kernel.bpf_stats_enabled = 0 (off"), "{out}");
        assert!(out.contains("  sock:inet_sock_set_state  yes\n"), "{out}");
        assert!(out.contains("  tcp:tcp_destroy_sock      MISSING"), "{out}");
        assert!(
            out.contains("  syscalls:sys_exit_bind    no (optional"),
            "{out}"
        );
    }

    #[test]
    fn what_needs_root_says_so() {
        let mut f = features(Probe::Unreadable(NEEDS_ROOT.to_owned()), Vec::new());
        f.bpf_stats = Probe::Unreadable(NEEDS_ROOT.to_owned());
        let mut out = String::new();
        kernel_features(&mut out, &f);
        assert!(
            out.contains("tracefs:    unreadable (needs root)\n"),
            "{out}"
        );
        assert!(
            out.contains("bpf_stats:  unreadable (needs root)\n"),
            "{out}"
        );
        assert!(out.contains("tracepoints: not checked"), "{out}");
    }
}
