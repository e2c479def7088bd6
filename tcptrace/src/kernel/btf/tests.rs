//! The offsets on this machine's BTF, and on small BTF built by hand
//! (`Builder`) that hides members in anonymous structs and unions, behind
//! typedefs and modifiers, or leaves them out.

use proptest::prelude::*;

use super::*;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;

/// Raw BTF as in the kernel's Documentation/bpf/btf.rst: a 24-byte header,
/// the type section, then the string section (which starts with "").
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

/// A struct or union member: name ("" for anonymous), type, bit offset and
/// bitfield size (0 for a plain member).
type M<'a> = (&'a str, u32, u32, u32);

impl Builder {
    fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = u32::try_from(self.strings.len()).unwrap();
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn ty(&mut self, name: &str, kind: u32, vlen: usize, flag: bool, size_or_type: u32) -> u32 {
        let name = self.str(name);
        let info = u32::from(flag) << 31 | kind << 24 | u32::try_from(vlen).unwrap();
        self.words(&[name, info, size_or_type]);
        self.next_id += 1;
        self.next_id - 1
    }

    fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.ty(name, KIND_INT, 0, false, size);
        self.words(&[size * 8]);
        id
    }

    fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[M]) -> u32 {
        let bitfields = members.iter().any(|m| m.3 != 0);
        let id = self.ty(name, kind, members.len(), bitfields, size);
        for &(name, tid, bit_offset, bits) in members {
            let name = self.str(name);
            self.words(&[name, tid, bits << 24 | bit_offset]);
        }
        id
    }

    fn bytes(self) -> Vec<u8> {
        let type_len = u32::try_from(self.types.len()).unwrap();
        let str_len = u32::try_from(self.strings.len()).unwrap();
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for w in [24, 0, type_len, type_len, str_len] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend(self.types);
        out.extend(self.strings);
        out
    }
}

/// What to leave out of, or change in, the kernel-like BTF.
#[derive(Clone, Copy, Default)]
struct Kernel {
    /// `struct net` without `ns`, as `CONFIG_NET_NS=n`-like BTF.
    no_ns: bool,
    /// An empty `possible_net_t`, as `CONFIG_NET_NS=n` really has.
    no_net: bool,
    /// `inum` as a bitfield.
    bitfield_inum: bool,
    /// Where `__sk_common` is in `struct sock` (0 in every kernel).
    sk_common_at: u32,
}

/// `sock`, `sock_common`, `possible_net_t`, `net` and `ns_common` as on
/// this kernel, with `ns` inside an anonymous struct inside an anonymous
/// union of `struct net` (128 + 0 + 24 = 152), bitfields before `skc_net`,
/// and modifiers.
fn kernel_btf(k: Kernel) -> Vec<u8> {
    let mut b = Builder::new();
    let uint = b.int("unsigned int", 4);
    let u32_t = b.ty("u32", KIND_TYPEDEF, 0, false, uint);
    let inum_t = b.ty("", KIND_CONST, 0, false, u32_t);
    let inum = if k.bitfield_inum {
        ("inum", inum_t, 24 * 8, 32)
    } else {
        ("inum", inum_t, 24 * 8, 0)
    };
    let ns_common = b.aggregate(KIND_STRUCT, "ns_common", 32, &[("count", uint, 0, 0), inum]);
    b.ty("net", KIND_FWD, 0, false, 0);
    let ns = if k.no_ns { "ns_gone" } else { "ns" };
    let anon_struct = b.aggregate(
        KIND_STRUCT,
        "",
        56,
        &[("pad", uint, 0, 0), (ns, ns_common, 24 * 8, 0)],
    );
    let anon_union = b.aggregate(
        KIND_UNION,
        "",
        56,
        &[("dummy", uint, 0, 0), ("", anon_struct, 0, 0)],
    );
    let net = b.aggregate(
        KIND_STRUCT,
        "net",
        200,
        &[("passive", uint, 0, 0), ("", anon_union, 128 * 8, 0)],
    );
    let net_ptr = b.ty("", KIND_PTR, 0, false, net);
    let members: &[M] = if k.no_net {
        &[]
    } else {
        &[("net", net_ptr, 0, 0)]
    };
    let possible = b.aggregate(KIND_STRUCT, "", 8, members);
    let possible_t = b.ty("possible_net_t", KIND_TYPEDEF, 0, false, possible);
    let skc_net_t = b.ty("", KIND_VOLATILE, 0, false, possible_t);
    let sock_common = b.aggregate(
        KIND_STRUCT,
        "sock_common",
        136,
        &[
            ("skc_hash", uint, 0, 0),
            ("skc_reuse", uint, 32, 4),
            ("", uint, 36, 4),
            ("skc_net", skc_net_t, 48 * 8, 0),
        ],
    );
    b.aggregate(
        KIND_STRUCT,
        "sock",
        k.sk_common_at + 200,
        &[("__sk_common", sock_common, k.sk_common_at * 8, 0)],
    );
    b.bytes()
}

const THIS_KERNEL: NetnsOffsets = NetnsOffsets {
    skc_net: 48,
    net_ptr: 0,
    net_ns: 152,
    ns_inum: 24,
    inum_size: 4,
};

#[test]
fn this_machine_has_the_known_offsets() {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match netns_offsets() {
        Ok(o) if release.starts_with("6.18") => assert_eq!(o, THIS_KERNEL),
        Ok(o) => eprintln!("kernel {release:?} is not 6.18: offsets {o:?} resolved, not compared"),
        Err(e @ BtfError::Missing { .. }) => {
            eprintln!("!!! NOT CHECKED: {e}; the offsets of a real kernel were not compared");
        }
        Err(e) => panic!("{VMLINUX}: {e}"),
    }
}

#[test]
fn a_missing_file_is_the_missing_error() {
    let path = std::env::temp_dir().join(format!("tcptrace-no-btf-{}", std::process::id()));
    let err = netns_offsets_at(&path).unwrap_err();
    assert!(
        matches!(&err, BtfError::Missing { path: p } if *p == path),
        "{err:?}"
    );
}

#[test]
fn a_directory_is_a_read_error() {
    let err = netns_offsets_at(&std::env::temp_dir()).unwrap_err();
    assert!(matches!(err, BtfError::Io { .. }), "{err:?}");
}

#[test]
fn members_are_found_through_anonymous_members_typedefs_and_modifiers() {
    assert_eq!(
        netns_offsets_from(&kernel_btf(Kernel::default())).unwrap(),
        THIS_KERNEL
    );
}

#[test]
fn skc_net_is_counted_from_struct_sock() {
    let moved = Kernel {
        sk_common_at: 8,
        ..Kernel::default()
    };
    let o = netns_offsets_from(&kernel_btf(moved)).unwrap();
    assert_eq!(o.skc_net, 56, "{o:?}");
}

#[test]
fn net_without_ns_is_a_missing_member() {
    let no_ns = Kernel {
        no_ns: true,
        ..Kernel::default()
    };
    let err = netns_offsets_from(&kernel_btf(no_ns)).unwrap_err();
    assert!(
        matches!(&err, BtfError::MemberNotFound { ty, member } if ty == "struct net" && member == "ns"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "BTF's struct net has no member \"ns\"");
}

#[test]
fn an_empty_possible_net_t_is_a_missing_member() {
    let no_net = Kernel {
        no_net: true,
        ..Kernel::default()
    };
    let err = netns_offsets_from(&kernel_btf(no_net)).unwrap_err();
    assert!(
        matches!(&err, BtfError::MemberNotFound { ty, member } if ty == "possible_net_t" && member == "net"),
        "{err:?}"
    );
}

#[test]
fn a_bitfield_member_is_not_an_offset() {
    let bitfield = Kernel {
        bitfield_inum: true,
        ..Kernel::default()
    };
    let err = netns_offsets_from(&kernel_btf(bitfield)).unwrap_err();
    assert!(
        matches!(&err, BtfError::Unexpected { member, .. } if member == "inum"),
        "{err:?}"
    );
}

#[test]
fn a_missing_struct_is_named() {
    let mut b = Builder::new();
    b.int("unsigned int", 4);
    let err = netns_offsets_from(&b.bytes()).unwrap_err();
    assert!(
        matches!(&err, BtfError::TypeNotFound(t) if t == "struct sock"),
        "{err:?}"
    );
}

#[test]
fn a_typedef_cycle_is_not_followed_forever() {
    let mut b = Builder::new();
    let cycle = b.ty("loop_t", KIND_TYPEDEF, 0, false, 2);
    b.ty("", KIND_CONST, 0, false, cycle);
    let common = b.aggregate(KIND_STRUCT, "sock_common", 8, &[("skc_net", cycle, 0, 0)]);
    b.aggregate(KIND_STRUCT, "sock", 8, &[("__sk_common", common, 0, 0)]);
    let err = netns_offsets_from(&b.bytes()).unwrap_err();
    assert!(
        matches!(&err, BtfError::Unexpected { member, .. } if member == "skc_net"),
        "{err:?}"
    );
}

#[test]
fn an_empty_file_is_a_parse_error() {
    let err = netns_offsets_from(&[]).unwrap_err();
    assert!(matches!(err, BtfError::Parse(_)), "{err:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbage_is_a_parse_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Without BTF's magic number nothing else is read.
        prop_assume!(bytes.get(..2) != Some(&[0x9f, 0xeb][..]));
        let err = netns_offsets_from(&bytes).unwrap_err();
        prop_assert!(matches!(err, BtfError::Parse(_)), "{:?}", err);
    }

    #[test]
    fn damaged_btf_is_an_error_or_offsets(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = kernel_btf(Kernel::default());
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        // Any answer will do, as long as it is one rather than a panic.
        let _ = netns_offsets_from(&bytes);
    }
}

#[test]
fn this_machine_has_the_task_chain() {
    match kernel_offsets_at(Path::new(VMLINUX)) {
        Ok(k) => {
            let t = k.task.expect("task_struct.nsproxy and nsproxy.net_ns");
            eprintln!("task offsets on this kernel: {t:?}");
            assert!(t.task_nsproxy > 0 && t.nsproxy_net > 0, "{t:?}");
        }
        Err(e @ BtfError::Missing { .. }) => {
            eprintln!("!!! NOT CHECKED: {e}; the task chain of a real kernel was not read");
        }
        Err(e) => panic!("{VMLINUX}: {e}"),
    }
}
