//! Containers named by their cgroup path: docker, containerd, CRI-O,
//! podman, systemd-nspawn and Kubernetes pods. The innermost container in
//! the path wins; a path no runtime is recognised in gives `None` and stays
//! the label.

use std::fmt;

use serde::Serialize;

/// Who made the container, as its cgroup path tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// `docker-<id>.scope`, `/docker/<id>`.
    Docker,
    /// `cri-containerd-<id>.scope`.
    Containerd,
    /// `crio-<id>.scope` (not `crio-conmon-<id>.scope`, the monitor).
    Crio,
    /// `libpod-<id>.scope` (not `libpod-conmon-<id>.scope`, the monitor).
    Podman,
    /// `systemd-nspawn@<name>.service`, `/machine.slice/machine-<name>.scope`.
    Nspawn,
    /// A bare id under a Kubernetes pod (`/kubepods/…/pod<uid>/<id>`, the
    /// cgroupfs driver), which does not name the runtime: containerd, or
    /// dockershim before Kubernetes 1.24.
    Cri,
}

impl Runtime {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Nspawn => "nspawn",
            Runtime::Cri => "cri",
        }
    }
}

/// A container found in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Container {
    pub runtime: Runtime,
    /// 64 hex digits, or the machine name for systemd-nspawn.
    pub id: String,
    /// The Kubernetes pod's UID, with dashes, when the path is under
    /// `kubepods`.
    pub pod_uid: Option<String>,
}

impl Container {
    /// The innermost container named in `path`, if any.
    #[must_use]
    pub fn from_cgroup_path(path: &str) -> Option<Container> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // A pod counts only below a `kubepods` component.
        let pod = parts
            .iter()
            .position(|p| p.starts_with("kubepods"))
            .and_then(|kube| {
                (kube..parts.len()).find_map(|i| pod_uid(parts[i]).map(|uid| (i, uid)))
            });
        let (at, runtime, id) = parts.iter().enumerate().rev().find_map(|(i, part)| {
            let parent = i.checked_sub(1).and_then(|p| parts.get(p)).copied();
            let in_pod = pod.as_ref().is_some_and(|(at, _)| *at < i);
            recognise(part, parent, in_pod).map(|(r, id)| (i, r, id))
        })?;
        let pod_uid = pod.filter(|(p, _)| *p < at).map(|(_, uid)| uid);
        Some(Container {
            runtime,
            id,
            pod_uid,
        })
    }

    /// The id for text output: its first 12 characters, as docker prints
    /// them; a machine name whole.
    #[must_use]
    pub fn short_id(&self) -> &str {
        match self.runtime {
            Runtime::Nspawn => &self.id,
            _ => short_id(&self.id),
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.runtime.name(), self.short_id())
    }
}

/// The first 12 characters of `id` (fewer when it is shorter).
#[must_use]
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(at, _)| &id[..at])
}

/// The container one path component names, given its parent component and
/// whether a pod component is above it.
fn recognise(part: &str, parent: Option<&str>, in_pod: bool) -> Option<(Runtime, String)> {
    let unit = part.strip_suffix(".scope").unwrap_or(part);
    let prefixed = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in prefixed {
        // `crio-conmon-<id>` and `libpod-conmon-<id>` fail the hex check.
        if let Some(id) = unit.strip_prefix(prefix).filter(|id| is_id(id)) {
            return Some((runtime, id.to_owned()));
        }
    }
    if is_id(part) {
        if parent == Some("docker") {
            return Some((Runtime::Docker, part.to_owned()));
        }
        if in_pod {
            return Some((Runtime::Cri, part.to_owned()));
        }
    }
    if let Some(name) = part
        .strip_prefix("systemd-nspawn@")
        .and_then(|rest| rest.strip_suffix(".service"))
        .filter(|n| !n.is_empty())
    {
        return Some((Runtime::Nspawn, unescape_unit(name)));
    }
    if parent == Some("machine.slice")
        && let Some(name) = part
            .strip_prefix("machine-")
            .and_then(|rest| rest.strip_suffix(".scope"))
            .filter(|n| !n.is_empty())
    {
        return Some((Runtime::Nspawn, unescape_unit(name)));
    }
    None
}

/// 64 hex digits, as docker, containerd, CRI-O and podman name containers.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID in `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<class>]-pod<uid_with_underscores>.slice` (systemd driver),
/// with dashes. A UID is hex digits and separators (static pods have 32
/// hex digits and none).
fn pod_uid(part: &str) -> Option<String> {
    let uid = match part.strip_suffix(".slice") {
        Some(unit) if unit.starts_with("kubepods") => unit.rsplit_once("-pod")?.1,
        Some(_) => return None,
        None => part.strip_prefix("pod")?,
    };
    let ok = (1..=64).contains(&uid.len())
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| uid.replace('_', "-"))
}

/// Undo systemd's unit-name escaping (`\x2d` for `-`) of printable ASCII;
/// anything else stays as written.
fn unescape_unit(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let decoded = tail
            .get(..2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(|b| b.is_ascii_graphic() || *b == b' ');
        if let Some(b) = decoded {
            out.push(char::from(b));
            rest = &tail[2..];
        } else {
            out.push_str("\\x");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
