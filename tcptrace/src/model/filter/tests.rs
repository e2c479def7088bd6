//! `--container` and `--cgroup`: the values they accept and what they match.

use proptest::prelude::*;

use super::*;

const ID: &str = "4f1c2a9e0b7d3c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";

#[test]
fn container_prefixes_are_ids_or_names() {
    assert_eq!(container_prefix("4f1c2a9e0b7d"), Ok("4f1c2a9e0b7d".into()));
    assert_eq!(container_prefix("4F1C"), Ok("4F1C".into()));
    assert_eq!(container_prefix("web-1.prod"), Ok("web-1.prod".into()));
    // A Kubernetes pod's containerID, runtime first.
    assert_eq!(container_prefix("containerd://4f1c"), Ok("4f1c".into()));
    assert_eq!(container_prefix("docker://4f1c"), Ok("4f1c".into()));
    assert_eq!(container_prefix(""), Err(ScopeError::EmptyContainer));
    assert_eq!(
        container_prefix("containerd://"),
        Err(ScopeError::EmptyContainer)
    );
    assert_eq!(
        container_prefix("/system.slice/docker-4f1c.scope"),
        Err(ScopeError::ContainerPath)
    );
    for bad in ["4f1c 2a", "4f1c\n", "id:4f1c", "\u{e9}t\u{e9}"] {
        assert_eq!(
            container_prefix(bad),
            Err(ScopeError::ContainerChars),
            "{bad:?}"
        );
    }
}

#[test]
fn container_ids_match_by_prefix_in_any_case() {
    assert!(container_matches("4f1c2a9e0b7d", ID));
    assert!(container_matches("4F1C2A9E0B7D", ID));
    assert!(container_matches(ID, ID));
    assert!(!container_matches("4f1d", ID));
    assert!(
        !container_matches(&format!("{ID}0"), ID),
        "longer than the id"
    );
    assert!(container_matches("web", "web-1"));
    assert!(!container_matches("web-2", "web-1"));
    // Not a char boundary of a (hostile) id: no match, no panic.
    assert!(!container_matches("ab", "\u{e9}x"));
}

#[test]
fn cgroup_prefixes_are_absolute_paths_below_the_mount() {
    assert_eq!(cgroup_prefix("/system.slice"), Ok("/system.slice".into()));
    assert_eq!(cgroup_prefix("/system.slice/"), Ok("/system.slice".into()));
    assert_eq!(
        cgroup_prefix("//kubepods.slice//x/"),
        Ok("/kubepods.slice/x".into())
    );
    assert_eq!(cgroup_prefix("/"), Ok("/".into()));
    assert_eq!(cgroup_prefix("///"), Ok("/".into()));
    assert_eq!(cgroup_prefix(""), Err(ScopeError::EmptyCgroup));
    assert_eq!(
        cgroup_prefix("system.slice"),
        Err(ScopeError::RelativeCgroup)
    );
    assert_eq!(
        cgroup_prefix("0::/system.slice"),
        Err(ScopeError::RelativeCgroup)
    );
    assert_eq!(
        cgroup_prefix("/sys/fs/cgroup/system.slice"),
        Err(ScopeError::CgroupMount)
    );
    for dots in ["/system.slice/..", "/./system.slice"] {
        assert_eq!(cgroup_prefix(dots), Err(ScopeError::CgroupDots), "{dots}");
    }
    // Names with dots are names.
    assert_eq!(cgroup_prefix("/a..b/.x"), Ok("/a..b/.x".into()));
}

#[test]
fn cgroups_match_on_component_boundaries() {
    let p = "/system.slice";
    assert!(cgroup_matches(p, "/system.slice"));
    assert!(cgroup_matches(p, "/system.slice/docker-4f1c.scope"));
    assert!(!cgroup_matches(p, "/system.slicer"));
    assert!(!cgroup_matches(p, "/system.slicer/x"));
    assert!(!cgroup_matches(p, "/user.slice"));
    assert!(!cgroup_matches(p, "/"));
    assert!(cgroup_matches("/system.slice/", "/system.slice/x"));
    assert!(cgroup_matches("/", "/"));
    assert!(cgroup_matches("/", "/user.slice/user-1000.slice"));
}

/// Paths of 0 to 4 components from a small alphabet, so that one component
/// is often a prefix of another (`a`, `ab`): the boundary case.
fn components() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[ab.]{1,3}", 0..4)
}

fn path(parts: &[String]) -> String {
    format!("/{}", parts.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A cgroup prefix matches exactly the paths whose components start
    /// with its components.
    #[test]
    fn cgroup_match_is_a_component_prefix(p in components(), q in components()) {
        let (prefix, target) = (path(&p), path(&q));
        prop_assert_eq!(cgroup_matches(&prefix, &target), q.starts_with(&p),
            "{} vs {}", prefix, target);
    }

    /// A valid prefix is its own normal form, matches itself, and a path
    /// that differs only in repeated or trailing slashes normalizes to it.
    #[test]
    fn cgroup_prefixes_normalize(p in proptest::collection::vec("[a-z][a-z.]{0,4}", 0..4),
                                 extra in 1usize..3) {
        let normal = path(&p);
        prop_assert_eq!(cgroup_prefix(&normal), Ok(normal.clone()));
        prop_assert!(cgroup_matches(&normal, &normal));
        let sep = "/".repeat(extra);
        let sloppy = format!("{sep}{}{sep}", p.join(&sep));
        prop_assert_eq!(cgroup_prefix(&sloppy), Ok(normal));
    }

    /// Any leading run of an id, in any case, matches it; a prefix that
    /// differs in any digit does not.
    #[test]
    fn container_match_is_a_case_blind_prefix(id in "[0-9a-f]{64}", len in 1usize..=64,
                                              upper: bool, flip in 0usize..64) {
        let head = &id[..len];
        let prefix = if upper { head.to_ascii_uppercase() } else { head.to_owned() };
        prop_assert_eq!(container_prefix(&prefix), Ok(prefix.clone()));
        prop_assert!(container_matches(&prefix, &id));
        let at = flip % len;
        let mut other = head.as_bytes().to_vec();
        other[at] = if other[at] == b'0' { b'1' } else { b'0' };
        let other = String::from_utf8(other).unwrap();
        prop_assert!(!container_matches(&other, &id));
    }
}
