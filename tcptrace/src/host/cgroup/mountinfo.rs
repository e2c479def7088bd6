//! Where cgroup v2 is mounted, from `/proc/self/mountinfo`.

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, path::PathBuf};

/// The mount point of the cgroup2 filesystem in `mountinfo` text (the
/// format of `/proc/<pid>/mountinfo`): the first whose root is `/`, else the
/// first. `None` when there is none or no line parses.
#[must_use]
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    let mounts: Vec<(&str, &str)> = mountinfo.lines().filter_map(cgroup2_line).collect();
    let (_, point) = mounts
        .iter()
        .find(|(root, _)| *root == "/")
        .or_else(|| mounts.first())?;
    Some(PathBuf::from(unescape(point)))
}

/// (root, mount point) of a cgroup2 line: `id parent maj:min root point
/// options [optional fields] - fstype source super-options`.
fn cgroup2_line(line: &str) -> Option<(&str, &str)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let dash = fields.iter().position(|f| *f == "-")?;
    if dash < 6 || fields.get(dash + 1) != Some(&"cgroup2") {
        return None;
    }
    Some((fields[3], fields[4]))
}

/// Undo the kernel's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if let Some(b) = code {
            out.push(b);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: v1 hierarchies and a v2 one beside them.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_v2_mount_beside_v1_ones() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn optional_fields_escapes_and_roots() {
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // A bind mount of a sub-tree comes after the whole tree.
        let both = "50 1 0:26 /kubepods /mnt/sub rw - cgroup2 cgroup2 rw\n\
                    51 1 0:26 / /mnt/my\\040cg\\134x rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount(both), Some(PathBuf::from("/mnt/my cg\\x")));
        let only_sub = "50 1 0:26 /kubepods /mnt/sub rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount(only_sub), Some(PathBuf::from("/mnt/sub")));
        // A bad escape stays as written.
        assert_eq!(unescape("a\\9x\\04"), OsString::from("a\\9x\\04"));
    }

    #[test]
    fn no_v2_mount_is_none() {
        assert_eq!(cgroup2_mount(""), None);
        assert_eq!(cgroup2_mount(&HYBRID.replace("cgroup2", "cgroup")), None);
        // A path named cgroup2 is not the filesystem type.
        assert_eq!(
            cgroup2_mount("1 2 0:1 / /cgroup2 rw - ext4 cgroup2 rw"),
            None
        );
        assert_eq!(cgroup2_mount("1 2 - cgroup2"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// Any text parses without panicking; a cgroup2 line anywhere is found.
        #[test]
        fn any_text(noise in "\\PC{0,200}", lines in proptest::collection::vec("[ -~]{0,60}", 0..6)) {
            let _ = cgroup2_mount(&noise);
            let mut text = lines.join("\n");
            let _ = cgroup2_mount(&text);
            text.push_str("\n9 1 0:2 / /cg rw - cgroup2 cgroup2 rw\n");
            proptest::prop_assert!(cgroup2_mount(&text).is_some());
        }
    }
}
