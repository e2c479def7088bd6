use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const UID: &str = "3f2a7c1e-5b6d-4e8f-9a0b-1c2d3e4f5a6b";

fn parse(path: &str) -> Option<Container> {
    Container::from_cgroup_path(path)
}

fn plain(runtime: Runtime, id: &str) -> Container {
    Container {
        runtime,
        id: id.to_owned(),
        pod_uid: None,
    }
}

fn in_pod(runtime: Runtime, id: &str) -> Container {
    Container {
        runtime,
        id: id.to_owned(),
        pod_uid: Some(UID.to_owned()),
    }
}

#[test]
fn docker_systemd_and_cgroupfs_layouts() {
    let systemd = format!("/system.slice/docker-{ID}.scope");
    assert_eq!(parse(&systemd), Some(plain(Runtime::Docker, ID)));
    assert_eq!(
        parse(&format!("/docker/{ID}")),
        Some(plain(Runtime::Docker, ID))
    );
    // Docker in docker: the innermost container.
    assert_eq!(
        parse(&format!("/docker/{ID}/docker/{ID2}")),
        Some(plain(Runtime::Docker, ID2))
    );
    // A bare id outside `/docker/` and outside a pod names no runtime.
    assert_eq!(parse(&format!("/ecs/task/{ID}")), None);
}

#[test]
fn containerd_crio_and_podman_scopes() {
    let scope = |prefix: &str| format!("/system.slice/{prefix}-{ID}.scope");
    assert_eq!(
        parse(&scope("cri-containerd")),
        Some(plain(Runtime::Containerd, ID))
    );
    assert_eq!(parse(&scope("crio")), Some(plain(Runtime::Crio, ID)));
    assert_eq!(parse(&scope("libpod")), Some(plain(Runtime::Podman, ID)));
    // Podman's init sits in a `container` child of the scope.
    let podman = format!("/machine.slice/libpod-{ID}.scope/container");
    assert_eq!(parse(&podman), Some(plain(Runtime::Podman, ID)));
    let rootless =
        format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
    assert_eq!(parse(&rootless), Some(plain(Runtime::Podman, ID)));
}

#[test]
fn conmon_monitors_are_not_containers() {
    assert_eq!(
        parse(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
        None
    );
    assert_eq!(
        parse(&format!("/system.slice/crio-conmon-{ID}.scope")),
        None
    );
    // Under a pod, the conmon scope is still not the container.
    let pod = format!(
        "/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope",
        UID.replace('-', "_")
    );
    assert_eq!(parse(&pod), None);
}

#[test]
fn kubepods_with_the_cgroupfs_driver() {
    assert_eq!(
        parse(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
        Some(in_pod(Runtime::Cri, ID))
    );
    assert_eq!(
        parse(&format!("/kubepods/pod{UID}/{ID}")),
        Some(in_pod(Runtime::Cri, ID))
    );
    // CRI-O names its scopes even with the cgroupfs driver.
    assert_eq!(
        parse(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
        Some(in_pod(Runtime::Crio, ID))
    );
    // The pod's own cgroup holds no container.
    assert_eq!(parse(&format!("/kubepods/besteffort/pod{UID}")), None);
}

#[test]
fn kubepods_with_the_systemd_driver_normalise_the_uid() {
    let underscored = UID.replace('-', "_");
    let burstable = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(parse(&burstable), Some(in_pod(Runtime::Containerd, ID)));
    let guaranteed = format!("/kubepods.slice/kubepods-pod{underscored}.slice/crio-{ID}.scope");
    assert_eq!(parse(&guaranteed), Some(in_pod(Runtime::Crio, ID)));
    // Static pods' UIDs are 32 hex digits without separators.
    let static_uid = "0123456789abcdef0123456789abcdef";
    let found = parse(&format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{static_uid}.slice/docker-{ID}.scope"
    ));
    assert_eq!(found.and_then(|c| c.pod_uid).as_deref(), Some(static_uid));
}

#[test]
fn a_pod_outside_kubepods_is_not_a_pod() {
    let found = parse(&format!("/system.slice/pod{UID}/docker-{ID}.scope"));
    assert_eq!(found, Some(plain(Runtime::Docker, ID)));
    assert_eq!(parse(&format!("/pods/pod{UID}/{ID}")), None);
}

#[test]
fn systemd_nspawn_machines_by_name() {
    let service = "/machine.slice/systemd-nspawn@web1.service";
    assert_eq!(parse(service), Some(plain(Runtime::Nspawn, "web1")));
    // The payload's own cgroups are below the machine's.
    let payload = "/machine.slice/systemd-nspawn@web1.service/payload/system.slice/cron.service";
    assert_eq!(parse(payload), Some(plain(Runtime::Nspawn, "web1")));
    // systemd escapes `-` in unit names.
    let scope = "/machine.slice/machine-my\\x2dbox.scope";
    assert_eq!(parse(scope), Some(plain(Runtime::Nspawn, "my-box")));
    // A `machine-` scope elsewhere, or an escape that is not one, stays.
    assert_eq!(parse("/system.slice/machine-x.scope"), None);
    let odd = "/machine.slice/machine-a\\x0ab\\xzz.scope";
    assert_eq!(parse(odd), Some(plain(Runtime::Nspawn, "a\\x0ab\\xzz")));
}

#[test]
fn ordinary_paths_are_no_container() {
    for path in [
        "/",
        "",
        "/user.slice/user-0.slice/session-1.scope",
        "/system.slice/docker.service",
        "/system.slice/containerd.service",
        "/machine.slice",
        "/kubepods.slice/kubepods-burstable.slice",
        &format!("/system.slice/docker-{}.scope", &ID[1..]),
        &format!("/system.slice/docker-{ID}0.scope"),
    ] {
        assert_eq!(parse(path), None, "{path}");
    }
}

#[test]
fn short_forms_for_text_output() {
    let docker = parse(&format!("/docker/{ID}")).unwrap();
    assert_eq!(docker.short_id(), "0123456789ab");
    assert_eq!(docker.to_string(), "docker:0123456789ab");
    let machine = parse("/machine.slice/systemd-nspawn@a-long-machine-name.service").unwrap();
    assert_eq!(machine.short_id(), "a-long-machine-name");
    // Characters, not bytes: no split inside a UTF-8 sequence.
    assert_eq!(short_id("ééééééééééééééé"), "éééééééééééé");
    assert_eq!(short_id("abc"), "abc");
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Any path parses without panicking, and what it finds is in it.
    #[test]
    fn any_path_parses(path in "\\PC{0,160}") {
        if let Some(c) = parse(&path) {
            proptest::prop_assert!(!c.id.is_empty());
            let _ = c.short_id();
            let _ = c.to_string();
        }
    }

    /// Paths made of the pieces the parser looks for, in any order.
    #[test]
    fn pieces_in_any_order(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("kubepods".to_owned()),
                proptest::strategy::Just("docker".to_owned()),
                proptest::strategy::Just("machine.slice".to_owned()),
                proptest::strategy::Just(format!("pod{UID}")),
                proptest::strategy::Just(ID.to_owned()),
                proptest::strategy::Just(format!("libpod-conmon-{ID}.scope")),
                proptest::strategy::Just("machine-\\x2".to_owned()),
                proptest::strategy::Just("systemd-nspawn@.service".to_owned()),
                "[a-z0-9@.\\\\_-]{0,20}",
            ],
            0..8,
        ),
        id in "[0-9a-f]{64}",
    ) {
        let path = format!("/{}", parts.join("/"));
        let _ = parse(&path);
        let scoped = parse(&format!("{path}/docker-{id}.scope"));
        proptest::prop_assert_eq!(scoped.map(|c| c.id), Some(id));
    }
}
