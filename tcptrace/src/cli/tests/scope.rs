//! `--netns`, `--container`, `--cgroup` and `--hist --by netns|container`:
//! the plan they build and the errors that say what to write instead.

use super::*;
use crate::model::{
    netns::NetnsSpec,
    plan::{GroupLabel, Scope},
};

fn plan(args: &[&str]) -> Plan {
    parse(args).unwrap().plan().unwrap()
}

#[test]
fn every_namespace_by_default() {
    assert_eq!(plan(&[]).scope, Scope::default());
    assert_eq!(plan(&["--hist", "--timewait"]).scope, Scope::default());
}

#[test]
fn scope_flags_build_the_plan_scope() {
    let p = plan(&[
        "--netns",
        "pid:42",
        "--container",
        "4F1C2A9E0B7D",
        "--cgroup",
        "/system.slice//",
    ]);
    assert_eq!(
        p.scope,
        Scope {
            netns: Some(NetnsSpec::Pid(42)),
            container: Some("4F1C2A9E0B7D".into()),
            cgroup: Some("/system.slice".into()),
        }
    );
    assert_eq!(
        plan(&["--netns", "blue"]).scope.netns,
        Some(NetnsSpec::Name("blue".into()))
    );
    assert_eq!(
        plan(&["--netns", "inode:4026531840"]).scope.netns,
        Some(NetnsSpec::Inode(4_026_531_840))
    );
    assert_eq!(
        plan(&["--container", "containerd://4f1c"]).scope.container,
        Some("4f1c".into()),
        "a Kubernetes containerID"
    );
}

/// `--netns` narrows every mode and every combination to one namespace.
#[test]
fn netns_applies_to_every_mode() {
    for mode in [
        &[][..],
        &["--hist"],
        &["--closewait-leaks"],
        &["--timewait"],
        &["--hist", "--closewait-leaks", "--timewait"],
        &["--hist", "--by", "container", "--timewait"],
    ] {
        let args: Vec<&str> = mode.iter().copied().chain(["--netns", "inode:7"]).collect();
        assert_eq!(
            plan(&args).scope.netns,
            Some(NetnsSpec::Inode(7)),
            "{args:?}"
        );
    }
}

/// Each bad value is clap's usage error, naming the flag and saying what
/// to write instead.
#[test]
fn bad_scope_values_say_what_to_write() {
    for (args, wants) in [
        (
            &["--netns", "42"][..],
            &["--netns <NS>", "pid:42", "inode:42"][..],
        ),
        (&["--netns", "pid:x"], &["not a number"]),
        (&["--netns", ""], &["empty namespace name"]),
        (&["--netns", "a/b"], &["/run/netns"]),
        (
            &["--container", ""],
            &["--container <ID>", "empty container id"],
        ),
        (&["--container", "containerd://"], &["empty container id"]),
        (
            &["--container", "/system.slice/x"],
            &["not a container id", "--cgroup"],
        ),
        (&["--container", "4f 1c"], &["hex digits", "machine name"]),
        (
            &["--cgroup", ""],
            &["--cgroup <PATH>", "empty cgroup path", "/proc/PID/cgroup"],
        ),
        (
            &["--cgroup", "relative/path"],
            &["relative", "starts with '/'"],
        ),
        (
            &["--cgroup", "/sys/fs/cgroup/system.slice"],
            &["mount point", "not /sys/fs/cgroup"],
        ),
        (&["--cgroup", "/a/../b"], &["'..'"]),
        (&["--hist", "--by", "pod"], &["netns, container"]),
    ] {
        let err = parse(args).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}");
        let text = err.to_string();
        for want in wants {
            assert!(text.contains(want), "{args:?}: {want:?} not in {text}");
        }
    }
}

#[test]
fn hist_by_netns_and_by_container_share_the_kernel_key() {
    for (by, label, name) in [
        ("netns", GroupLabel::Key, "netns"),
        ("container", GroupLabel::Container, "container"),
    ] {
        let args = ["--hist", "--by", by];
        let hist = plan(&args).analyses.hist.unwrap();
        assert_eq!((hist.by, hist.label), (HistBy::Netns, label), "{by}");
        assert_eq!(hist.by_name(), Some(name));
        assert_eq!(config(&args).hist_by, HistBy::Netns as u32, "{by}");
    }
    let hist = plan(&["--hist", "--by", "lport"]).analyses.hist.unwrap();
    assert_eq!((hist.by, hist.label), (HistBy::LocalPort, GroupLabel::Key));
    let hist = plan(&["--hist"]).analyses.hist.unwrap();
    assert_eq!((hist.by, hist.label), (HistBy::State, GroupLabel::Key));
}

/// Leak reports need the histograms by state, whatever the split.
#[test]
fn leaks_refuse_namespace_splits_too() {
    for by in ["netns", "container"] {
        let err = parse(&["--closewait-leaks", "--hist", "--by", by])
            .unwrap()
            .plan()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{by}");
    }
}

#[test]
fn help_teaches_namespaces_and_containers() {
    let help = Cli::command().render_long_help().to_string();
    for flag in ["--netns <NS>", "--container <ID>", "--cgroup <PATH>"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
    let section = help
        .split("NAMESPACES AND CONTAINERS (--netns, --container, --cgroup)")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap_or_default();
    let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "every network namespace on the host",
        "kernel side drops other namespaces' sockets",
        "/run/netns/NAME",
        "pid:PID",
        "inode:INODE",
        "bare number is refused",
        "`docker ps` shows the first 12",
        "containerd://ID",
        "/system.slice matches /system.slice/docker-ID.scope, not /system.slicer",
        "--by container",
    ] {
        assert!(section.contains(want), "{want}: {section}");
    }
}

/// `--container` and `--cgroup` need a socket's owner: the stream and leak
/// reports have it, the kernel-side counts of --hist and --timewait do not.
#[test]
fn owner_filters_go_with_the_analyses_that_know_owners() {
    for ok in [&[][..], &["--closewait-leaks"]] {
        let args: Vec<&str> = ok.iter().copied().chain(["--container", "ab12"]).collect();
        assert_eq!(plan(&args).scope.container.as_deref(), Some("ab12"));
    }
    for mode in [
        &["--hist"][..],
        &["--timewait"],
        &["--closewait-leaks", "--timewait"],
    ] {
        for flag in [["--container", "ab12"], ["--cgroup", "/system.slice"]] {
            let args: Vec<&str> = mode.iter().copied().chain(flag).collect();
            let err = parse(&args).unwrap().plan().unwrap_err().to_string();
            assert!(err.contains("use --netns"), "{args:?}: {err}");
        }
    }
}
