use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn v1(controllers: &str, path: &str) -> OwnerCgroup {
    OwnerCgroup {
        hierarchy: Hierarchy::V1(controllers.to_owned()),
        path: path.to_owned(),
    }
}

fn v2(path: &str) -> OwnerCgroup {
    OwnerCgroup {
        hierarchy: Hierarchy::V2,
        path: path.to_owned(),
    }
}

#[test]
fn the_v2_line_wins_when_not_the_root() {
    let text =
        format!("12:pids:/system.slice/docker-{ID}.scope\n0::/system.slice/docker-{ID}.scope\n");
    assert_eq!(
        owner_cgroup(&text),
        Some(v2(&format!("/system.slice/docker-{ID}.scope")))
    );
    // A removed cgroup is marked after its path.
    assert_eq!(owner_cgroup("0::/gone (deleted)\n"), Some(v2("/gone")));
}

#[test]
fn a_v1_only_runtime_falls_back_to_its_v1_path() {
    // Docker with the cgroupfs driver on a hybrid host: every v1
    // hierarchy has the container, v2 is the root.
    let text = format!(
        "9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n4:memory:/docker/{ID}\n1:cpu,cpuacct:/docker/{ID}\n0::/\n"
    );
    assert_eq!(
        owner_cgroup(&text),
        Some(v1("name=systemd", &format!("/docker/{ID}")))
    );
    // This machine's sandbox: only the memory hierarchy is set.
    let here = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/43f6b0b4\n1:cpu:/\n0::/\n";
    assert_eq!(
        owner_cgroup(here),
        Some(v1("memory", "/process_api/43f6b0b4"))
    );
}

#[test]
fn among_v1_paths_a_container_then_depth_then_hierarchy() {
    let text = format!("9:name=systemd:/system.slice/a/b/c/d\n4:memory:/docker/{ID}\n0::/\n");
    assert_eq!(
        owner_cgroup(&text),
        Some(v1("memory", &format!("/docker/{ID}")))
    );
    let text = "9:name=systemd:/a\n8:pids:/a/b\n0::/\n";
    assert_eq!(owner_cgroup(text), Some(v1("pids", "/a/b")));
    let text = "3:cpu,cpuacct:/a\n4:memory:/a\n8:pids:/a\n2:freezer:/a\n";
    assert_eq!(owner_cgroup(text), Some(v1("pids", "/a")));
    let text = "3:cpu,cpuacct:/a\n2:freezer:/a\n";
    assert_eq!(owner_cgroup(text), Some(v1("cpu,cpuacct", "/a")));
}

#[test]
fn roots_only_or_nothing() {
    assert_eq!(owner_cgroup("4:memory:/\n0::/\n"), Some(v2("/")));
    assert_eq!(owner_cgroup("4:memory:/\n"), Some(v1("memory", "/")));
    assert_eq!(owner_cgroup(""), None);
    assert_eq!(
        owner_cgroup("x:memory:/a\n4:memory\n4:memory:relative\n"),
        None
    );
    // A path may hold colons.
    assert_eq!(owner_cgroup("0::/a:b\n"), Some(v2("/a:b")));
}

#[test]
fn nspid_is_the_innermost_pid() {
    let status = "Name:\tnginx\nTgid:\t4242\nPid:\t4242\nNSpid:\t4242\t17\t1\nPPid:\t1\n";
    assert_eq!(nspid(status), Some(1));
    assert_eq!(nspid("NSpid:\t4242\n"), Some(4242));
    assert_eq!(nspid("Pid:\t4242\n"), None, "kernels before 4.1");
    assert_eq!(
        nspid("NSpid:\t\nNSpid:\t5\n"),
        None,
        "the first line counts"
    );
    assert_eq!(nspid("NSpid:\t4242\tx\n"), None);
}

#[test]
fn this_process() {
    let me = std::process::id();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let first = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse::<u32>().ok());
    assert_eq!(first, Some(me), "NSpid starts with the pid we see");
    assert!(nspid_of(me).is_some());
    assert!(owner_cgroup_of(me).is_some());
    assert_eq!(nspid_of(u32::MAX), None, "a vanished pid is no error");
    assert_eq!(owner_cgroup_of(u32::MAX), None);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Any text parses without panicking; what is found is in the text.
    #[test]
    fn any_text(text in "\\PC{0,200}", lines in proptest::collection::vec("[0-9]{0,2}:[a-z,=]{0,12}:[/a-z:() ]{0,20}", 0..6)) {
        let _ = nspid(&text);
        let _ = owner_cgroup(&text);
        let joined = lines.join("\n");
        if let Some(c) = owner_cgroup(&joined) {
            proptest::prop_assert!(joined.contains(&c.path));
        }
        let _ = nspid(&format!("NSpid:{joined}"));
    }
}
