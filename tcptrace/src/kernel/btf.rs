//! Member offsets of the kernel's own structs, read from its BTF
//! (`/sys/kernel/btf/vmlinux`): the chain from a `struct sock *` to its
//! network namespace's inode number, `sk->__sk_common.skc_net.net->ns.inum`,
//! and from a task to its namespace, `task->nsproxy->net_ns`.
//!
//! Tracepoints hand the eBPF side untyped pointers, so it cannot use CO-RE;
//! these offsets are read here at start-up, as the tracepoint field offsets
//! are read from tracefs.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};
use thiserror::Error;

/// Where the running kernel exposes its BTF (`CONFIG_DEBUG_INFO_BTF`).
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// How many typedefs, modifiers and nested anonymous members are followed
/// before the BTF is taken as malformed (a cycle).
const MAX_DEPTH: usize = 32;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("{} is missing (a kernel without CONFIG_DEBUG_INFO_BTF)", path.display())]
    Missing { path: PathBuf },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed BTF: {0}")]
    Parse(String),
    #[error("BTF has no {0}")]
    TypeNotFound(String),
    #[error("BTF's {ty} has no member {member:?}")]
    MemberNotFound { ty: String, member: String },
    #[error("BTF's {ty}.{member} is not {expected}")]
    Unexpected {
        ty: String,
        member: String,
        expected: &'static str,
    },
}

/// Where the network namespace's inode number is, one pointer away from a
/// `struct sock`: `*(sk + skc_net + net_ptr) + net_ns + ns_inum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsOffsets {
    /// `skc_net` (a `possible_net_t`) in `struct sock`: its offset in
    /// `struct sock_common` plus that of `__sk_common` (0 on every kernel).
    pub skc_net: u32,
    /// The `struct net *` named `net` in `possible_net_t`.
    pub net_ptr: u32,
    /// `ns` (a `struct ns_common`) in `struct net`.
    pub net_ns: u32,
    /// `inum` in `struct ns_common`.
    pub ns_inum: u32,
    /// The size in bytes of `inum` (an `unsigned int`).
    pub inum_size: u32,
}

/// Where a task's `struct net *` is: `*(*(task + task_nsproxy) +
/// nsproxy_net)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `nsproxy` (a pointer) in `struct task_struct`.
    pub task_nsproxy: u32,
    /// `net_ns` (a pointer) in `struct nsproxy`.
    pub nsproxy_net: u32,
}

/// Everything read from one parse of the BTF: the socket chain, and the
/// task chain, which failed syscalls' records need and the rest can do
/// without.
#[derive(Debug)]
pub struct KernelOffsets {
    pub netns: NetnsOffsets,
    pub task: Result<TaskOffsets, BtfError>,
}

/// The offsets from the running kernel's BTF.
pub fn netns_offsets() -> Result<NetnsOffsets, BtfError> {
    netns_offsets_at(Path::new(VMLINUX))
}

/// Both chains from the BTF file at `path`. The parsed BTF (the kernel's
/// every type: some 50 MiB of small allocations) is dropped before this
/// returns, and its pages given back to the kernel.
pub fn kernel_offsets_at(path: &Path) -> Result<KernelOffsets, BtfError> {
    let offsets = (|| {
        let bytes = read_btf(path)?;
        let btf = Btf::parse(&bytes)?;
        Ok(KernelOffsets {
            netns: netns_offsets_in(&btf)?,
            task: task_offsets_in(&btf),
        })
    })();
    release_freed_heap();
    offsets
}

/// glibc keeps freed memory for later allocations; after the BTF is
/// dropped, that is most of the heap, held for the whole run of an
/// always-on tracer. `malloc_trim` returns it.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no
    // pointer and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The offsets from the BTF file at `path`.
pub fn netns_offsets_at(path: &Path) -> Result<NetnsOffsets, BtfError> {
    netns_offsets_from(&read_btf(path)?)
}

fn read_btf(path: &Path) -> Result<Vec<u8>, BtfError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => BtfError::Missing {
            path: path.to_path_buf(),
        },
        _ => BtfError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The offsets from raw BTF bytes (the format of `/sys/kernel/btf/vmlinux`).
pub fn netns_offsets_from(bytes: &[u8]) -> Result<NetnsOffsets, BtfError> {
    netns_offsets_in(&Btf::parse(bytes)?)
}

/// The task chain from raw BTF bytes.
pub fn task_offsets_from(bytes: &[u8]) -> Result<TaskOffsets, BtfError> {
    task_offsets_in(&Btf::parse(bytes)?)
}

fn task_offsets_in(btf: &Btf) -> Result<TaskOffsets, BtfError> {
    let task = btf.struct_named("task_struct")?;
    let nsproxy = btf.member(task, "struct task_struct", "nsproxy")?;
    if !matches!(btf.resolve(nsproxy.tid), Some(TypeVariant::Ptr(_))) {
        return Err(unexpected("struct task_struct", "nsproxy", "a pointer"));
    }
    let proxy = btf.struct_named("nsproxy")?;
    let net = btf.member(proxy, "struct nsproxy", "net_ns")?;
    if !matches!(btf.resolve(net.tid), Some(TypeVariant::Ptr(_))) {
        return Err(unexpected("struct nsproxy", "net_ns", "a pointer"));
    }
    Ok(TaskOffsets {
        task_nsproxy: nsproxy.offset,
        nsproxy_net: net.offset,
    })
}

fn netns_offsets_in(btf: &Btf) -> Result<NetnsOffsets, BtfError> {
    let sock = btf.struct_named("sock")?;
    let common = btf.member(sock, "struct sock", "__sk_common")?;
    let sock_common = btf.struct_named("sock_common")?;
    let skc_net = btf.member(sock_common, "struct sock_common", "skc_net")?;
    let skc_net_in_sock = common
        .offset
        .checked_add(skc_net.offset)
        .ok_or_else(|| unexpected("struct sock", "__sk_common", "within 4 GiB"))?;
    if !matches!(
        btf.resolve(skc_net.tid),
        Some(TypeVariant::Struct(_) | TypeVariant::Union(_))
    ) {
        return Err(unexpected("struct sock_common", "skc_net", "a struct"));
    }
    let net_ptr = btf.member(skc_net.tid, "possible_net_t", "net")?;
    if !matches!(btf.resolve(net_ptr.tid), Some(TypeVariant::Ptr(_))) {
        return Err(unexpected("possible_net_t", "net", "a pointer"));
    }
    let net = btf.struct_named("net")?;
    let ns = btf.member(net, "struct net", "ns")?;
    let ns_type = match btf.resolve(ns.tid) {
        Some(TypeVariant::Struct(s)) => s.name().clone(),
        _ => None,
    };
    if ns_type.as_deref() != Some("ns_common") {
        return Err(unexpected("struct net", "ns", "a struct ns_common"));
    }
    let ns_common = btf.struct_named("ns_common")?;
    let inum = btf.member(ns_common, "struct ns_common", "inum")?;
    let inum_size = match btf.resolve(inum.tid) {
        Some(TypeVariant::Int(int)) => u32::try_from(*int.size()).ok(),
        _ => None,
    }
    .ok_or_else(|| unexpected("struct ns_common", "inum", "an integer"))?;
    Ok(NetnsOffsets {
        skc_net: skc_net_in_sock,
        net_ptr: net_ptr.offset,
        net_ns: ns.offset,
        ns_inum: inum.offset,
        inum_size,
    })
}

fn unexpected(ty: &str, member: &str, expected: &'static str) -> BtfError {
    BtfError::Unexpected {
        ty: ty.to_owned(),
        member: member.to_owned(),
        expected,
    }
}

/// A member found by name: its byte offset in the outer type and its type.
#[derive(Clone, Copy, Debug)]
struct Found {
    offset: u32,
    tid: u32,
}

/// The bytes btfparse reads through its `Readable` trait.
struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buffer.len())?))
            .ok_or_else(|| {
                btfparse::Error::new(btfparse::ErrorKind::EOF, "read past the end of the BTF")
            })?;
        buffer.copy_from_slice(src);
        Ok(())
    }
}

/// Parsed BTF and the lookups the offsets need.
struct Btf(TypeInformation);

impl Btf {
    fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        TypeInformation::new(&Bytes(bytes))
            .map(Self)
            .map_err(|e| BtfError::Parse(format!("{:?}: {}", e.kind(), e.message())))
    }

    /// The id of the struct named `name` (not a typedef or forward
    /// declaration of that name).
    fn struct_named(&self, name: &str) -> Result<u32, BtfError> {
        self.0
            .get()
            .iter()
            .find(|(_, t)| matches!(t, TypeVariant::Struct(s) if s.name().as_deref() == Some(name)))
            .map(|(&tid, _)| tid)
            .ok_or_else(|| BtfError::TypeNotFound(format!("struct {name}")))
    }

    /// The type `tid` names once typedefs and modifiers are followed.
    fn resolve(&self, mut tid: u32) -> Option<&TypeVariant> {
        for _ in 0..MAX_DEPTH {
            match self.0.get().get(&tid)? {
                TypeVariant::Typedef(t) => tid = *t.tid(),
                TypeVariant::Const(t) => tid = *t.tid(),
                TypeVariant::Volatile(t) => tid = *t.tid(),
                TypeVariant::Restrict(t) => tid = *t.tid(),
                TypeVariant::TypeTag(t) => tid = *t.tid(),
                other => return Some(other),
            }
        }
        None
    }

    /// Member `name` of the struct or union `tid`, found directly or inside
    /// its anonymous struct and union members, with their offsets added.
    /// `ty` names the outer type in errors.
    fn member(&self, tid: u32, ty: &str, name: &str) -> Result<Found, BtfError> {
        match self.find(tid, name, 0) {
            Lookup::Found(found) => Ok(found),
            Lookup::Bitfield => Err(unexpected(ty, name, "byte-aligned (it is a bitfield)")),
            Lookup::Absent => Err(BtfError::MemberNotFound {
                ty: ty.to_owned(),
                member: name.to_owned(),
            }),
        }
    }

    fn find(&self, tid: u32, name: &str, depth: usize) -> Lookup {
        let members = match self.resolve(tid) {
            Some(TypeVariant::Struct(s)) => s.member_list(),
            Some(TypeVariant::Union(u)) => u.member_list(),
            _ => return Lookup::Absent,
        };
        for m in members {
            let offset = match m.offset() {
                Offset::ByteOffset(o) => Some(o),
                Offset::BitOffsetAndSize(..) => None,
            };
            match (m.name().as_deref(), offset) {
                (Some(n), Some(offset)) if n == name => {
                    return Lookup::Found(Found {
                        offset,
                        tid: m.tid(),
                    });
                }
                (Some(n), None) if n == name => return Lookup::Bitfield,
                (None, Some(outer)) if depth < MAX_DEPTH => {
                    match self.find(m.tid(), name, depth + 1) {
                        Lookup::Found(inner) => {
                            return match outer.checked_add(inner.offset) {
                                Some(offset) => Lookup::Found(Found { offset, ..inner }),
                                None => Lookup::Absent,
                            };
                        }
                        Lookup::Bitfield => return Lookup::Bitfield,
                        Lookup::Absent => {}
                    }
                }
                _ => {}
            }
        }
        Lookup::Absent
    }
}

/// What a search for a member by name found.
enum Lookup {
    Found(Found),
    /// A member of that name that is a bitfield, which has no byte offset.
    Bitfield,
    Absent,
}

#[cfg(test)]
mod tests;
