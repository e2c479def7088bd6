//! A socket owner's cgroup and in-namespace pid, from `/proc/<pid>/cgroup`
//! and `/proc/<pid>/status`: the fallback for runtimes that use only cgroup
//! v1 hierarchies, where the v2 id is the root's.

use crate::model::container::Container;

/// The hierarchy a cgroup path was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// The `0::` line.
    V2,
    /// A v1 line: its controllers (`cpu,cpuacct`) or name (`name=systemd`).
    V1(String),
}

/// The most telling cgroup of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerCgroup {
    pub hierarchy: Hierarchy,
    pub path: String,
}

/// The most specific cgroup in `/proc/<pid>/cgroup` text: the v2 line when
/// it is not the root; else, among v1 lines that are not the root, one that
/// names a container, then the deepest, then by hierarchy (`name=systemd`,
/// `pids`, `memory`, `cpu…`, the rest); else the root. `None` when no line
/// parses.
#[must_use]
pub fn owner_cgroup(text: &str) -> Option<OwnerCgroup> {
    let lines: Vec<OwnerCgroup> = text.lines().filter_map(line).collect();
    let v2 = lines.iter().find(|c| c.hierarchy == Hierarchy::V2);
    if let Some(c) = v2.filter(|c| c.path != "/") {
        return Some(c.clone());
    }
    let best_v1 = lines
        .iter()
        .filter(|c| c.path != "/" && c.hierarchy != Hierarchy::V2)
        .max_by_key(|c| {
            let names_container = Container::from_cgroup_path(&c.path).is_some();
            let depth = c.path.split('/').filter(|p| !p.is_empty()).count();
            (names_container, depth, rank(&c.hierarchy))
        });
    best_v1.or(v2).or(lines.first()).cloned()
}

/// `hierarchy-id:controllers:path`; v2's is `0::path`, with ` (deleted)`
/// after the path of a removed cgroup.
fn line(l: &str) -> Option<OwnerCgroup> {
    let mut fields = l.splitn(3, ':');
    let id: u32 = fields.next()?.parse().ok()?;
    let controllers = fields.next()?;
    let path = fields.next()?;
    if !path.starts_with('/') {
        return None;
    }
    let hierarchy = if id == 0 && controllers.is_empty() {
        Hierarchy::V2
    } else {
        Hierarchy::V1(controllers.to_owned())
    };
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    Some(OwnerCgroup {
        hierarchy,
        path: path.to_owned(),
    })
}

/// Ties between v1 paths of one depth: the hierarchies container runtimes
/// and systemd always populate rank first.
fn rank(h: &Hierarchy) -> usize {
    const ORDER: [&str; 4] = ["cpu", "memory", "pids", "name=systemd"];
    let Hierarchy::V1(c) = h else { return 0 };
    c.split(',')
        .map(|x| if x == "cpuacct" { "cpu" } else { x })
        .filter_map(|x| ORDER.iter().position(|o| *o == x))
        .max()
        .map_or(0, |p| p + 1)
}

/// The innermost pid namespace's pid in `/proc/<pid>/status` text: the last
/// number of its `NSpid:` line (the first is the pid tcptrace sees). `None`
/// on kernels without the line (before 4.1) or when it does not parse.
#[must_use]
pub fn nspid(status: &str) -> Option<u32> {
    let rest = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    rest.split_whitespace().last()?.parse().ok()
}

/// [`owner_cgroup`] of a live process; `None` when it has exited.
#[must_use]
pub fn owner_cgroup_of(pid: u32) -> Option<OwnerCgroup> {
    owner_cgroup(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// [`nspid`] of a live process; `None` when it has exited.
#[must_use]
pub fn nspid_of(pid: u32) -> Option<u32> {
    nspid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[cfg(test)]
mod tests;
