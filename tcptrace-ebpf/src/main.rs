//! tcptrace's kernel side. Tracepoint programs only: this kernel family has no
//! kprobes, and refuses fentry programs.
//!
//! - `inet_sock_set_state`: every TCP state change; keeps the per-socket entry
//!   (state, entry time, owner) and emits one record with the dwell.
//! - `tcp_send_reset` / `tcp_receive_reset`: every RST, with its owner.
//! - `sock_recv_length` / `sock_send_length`: the owner's own I/O, the only
//!   reliable owner for sockets that were accepted (their first transitions run
//!   in softirq).
//! - `sys_exit_bind` / `sys_exit_connect` (`--timewait` only): a `bind()` that
//!   failed with EADDRINUSE, a `connect()` that failed with EADDRNOTAVAIL, with
//!   the address the caller asked for.
//!
//! Field offsets come from tracefs at start-up through the `CONFIG` global.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    btf_maps::{ArrayOfMaps, RingBuf as CpuRing},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            self, bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_get_stack,
            bpf_ktime_get_ns, bpf_task_pt_regs,
        },
    },
    macros::{btf_map, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext as _},
};
use tcptrace_common::{
    AF_INET, AF_INET6, Addrs, Config, Counter, EADDRINUSE, EADDRNOTAVAIL, FailureEvent, Header,
    LeanSock, NUM_COUNTERS, Owner, PaddedStateEvent, RST_RECEIVED, RST_SENT, RecordKind,
    ResetEvent, STACK_DEPTH, SYSCALL_BIND, SYSCALL_CONNECT, SockInfo, StackRef, StateLine,
    TcpState,
    comms::{self, CommSlot},
    config::{
        DESTROY_SKADDR_STANDARD, DIRECT_DESTROY, DIRECT_SET_STATE, DIRECT_SOCK_LENGTH,
        SET_STATE_GENERIC, SET_STATE_VARIANTS, SetStateOffsets, SetStateShape, SockLengthOffsets,
    },
    cpulog,
    table::{self, LeanBucket, LeanSlot},
    track::{
        OwnerSource, apply_lean_transition, apply_transition, forget_life, io_needs_owner_update,
        is_owner_transition,
    },
};
use tcptrace_common::{DWELL_UNKNOWN, HistBy, HistKey, hist};

const IPPROTO_TCP: u16 = 6;
/// `BPF_F_MMAPABLE`: an array userspace can mmap.
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Written by userspace before load (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
// SAFETY: `Config` is plain integers; all-zero is a valid value.
static CONFIG: Config = unsafe { core::mem::zeroed() };

/// One [`cpulog::CpuLog`] per possible CPU for the modes that log state
/// records instead of sending them through `EVENTS` (`--timewait`);
/// userspace sizes it, one entry in the other modes, and reads it through a
/// shared mapping.
#[map]
static CPU_LOG: Array<cpulog::CpuLog> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// One ring buffer per possible CPU for the stream's state records, which
/// a CPU writes only to its own ring: no ring lock, producer position or
/// record line shared with another CPU's transitions, as one ring for all
/// CPUs would have. Userspace sizes the outer array to the possible CPUs
/// and creates the rings, of any size (the kernel does not compare an inner
/// ring's size with this one-page template), before it attaches the
/// programs; it drains them on a timer and merges them by time.
#[btf_map]
static STATE_RINGS: ArrayOfMaps<CpuRing<StateLine, 4096>, 1> = ArrayOfMaps::new();

/// Reset and failure records, and the modes' other records. Userspace
/// sizes it before load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Live TCP sockets keyed by `struct sock` address. LRU so that a flood of
/// sockets evicts the oldest instead of failing inserts; evictions are derived
/// by userspace as inserts - deletes - live entries. Userspace sets the size
/// at load (`--max-sockets`, default 131072); this one is only the object's.
#[map]
static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65_536, 0);

/// The lean alternative to `SOCKS` (`Config::lean_socks`), first part: a
/// table of two-slot buckets indexed by a hash of the socket's address
/// (`tcptrace_common::table`). Mappable, so that userspace counts its
/// sockets without a system call per slot.
#[map]
static LEAN_TABLE: Array<LeanBucket> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The lean alternative's second part: sockets whose bucket was full, 24
/// bytes each, LRU like `SOCKS`. Userspace sizes the socket store not in use
/// down to almost nothing.
#[map]
static LEAN: LruHashMap<u64, LeanSock> = LruHashMap::with_max_entries(65_536, 0);

/// The comm cache (`tcptrace_common::comms`): the comms of the threads
/// whose owner transitions `Config::noted_new_states` asks for, by thread
/// id. The lean store keeps pid and tid only; userspace looks the owner of
/// a logged record ([`cpulog`]) up here, through a shared mapping. It sizes
/// the cache down to one slot when the mode names nobody.
#[map]
static COMMS: Array<CommSlot> = Array::with_max_entries(comms::SLOTS, BPF_F_MMAPABLE);

/// Where a new socket's entry is built before its insert (per CPU: the
/// 512-byte BPF stack has no room for it).
#[map]
static NEW_SOCK: PerCpuArray<SockInfo> = PerCpuArray::with_max_entries(1, 0);

/// User stacks of first touch and EOF read (leak mode). Identical stacks
/// share one id, so the map holds code paths, not sockets.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16_384, 0);

/// The stacks `STACKS` refuses because another stack holds their bucket
/// (see `tcptrace_common::SPILLED_STACK`), keyed by a hash of their frames.
#[map]
static STACK_SPILL: HashMap<u32, [u64; STACK_DEPTH]> = HashMap::with_max_entries(4_096, 0);

/// This CPU's buffer for a stack on its way to `STACK_SPILL` (1 KiB, twice
/// the BPF stack).
#[map]
static STACK_BUF: PerCpuArray<[u64; STACK_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// Dwell histograms (`--hist`): one counter per (state, bucket, group), per
/// CPU, so high connection rates cost a map update and no ring-buffer record.
#[map]
static HIST: PerCpuHashMap<HistKey, u64> = PerCpuHashMap::with_max_entries(16_384, 0);

/// Dwell histograms by state alone (`--hist` without `--by`): one row of
/// buckets per state, the maximum last. An array index instead of two hash
/// operations per transition.
#[map]
static HIST_STATE: PerCpuArray<[u64; hist::ROW]> = PerCpuArray::with_max_entries(16, 0);

/// Transitions by `old * 16 + new`, every mode.
#[map]
static TRANSITIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(256, 0);

/// Event and loss counters, one slot per [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// Read one field of `CONFIG`. Volatile, so the compiler does not fold the
/// all-zero initialiser into the code; one field at a time, because the BPF
/// stack is 512 bytes.
macro_rules! config {
    ($($field:tt)+) => {
        // SAFETY: CONFIG is a valid, aligned static; this reads one field.
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field)+) }
    };
}

/// The family and port filters of `CONFIG`.
#[inline(always)]
fn accepts(family: u16, lport: u16, rport: u16) -> bool {
    tcptrace_common::config::accepts(
        config!(families),
        config!(port),
        config!(lport),
        config!(rport),
        family,
        lport,
        rport,
    )
}

#[inline(always)]
fn count(c: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}

/// A tracepoint record copied with one helper call into a buffer (a per-CPU
/// scratch slot, or the stack for small records). Fields are then read at the
/// offsets from `CONFIG`, bounds-checked (the verifier requires it; a layout
/// larger than `N` fails as a read error). One copy replaces a
/// `bpf_probe_read_kernel` call per field, a hook's largest cost.
struct Raw<const N: usize> {
    buf: *const u8,
}

/// Record bytes copied for `inet_sock_set_state` and `tcp_receive_reset`
/// (72 on 6.x; the slack absorbs a field more on other kernels).
const RECORD: usize = 80;
/// Record bytes copied for `sock_recv_length`/`sock_send_length` (28 on 6.x).
const IO_RECORD: usize = 32;

/// Per-CPU room for one record: the 512-byte BPF stack has none to spare in
/// `inet_sock_set_state`.
#[map]
static SCRATCH: PerCpuArray<[u8; RECORD]> = PerCpuArray::with_max_entries(1, 0);

impl<const N: usize> Raw<N> {
    /// Copy the record into `dst`.
    #[inline(always)]
    fn fill(ctx: &TracePointContext, dst: *mut [u8; N]) -> Result<Self, i64> {
        // SAFETY: copies N bytes from the tracepoint record into a buffer of
        // N bytes we own; the helper faults safely. N is far below the record
        // buffer the kernel gives tracepoint programs (PERF_MAX_TRACE_SIZE).
        #[expect(clippy::cast_possible_truncation, reason = "N is a small constant")]
        let r = unsafe {
            generated::bpf_probe_read_kernel(dst.cast(), N as u32, ctx.as_ptr().cast_const())
        };
        if r < 0 {
            Err(r)
        } else {
            Ok(Raw {
                buf: dst.cast_const().cast(),
            })
        }
    }

    #[inline(always)]
    fn get<T: Copy>(&self, offset: u32) -> Result<T, i64> {
        let o = offset as usize;
        if o > N - core::mem::size_of::<T>() {
            return Err(-1);
        }
        // SAFETY: `buf` holds N initialised bytes and `o + size_of::<T>()`
        // is within them; read_unaligned because fields sit at the kernel's
        // offsets.
        Ok(unsafe { self.buf.add(o).cast::<T>().read_unaligned() })
    }
}

impl Raw<RECORD> {
    #[inline(always)]
    fn load(ctx: &TracePointContext) -> Result<Self, i64> {
        let slot = SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
        Self::fill(ctx, slot)
    }
}

/// One field of the tracepoint record, loaded straight from the context.
/// `OFFSET` must be a multiple of `T`'s size (the verifier's rule for
/// tracepoint contexts) and a constant, so that it lands in the load
/// instruction: the verifier refuses a context pointer moved by a register.
#[inline(always)]
fn ctx_field<T: Copy, const OFFSET: usize>(ctx: &TracePointContext) -> T {
    // SAFETY: the kernel hands tracepoint programs a buffer of
    // PERF_MAX_TRACE_SIZE bytes, and the verifier checks the offset, size and
    // alignment of every context load. Used only when userspace found the
    // standard layout, so that OFFSET is this field's offset.
    unsafe { ctx.as_ptr().cast::<u8>().add(OFFSET).cast::<T>().read() }
}

/// Sixteen address bytes from two 8-byte halves (aligned context loads).
#[inline(always)]
fn v6_bytes(lo: u64, hi: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&lo.to_ne_bytes());
    a[8..].copy_from_slice(&hi.to_ne_bytes());
    a
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    // SAFETY: `offset` is a field offset of this tracepoint's record, read
    // from its tracefs `format` at start-up; bpf_probe_read_kernel checks it.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(i64::from)
}

#[inline(always)]
fn current_owner() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    Owner {
        #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid")]
        tgid: (pid_tgid >> 32) as u32,
        #[expect(clippy::cast_possible_truncation, reason = "lower half is the tid")]
        tid: pid_tgid as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// Offset of `sp` in x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h:
/// r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp).
#[cfg(bpf_target_arch = "x86_64")]
const PT_REGS_SP: usize = 19 * 8;

/// Offsets of the first three syscall arguments in x86-64 `struct pt_regs`
/// (di, si, dx: see [`PT_REGS_SP`]). The entry code saves them and nothing
/// rewrites them before the syscall returns.
#[cfg(bpf_target_arch = "x86_64")]
const PT_REGS_ARGS: [usize; 3] = [14 * 8, 13 * 8, 12 * 8];

/// The current syscall's first three arguments, from the registers saved at
/// entry; None where unreadable (or on an architecture tcptrace does not
/// know the layout of).
#[inline(always)]
fn syscall_args() -> Option<[u64; 3]> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: as in `user_sp_word`: the current task's saved registers,
        // read through a helper that faults safely.
        unsafe {
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
            if regs.is_null() {
                return None;
            }
            let mut args = [0u64; 3];
            for (a, off) in args.iter_mut().zip(PT_REGS_ARGS) {
                *a = bpf_probe_read_kernel(regs.add(off).cast::<u64>()).ok()?;
            }
            Some(args)
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        None
    }
}

/// The word at the user stack pointer saved at syscall entry. Inside a
/// frameless syscall wrapper (glibc's `recv`/`read`) it is the return address
/// into the wrapper's caller, the frame that a frame-pointer walk skips.
#[inline(always)]
fn user_sp_word() -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: bpf_get_current_task_btf returns the current task (never
        // NULL in process context) and bpf_task_pt_regs its saved user
        // registers; both reads go through probe_read helpers that fault
        // safely.
        unsafe {
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
            if regs.is_null() {
                return 0;
            }
            let Ok(sp) = bpf_probe_read_kernel(regs.add(PT_REGS_SP).cast::<u64>()) else {
                return 0;
            };
            bpf_probe_read_user(sp as *const u64).unwrap_or(0)
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        0
    }
}

/// `bpf_get_stackid` errors (negated): the stack's bucket holds another
/// stack; there is no user stack (a kernel thread).
const EEXIST: i32 = 17;
const EFAULT: i32 = 14;

/// Capture the current task's user stack: in `STACKS`, or in `STACK_SPILL`
/// when its `STACKS` bucket is taken. A kernel thread has none to capture.
#[inline(always)]
fn capture_stack(ctx: &TracePointContext, tgid: u32) -> StackRef {
    let id_plus_one = match ctx.get_stackid(&STACKS, u64::from(BPF_F_USER_STACK)) {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "ids are < max_entries"
        )]
        Ok(id) => id as u32 + 1,
        Err(e) if e == -EFAULT => return StackRef::default(),
        Err(e) if e == -EEXIST => match spill_stack(ctx) {
            Some(key) => key,
            None => {
                count(Counter::StackErrors);
                return StackRef::default();
            }
        },
        Err(_) => {
            count(Counter::StackErrors);
            return StackRef::default();
        }
    };
    StackRef {
        id_plus_one,
        tgid,
        sp_word: user_sp_word(),
    }
}

/// Copy the current user stack into `STACK_SPILL` under the key of its
/// frames' hash; the key, or None if it could not be stored. Rare (a bucket
/// collision in `STACKS`): a BPF subprogram, out of the I/O hooks' hot path.
#[inline(never)]
fn spill_stack(ctx: &TracePointContext) -> Option<u32> {
    let buf = STACK_BUF.get_ptr_mut(0)?;
    #[expect(clippy::cast_possible_truncation, reason = "1016 bytes")]
    const SIZE: u32 = core::mem::size_of::<[u64; STACK_DEPTH]>() as u32;
    // SAFETY: `buf` is this CPU's slot of SIZE bytes; the helper writes the
    // frames and zero-fills the rest.
    let n = unsafe { bpf_get_stack(ctx.as_ptr(), buf.cast(), SIZE, u64::from(BPF_F_USER_STACK)) };
    if n <= 0 {
        return None;
    }
    // SAFETY: this CPU's slot, written by the helper above.
    let key = tcptrace_common::spill_key(tcptrace_common::stack_hash(unsafe { &*buf }));
    // SAFETY: as above; the helper copies the value.
    match STACK_SPILL.insert(key, unsafe { &*buf }, BPF_NOEXIST) {
        // Already there: the same frames (the key is their hash).
        Ok(()) => Some(key),
        Err(e) if e == -EEXIST => Some(key),
        Err(_) => None,
    }
}

#[inline(always)]
fn header(kind: RecordKind, ts_ns: u64) -> Header {
    Header {
        kind: kind as u32,
        // SAFETY: a helper with no arguments and no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns,
    }
}

/// Read the address fields that `inet_sock_set_state` and `tcp_receive_reset`
/// share: separate v4 and v6 arrays, host-order ports.
#[inline(always)]
fn read_split_addrs(
    raw: &Raw<RECORD>,
    family: u16,
    sport: u16,
    dport: u16,
    off: [u32; 4],
) -> Result<Addrs, i64> {
    let [saddr, daddr, saddr_v6, daddr_v6] = off;
    let mut a = Addrs {
        family,
        sport,
        dport,
        ..Addrs::default()
    };
    if family == AF_INET {
        let s: [u8; 4] = raw.get(saddr)?;
        let d: [u8; 4] = raw.get(daddr)?;
        a.saddr[..4].copy_from_slice(&s);
        a.daddr[..4].copy_from_slice(&d);
    } else {
        a.saddr = raw.get(saddr_v6)?;
        a.daddr = raw.get(daddr_v6)?;
    }
    Ok(a)
}

/// A variant of the `inet_sock_set_state` program: the settings it was
/// compiled with ([`SetStateShape`]), or none (the generic program, which
/// reads them from `CONFIG`).
trait Variant {
    const SHAPE: Option<SetStateShape>;
    /// The program name userspace attaches for this variant.
    const NAME: &'static str;
}

/// The generic program.
struct Generic;

impl Variant for Generic {
    const SHAPE: Option<SetStateShape> = None;
    const NAME: &'static str = SET_STATE_GENERIC;
}

/// The variant compiled with `SET_STATE_VARIANTS[I]`'s shape.
struct Fixed<const I: usize>;

impl<const I: usize> Variant for Fixed<I> {
    const SHAPE: Option<SetStateShape> = Some(SET_STATE_VARIANTS[I].1);
    const NAME: &'static str = SET_STATE_VARIANTS[I].0;
}

/// One [`SetStateShape`] setting of variant `V`: a constant in a variant,
/// a `CONFIG` read in the generic program.
macro_rules! setting {
    ($v:ident, $field:ident) => {
        match $v::SHAPE {
            Some(shape) => shape.$field,
            None => config!($field),
        }
    };
}

/// The `inet_sock_set_state` program `$name`, of variant `$v`. Its name
/// must be the one userspace attaches for that variant: checked at compile
/// time.
macro_rules! set_state_program {
    ($name:ident, $v:ty) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            const _: () = assert!(tcptrace_common::config::const_str_eq(
                <$v as Variant>::NAME,
                stringify!($name),
            ));
            if try_set_state::<$v>(&ctx).is_err() {
                count(Counter::ReadErrors);
            }
            0
        }
    };
}

set_state_program!(inet_sock_set_state, Generic);
set_state_program!(inet_sock_set_state_stream, Fixed<0>);
set_state_program!(inet_sock_set_state_hist, Fixed<1>);
set_state_program!(inet_sock_set_state_timewait, Fixed<2>);
set_state_program!(inet_sock_set_state_leaks, Fixed<3>);
set_state_program!(inet_sock_set_state_combined, Fixed<4>);

/// The fixed-size fields of an `inet_sock_set_state` record.
struct SetStateHead {
    skaddr: u64,
    old: u32,
    new: u32,
    sport: u16,
    dport: u16,
    family: u16,
    protocol: u16,
}

/// An `inet_sock_set_state` record, wherever its fields are read from.
trait SetStateRecord {
    fn head(&self) -> Result<SetStateHead, i64>;
    fn addrs(&self, h: &SetStateHead) -> Result<Addrs, i64>;
}

/// The standard layout ([`SetStateOffsets::STANDARD`]), loaded straight
/// from the context: no helper call, no copy.
struct DirectSetState<'a>(&'a TracePointContext);

/// The standard `inet_sock_set_state` layout, for [`ctx_field`] offsets.
const STD: SetStateOffsets = SetStateOffsets::STANDARD;

impl SetStateRecord for DirectSetState<'_> {
    #[inline(always)]
    fn head(&self) -> Result<SetStateHead, i64> {
        let c = self.0;
        #[expect(clippy::cast_sign_loss, reason = "TCP states are 1..=12")]
        Ok(SetStateHead {
            skaddr: ctx_field::<u64, { STD.skaddr as usize }>(c),
            old: ctx_field::<i32, { STD.oldstate as usize }>(c) as u32,
            new: ctx_field::<i32, { STD.newstate as usize }>(c) as u32,
            sport: ctx_field::<u16, { STD.sport as usize }>(c),
            dport: ctx_field::<u16, { STD.dport as usize }>(c),
            family: ctx_field::<u16, { STD.family as usize }>(c),
            protocol: ctx_field::<u16, { STD.protocol as usize }>(c),
        })
    }

    #[inline(always)]
    fn addrs(&self, h: &SetStateHead) -> Result<Addrs, i64> {
        let c = self.0;
        let mut a = Addrs {
            family: h.family,
            sport: h.sport,
            dport: h.dport,
            ..Addrs::default()
        };
        if h.family == AF_INET {
            a.saddr[..4]
                .copy_from_slice(&ctx_field::<u32, { STD.saddr as usize }>(c).to_ne_bytes());
            a.daddr[..4]
                .copy_from_slice(&ctx_field::<u32, { STD.daddr as usize }>(c).to_ne_bytes());
        } else {
            a.saddr = v6_bytes(
                ctx_field::<u64, { STD.saddr_v6 as usize }>(c),
                ctx_field::<u64, { STD.saddr_v6 as usize + 8 }>(c),
            );
            a.daddr = v6_bytes(
                ctx_field::<u64, { STD.daddr_v6 as usize }>(c),
                ctx_field::<u64, { STD.daddr_v6 as usize + 8 }>(c),
            );
        }
        Ok(a)
    }
}

/// Any other layout: the record copied once, fields read at the offsets
/// tracefs gave.
struct CopiedSetState {
    raw: Raw<RECORD>,
    o: SetStateOffsets,
}

impl SetStateRecord for CopiedSetState {
    #[inline(always)]
    fn head(&self) -> Result<SetStateHead, i64> {
        let (raw, o) = (&self.raw, &self.o);
        let old: i32 = raw.get(o.oldstate)?;
        let new: i32 = raw.get(o.newstate)?;
        #[expect(clippy::cast_sign_loss, reason = "TCP states are 1..=12")]
        Ok(SetStateHead {
            skaddr: raw.get(o.skaddr)?,
            old: old as u32,
            new: new as u32,
            sport: raw.get(o.sport)?,
            dport: raw.get(o.dport)?,
            family: raw.get(o.family)?,
            protocol: raw.get(o.protocol)?,
        })
    }

    #[inline(always)]
    fn addrs(&self, h: &SetStateHead) -> Result<Addrs, i64> {
        let o = &self.o;
        read_split_addrs(
            &self.raw,
            h.family,
            h.sport,
            h.dport,
            [o.saddr, o.daddr, o.saddr_v6, o.daddr_v6],
        )
    }
}

#[inline(always)]
fn try_set_state<V: Variant>(ctx: &TracePointContext) -> Result<(), i64> {
    // CONFIG is read-only and frozen, so the verifier knows this branch's
    // outcome and drops the other path.
    if config!(direct_ctx) & DIRECT_SET_STATE != 0 {
        set_state::<V>(ctx, &DirectSetState(ctx))
    } else {
        let rec = CopiedSetState {
            raw: Raw::<RECORD>::load(ctx)?,
            o: config!(offsets.set_state),
        };
        set_state::<V>(ctx, &rec)
    }
}

#[inline(always)]
fn set_state<V: Variant>(ctx: &TracePointContext, rec: &impl SetStateRecord) -> Result<(), i64> {
    let h = rec.head()?;
    // Cheap filters first: protocol, family, ports.
    if h.protocol != IPPROTO_TCP || !accepts(h.family, h.sport, h.dport) {
        return Ok(());
    }
    let SetStateHead {
        skaddr,
        old,
        new,
        sport,
        dport,
        ..
    } = h;
    // The clock only where the mode times a dwell or emits or logs a record
    // (the mask bounds the shifts; states are 1..=12).
    let emit_old = setting!(V, emit_old_states);
    let log_old = setting!(V, log_old_states);
    let timed = setting!(V, timed_states);
    let now = if timed & ((1 << (old & 31)) | (1 << (new & 31))) != 0
        || (emit_old | log_old) & (1 << (old & 31)) != 0
    {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    let (dwell_ns, owner, owner_source) = if setting!(V, lean_socks) != 0 {
        lean_transition::<V>(skaddr, old, new, now)
    } else {
        full_transition(ctx, rec, &h, now)?
    };
    if setting!(V, sock_details) != 0
        && (old == TcpState::CloseWait as u32 || new == TcpState::CloseWait as u32)
    {
        detail_transition(rec, &h, now)?;
    }

    if let Some(slot) = TRANSITIONS.get_ptr_mut((old & 15) * 16 + (new & 15)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
    let by = setting!(V, hist_by);
    if by == HistBy::State as u32 && dwell_ns != DWELL_UNKNOWN {
        if let Some(row) = HIST_STATE.get_ptr_mut(old & 15) {
            // The mask bounds the index for the verifier (slots stop at 495,
            // below the minimum's and maximum's indices). The volatile read
            // keeps LLVM, which knows the bound, from dropping the mask.
            let slot = hist::slot(dwell_ns) as usize;
            // SAFETY: a read of a local.
            let s = unsafe { core::ptr::read_volatile(&raw const slot) } & (hist::ROW - 1);
            // SAFETY: a per-CPU row, only this CPU writes it while we run;
            // every index is within the row.
            unsafe {
                if s < hist::ROW_MIN_INV {
                    (*row)[s] += 1;
                }
                if (*row)[hist::ROW_MAX] < dwell_ns {
                    (*row)[hist::ROW_MAX] = dwell_ns;
                }
                if (*row)[hist::ROW_MIN_INV] < !dwell_ns {
                    (*row)[hist::ROW_MIN_INV] = !dwell_ns;
                }
            }
        }
        let long = config!(long_dwell_ns);
        if long != 0 && dwell_ns >= long {
            count(Counter::LongDwells);
        }
    } else if by != HistBy::Off as u32 && dwell_ns != DWELL_UNKNOWN {
        let mut key = HistKey {
            state: old,
            slot: hist::slot(dwell_ns),
            group: [0; 16],
        };
        if by == HistBy::LocalPort as u32 {
            key.group[..2].copy_from_slice(&sport.to_ne_bytes());
        } else if by == HistBy::RemotePort as u32 {
            key.group[..2].copy_from_slice(&dport.to_ne_bytes());
        } else if by == HistBy::RemoteAddr as u32 {
            key.group = rec.addrs(&h)?.daddr;
        } else if by == HistBy::Comm as u32 {
            key.group = owner.comm;
        }
        hist_add(&key, dwell_ns);
    }

    if old >= 32 {
        return Ok(());
    }
    if log_old & (1 << old) != 0 {
        log_state(now, &owner, old, new, rec.addrs(&h)?);
    }
    if emit_old & (1 << old) == 0 {
        return Ok(());
    }
    let addrs = rec.addrs(&h)?;
    // SAFETY: a helper with no arguments and no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(ring) = STATE_RINGS.get(cpu) else {
        // No ring for this CPU: cannot happen with the possible-CPU count.
        count(Counter::RingbufFull);
        return Ok(());
    };
    let stamp = |kind: RecordKind| Header {
        kind: kind as u32,
        cpu,
        ts_ns: now,
    };
    if addrs.family == AF_INET {
        emit_line(
            ring,
            stamp(RecordKind::StateLine),
            skaddr,
            dwell_ns,
            &owner,
            owner_source,
            (old, new),
            &addrs,
        );
        return Ok(());
    }
    let Some(mut slot) = ring.reserve_untyped::<PaddedStateEvent>(0) else {
        count(Counter::RingbufFull);
        return Ok(());
    };
    let padded = slot.as_mut_ptr();
    // SAFETY: `padded` points at a reserved, exclusively owned ring-buffer
    // slot of the right size; every field is written before submit.
    unsafe {
        (*padded)._pad = 0;
        let ev = &raw mut (*padded).event;
        (*ev).header = stamp(RecordKind::State);
        (*ev).skaddr = skaddr;
        (*ev).dwell_ns = dwell_ns;
        (*ev).owner = owner;
        (*ev).addrs = addrs;
        (*ev).old_state = old;
        (*ev).new_state = new;
        (*ev).owner_source = owner_source;
        (*ev)._pad = 0;
    }
    // Userspace drains the CPU rings on a timer: no wakeup, no irq_work.
    slot.submit(BPF_RB_NO_WAKEUP);
    count(Counter::StateEvents);
    Ok(())
}

/// Emit an IPv4 transition, stamped with `header`, as a [`StateLine`]: one
/// cache line of `ring`.
#[inline(always)]
fn emit_line(
    ring: &CpuRing<StateLine, 4096>,
    header: Header,
    skaddr: u64,
    dwell_ns: u64,
    owner: &Owner,
    owner_source: u32,
    transition: (u32, u32),
    a: &Addrs,
) {
    let Some(mut slot) = ring.reserve(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot
    // of the right size; every field is written before submit.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "states are 1..=12, owner sources 0..=3"
    )]
    unsafe {
        (*ev).header = header;
        (*ev).skaddr = skaddr;
        (*ev).dwell_ns = dwell_ns;
        (*ev).tgid = owner.tgid;
        (*ev).tid = owner.tid;
        (*ev).sport = a.sport;
        (*ev).dport = a.dport;
        (*ev).saddr = [a.saddr[0], a.saddr[1], a.saddr[2], a.saddr[3]];
        (*ev).daddr = [a.daddr[0], a.daddr[1], a.daddr[2], a.daddr[3]];
        (*ev).old_state = transition.0 as u8;
        (*ev).new_state = transition.1 as u8;
        (*ev).owner_source = owner_source as u8;
        (*ev)._pad = 0;
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    count(Counter::StateEvents);
}

/// Append a record of `old -> new` at `now` to this CPU's log
/// ([`cpulog`]): its next slot, one cache line, stamped with the sequence
/// number and sealed, then the head moves on. No lock and no line shared
/// with another CPU but the reader's; no comm (userspace joins it from the
/// comm cache).
#[inline(always)]
fn log_state(now: u64, owner: &Owner, old: u32, new: u32, a: Addrs) {
    // SAFETY: a helper with no arguments and no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(log) = CPU_LOG.get_ptr_mut(cpu) else {
        // More CPUs than userspace sized the log for: cannot happen with
        // the possible-CPU count, counted like a full ring if it does.
        count(Counter::RingbufFull);
        return;
    };
    // SAFETY: this CPU's log, an array value valid for this program run and
    // written by no other program while this one runs; the slot index is
    // masked within the slots.
    unsafe {
        let seq = (*log).head;
        let r = &raw mut (*log).slots[(seq & cpulog::SLOT_MASK) as usize];
        #[expect(
            clippy::cast_possible_truncation,
            reason = "modulo 2^32; states are 1..=12"
        )]
        {
            (*r).seq = seq as u32;
            (*r).old_state = old as u8;
            (*r).new_state = new as u8;
        }
        (*r).ts_ns = now;
        (*r).tgid = owner.tgid;
        (*r).tid = owner.tid;
        (*r).family = a.family;
        (*r).sport = a.sport;
        (*r).dport = a.dport;
        (*r).saddr = a.saddr;
        (*r).daddr = a.daddr;
        (*r).seal = cpulog::seal(seq, &*r);
        core::ptr::write_volatile(&raw mut (*log).head, seq + 1);
    }
    count(Counter::StateEvents);
}

/// A socket without an entry is about to get one at a transition out of
/// `old`. A socket starts its life at CLOSE->SYN_SENT, CLOSE->LISTEN or
/// LISTEN->SYN_RECV (a child cloned from its listener). Any other first
/// sighting is a socket older than the tracer, or evicted: counted.
#[inline(always)]
fn first_sighting(old: u32) {
    if old != TcpState::Close as u32 && old != TcpState::Listen as u32 {
        count(Counter::SockUnknown);
    }
}

/// A transition in the full socket map (`SOCKS`): state, entry time,
/// owner, stacks and CLOSE_WAIT endpoints. Returns the dwell in the old
/// state and the owner to report.
#[inline(always)]
fn full_transition(
    ctx: &TracePointContext,
    rec: &impl SetStateRecord,
    h: &SetStateHead,
    now: u64,
) -> Result<(u64, Owner, u32), i64> {
    let (skaddr, old, new) = (h.skaddr, h.old, h.new);
    // A known entry is updated in place (the BPF stack is 512 bytes). A new
    // one is built in a per-CPU slot and inserted whole: no second lookup.
    let found = SOCKS.get_ptr_mut(skaddr);
    let known = found.is_some();
    let (ptr, fresh) = match found {
        Some(p) => (Some(p), false),
        // The entry outlives CLOSE (see apply_transition); tcp_destroy_sock
        // removes it. A socket first seen at CLOSE has nothing worth keeping.
        None if new != TcpState::Close as u32 => {
            first_sighting(old);
            (NEW_SOCK.get_ptr_mut(0), true)
        }
        None => (None, false),
    };
    Ok(match ptr {
        Some(p) => {
            // SAFETY: a pointer into a map value (the socket's entry, or this
            // CPU's slot) returned by the lookup helper, valid for the
            // duration of this program run.
            let info = unsafe { &mut *p };
            let before = (info.owner_source, info.owner.tgid);
            // For a fresh slot (`known` false) this rewrites every field.
            let dwell_ns = apply_transition(info, known, old, new, now, current_owner);
            // close()/shutdown() by another process than the last owner.
            if known {
                owner_replaced(skaddr, before, info.owner.tgid);
            }
            if new == TcpState::CloseWait as u32 {
                info.addrs = rec.addrs(h)?;
            }
            if fresh {
                if SOCKS.insert(skaddr, &*info, BPF_NOEXIST).is_ok() {
                    count(Counter::SockInserts);
                } else {
                    // Reported like any untracked socket: unknown dwell,
                    // the owner only from an owner transition.
                    count(Counter::SockInsertErrors);
                    aya_log_ebpf::warn!(ctx, "socket map insert failed");
                }
            }
            (dwell_ns, info.owner, info.owner_source)
        }
        // Untracked (first seen at CLOSE, or the insert failed): the same
        // rule without an entry.
        None if is_owner_transition(old, new) => {
            (DWELL_UNKNOWN, current_owner(), OwnerSource::Syscall as u32)
        }
        None => (DWELL_UNKNOWN, Owner::default(), OwnerSource::Unknown as u32),
    })
}

/// A transition into or out of CLOSE_WAIT in the socket details
/// (`Config::sock_details`, `SOCKS`): CLOSE_WAIT entry records the state,
/// time and endpoints, creating the details if the socket's owner has not
/// touched it yet; leaving it records the new state, so that leak reports
/// skip it (and no record names its owner: the details' owner stays the
/// one its I/O recorded).
#[inline(always)]
fn detail_transition(rec: &impl SetStateRecord, h: &SetStateHead, now: u64) -> Result<(), i64> {
    let (skaddr, new) = (h.skaddr, h.new);
    let entering = new == TcpState::CloseWait as u32;
    let Some(p) = details(skaddr, entering) else {
        return Ok(());
    };
    // SAFETY: lookup result, valid for this program run; updated in place.
    let info = unsafe { &mut *p };
    if entering {
        info.addrs = rec.addrs(h)?;
    }
    info.state = new;
    info.entered_ns = now;
    Ok(())
}

/// The details of `skaddr`; with `create`, new ones that know nothing yet
/// if it has none. A racing insert on another CPU (a recv/send, a
/// CLOSE_WAIT entry) may win: both callers then update its entry.
#[inline(always)]
fn details(skaddr: u64, create: bool) -> Option<*mut SockInfo> {
    let found = SOCKS.get_ptr_mut(skaddr);
    if found.is_some() || !create {
        return found;
    }
    insert_details(skaddr);
    SOCKS.get_ptr_mut(skaddr)
}

/// Insert details that know nothing yet for `skaddr`, unless it has some,
/// built in this CPU's slot. Once per socket: a BPF subprogram, so that the
/// hot paths that call it keep their registers.
#[inline(never)]
fn insert_details(skaddr: u64) {
    if let Some(fresh) = NEW_SOCK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, only this program run uses it.
        let info = unsafe { &mut *fresh };
        info.state = 0;
        info.entered_ns = 0;
        forget_life(info);
        let _ = SOCKS.insert(skaddr, &*info, BPF_NOEXIST);
    }
}

/// A transition in the lean socket store (`Config::lean_socks`): the table
/// first, then the `LEAN` map. State, entry time and the owner's pid from
/// owner transitions; no comm.
#[inline(always)]
fn lean_transition<V: Variant>(skaddr: u64, old: u32, new: u32, now: u64) -> (u64, Owner, u32) {
    let bucket = lean_bucket(skaddr);
    if let Some(b) = bucket
        && let Some(slot) = table_find(b, skaddr)
    {
        return table_transition::<V>(slot, skaddr, old, new, now);
    }
    // A listener's child is new to both; anything else may be in the map.
    let found = if table::is_birth(old, new) {
        None
    } else {
        LEAN.get_ptr_mut(skaddr)
    };
    if let Some(p) = found {
        // SAFETY: lookup result, valid for this program run; 24 bytes
        // copied out and written back in place.
        let mut e = unsafe { *p };
        let reported = lean_advance::<V>(&mut e, skaddr, true, (old, new), now);
        // SAFETY: as above.
        unsafe { *p = e };
        return reported;
    }
    let mut e = LeanSock::default();
    let reported = lean_advance::<V>(&mut e, skaddr, false, (old, new), now);
    // As in full_transition: first sightings at CLOSE are not kept.
    if new != TcpState::Close as u32 {
        first_sighting(old);
        if bucket.is_some_and(|b| table_claim(b, skaddr, &e)) {
            count(Counter::SockInserts);
        } else if LEAN.insert(skaddr, &e, BPF_NOEXIST).is_ok() {
            count(Counter::SockInserts);
        } else {
            count(Counter::SockInsertErrors);
        }
    }
    reported
}

/// Apply `old -> new` at `now` to a lean entry: the dwell in `old` and the
/// owner to report.
#[inline(always)]
fn lean_advance<V: Variant>(
    e: &mut LeanSock,
    skaddr: u64,
    known: bool,
    transition: (u32, u32),
    now: u64,
) -> (u64, Owner, u32) {
    let (old, new) = transition;
    let before = *e;
    let dwell_ns = apply_lean_transition(e, known, old, new, now, || {
        let pid_tgid = bpf_get_current_pid_tgid();
        if setting!(V, noted_new_states) & (1 << (new & 31)) != 0 {
            note_comm(pid_tgid);
        }
        // The stream's recv/send hooks write owners into the lean entry: a
        // close() by another process must stop other CPUs' cached pairs of
        // the previous owner (leak mode's hooks write the details instead).
        if known && setting!(V, sock_details) == 0 {
            #[expect(clippy::cast_possible_truncation, reason = "the tgid half")]
            let tgid = (pid_tgid >> 32) as u32;
            lean_owner_replaced(skaddr, &before, tgid);
        }
        pid_tgid
    });
    let (owner, source) = lean_owner(e);
    (dwell_ns, owner, source)
}

/// The table bucket of `skaddr` (an inlined array index, no helper call).
#[inline(always)]
fn lean_bucket(skaddr: u64) -> Option<*mut LeanBucket> {
    LEAN_TABLE.get_ptr_mut(table::bucket_of(skaddr, config!(lean_table_mask)))
}

/// The table slot that holds `skaddr`, if any.
#[inline(always)]
fn lean_slot(skaddr: u64) -> Option<*mut LeanSlot> {
    lean_bucket(skaddr).and_then(|b| table_find(b, skaddr))
}

/// The slot of bucket `b` that holds `skaddr`.
#[inline(always)]
fn table_find(b: *mut LeanBucket, skaddr: u64) -> Option<*mut LeanSlot> {
    // SAFETY: `b` is an array value returned by the lookup, valid for this
    // program run; the index is a constant below `table::SLOTS`.
    unsafe {
        let s0 = &raw mut (*b).slots[0];
        if (*s0).skaddr == skaddr {
            return Some(s0);
        }
        let s1 = &raw mut (*b).slots[1];
        if (*s1).skaddr == skaddr {
            return Some(s1);
        }
    }
    None
}

/// Write `e` and its seal into `slot` for `skaddr`.
#[inline(always)]
fn table_store(slot: *mut LeanSlot, skaddr: u64, e: &LeanSock) {
    let sealed = LeanSock {
        seal: table::seal(skaddr, e),
        ..*e
    };
    // SAFETY: a slot of an array value, valid for this program run. The
    // stores may interleave with a racing claim's: the seal tells.
    unsafe {
        (*slot).skaddr = skaddr;
        (*slot).sock = sealed;
    }
}

/// Take a free slot of bucket `b` for `skaddr`; false when both are taken.
#[inline(always)]
fn table_claim(b: *mut LeanBucket, skaddr: u64, e: &LeanSock) -> bool {
    match table_find(b, 0) {
        Some(slot) => {
            table_store(slot, skaddr, e);
            true
        }
        None => false,
    }
}

/// A transition of a socket found in the table.
#[inline(always)]
fn table_transition<V: Variant>(
    slot: *mut LeanSlot,
    skaddr: u64,
    old: u32,
    new: u32,
    now: u64,
) -> (u64, Owner, u32) {
    // SAFETY: a slot of an array value, valid for this program run.
    let s = unsafe { *slot };
    // A slot torn by a racing claim has no trustworthy entry: this
    // transition starts it again (see tcptrace_common::table).
    let intact = s.is_intact();
    if !intact {
        count(Counter::SockUnknown);
    }
    let mut e = s.sock;
    let reported = lean_advance::<V>(&mut e, skaddr, intact, (old, new), now);
    table_store(slot, skaddr, &e);
    reported
}

/// Note the current thread's comm in the comm cache unless its slot holds
/// it already. Threads rarely rename themselves, so the common path is an
/// array index and a compare, and no write to a line other CPUs read.
#[inline(always)]
fn note_comm(pid_tgid: u64) {
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    if let Some(slot) = COMMS.get_ptr_mut(comms::slot_of(pid_tgid)) {
        // SAFETY: an array value, valid for this program run. A racing
        // writer of the same slot is caught by the seal.
        unsafe {
            if !(*slot).holds(pid_tgid, &comm) {
                *slot = CommSlot::new(pid_tgid, comm);
            }
        }
    }
}

/// The owner a lean entry records: pid and tid, no comm (userspace joins
/// it from the comm cache).
#[inline(always)]
fn lean_owner(e: &LeanSock) -> (Owner, u32) {
    let (tgid, tid, source) = e.owner();
    let owner = Owner {
        tgid,
        tid,
        comm: [0; 16],
    };
    (owner, source as u32)
}

/// Count one dwell in its bucket and raise the group's maximum.
#[inline(always)]
fn hist_add(key: &HistKey, dwell_ns: u64) {
    // A per-CPU hash still has one key for all CPUs: another CPU may create
    // it between our lookup and insert, so a failed insert looks up again.
    if let Some(n) = HIST.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe { *n += 1 };
    } else if HIST.insert(key, 1, BPF_NOEXIST).is_err()
        && let Some(n) = HIST.get_ptr_mut(key)
    {
        // SAFETY: as above.
        unsafe { *n += 1 };
    }
    let max_key = HistKey {
        slot: hist::MAX_SLOT,
        ..*key
    };
    let mut m = HIST.get_ptr_mut(&max_key);
    if m.is_none() && HIST.insert(&max_key, dwell_ns, BPF_NOEXIST).is_err() {
        m = HIST.get_ptr_mut(&max_key);
    }
    if let Some(m) = m {
        // SAFETY: as above.
        unsafe {
            if *m < dwell_ns {
                *m = dwell_ns;
            }
        }
    }
}

/// `bpf_ringbuf_submit` flags: `BPF_RB_NO_WAKEUP`, `BPF_RB_FORCE_WAKEUP`,
/// and the `bpf_ringbuf_query` item `BPF_RB_AVAIL_DATA`.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Batch the reader's wakeups (`Config::wakeup_bytes`): each one costs an
/// irq_work, so the records of `wakeup_bytes` share one.
#[inline(always)]
fn submit_flags() -> u64 {
    let threshold = config!(wakeup_bytes);
    if threshold == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA) >= u64::from(threshold) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn emit<T: 'static>(ev: T, counter: Counter, flags: u64) {
    match EVENTS.reserve::<T>(0) {
        Some(mut slot) => {
            slot.write(ev);
            slot.submit(flags);
            count(counter);
        }
        None => count(Counter::RingbufFull),
    }
}

/// The state and owner recorded for `skaddr`, from whichever socket map is
/// in use; state 0 and no owner if the socket is not tracked.
#[inline(always)]
fn tracked(skaddr: u64) -> (u32, Owner, u32) {
    let unknown = (0, Owner::default(), OwnerSource::Unknown as u32);
    if skaddr == 0 {
        return unknown;
    }
    if config!(lean_socks) != 0 {
        let e = if let Some(slot) = lean_slot(skaddr) {
            // SAFETY: a slot of an array value, valid for this program run.
            let s = unsafe { *slot };
            if !s.is_intact() {
                return unknown;
            }
            s.sock
        } else if let Some(p) = LEAN.get_ptr(skaddr) {
            // SAFETY: lookup result, valid for this program run.
            unsafe { *p }
        } else {
            return unknown;
        };
        let (owner, source) = lean_owner(&e);
        return (e.state, owner, source);
    }
    match SOCKS.get_ptr(skaddr) {
        // SAFETY: lookup result, valid for this program run.
        Some(p) => unsafe { ((*p).state, (*p).owner, (*p).owner_source) },
        None => unknown,
    }
}

/// The kernel frees the socket: its entry goes (inet_csk_destroy_sock ->
/// tcp_v4_destroy_sock). Every socket that had an entry passes here.
#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    let skaddr = if config!(direct_ctx) & DIRECT_DESTROY != 0 {
        Ok(ctx_field::<u64, { DESTROY_SKADDR_STANDARD as usize }>(&ctx))
    } else {
        read::<u64>(&ctx, config!(offsets.destroy_skaddr))
    };
    match skaddr {
        Ok(skaddr) => {
            let removed = if config!(lean_socks) != 0 {
                if let Some(slot) = lean_slot(skaddr) {
                    // SAFETY: a slot of an array value, valid for this
                    // program run. Key 0: free for the next claim.
                    unsafe { (*slot).skaddr = 0 };
                    Ok(())
                } else {
                    LEAN.remove(skaddr)
                }
            } else {
                SOCKS.remove(skaddr)
            };
            // Details are counted with nothing: the store counts sockets.
            let details = config!(sock_details) != 0 && SOCKS.remove(skaddr).is_ok();
            if removed.is_ok() {
                count(Counter::SockDeletes);
            }
            // Its address may come back as another socket.
            if (removed.is_ok() || details) && config!(io_hooks) != 0 {
                bump_io_generation(io_slot(skaddr));
            }
        }
        Err(_) => count(Counter::ReadErrors),
    }
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    if try_send_reset(&ctx).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

fn try_send_reset(ctx: &TracePointContext) -> Result<(), i64> {
    if config!(emit_resets) == 0 {
        return Ok(());
    }
    let o = config!(offsets.send_reset);
    // saddr/daddr are `struct sockaddr_in` or `sockaddr_in6` in 28 bytes:
    // family (host order), port (network order), then the address at byte 4
    // (v4) or byte 8 (v6). The sender of the RST is the local side.
    let s: [u8; 28] = read(ctx, o.saddr)?;
    let d: [u8; 28] = read(ctx, o.daddr)?;
    let family = u16::from_ne_bytes([s[0], s[1]]);
    let sport = u16::from_be_bytes([s[2], s[3]]);
    let dport = u16::from_be_bytes([d[2], d[3]]);
    if !accepts(family, sport, dport) {
        return Ok(());
    }
    let mut addrs = Addrs {
        family,
        sport,
        dport,
        ..Addrs::default()
    };
    if family == AF_INET {
        addrs.saddr[..4].copy_from_slice(&s[4..8]);
        addrs.daddr[..4].copy_from_slice(&d[4..8]);
    } else if family == AF_INET6 {
        addrs.saddr.copy_from_slice(&s[8..24]);
        addrs.daddr.copy_from_slice(&d[8..24]);
    }
    let skaddr: u64 = read(ctx, o.skaddr)?;
    let state: i32 = read(ctx, o.state)?;
    let reason: u32 = read(ctx, o.reason)?;
    let (_, owner, owner_source) = tracked(skaddr);
    #[expect(clippy::cast_sign_loss, reason = "TCP states are 0..=12")]
    let ev = ResetEvent {
        // SAFETY: no preconditions.
        header: header(RecordKind::Reset, unsafe { bpf_ktime_get_ns() }),
        skaddr,
        cookie: 0,
        owner,
        addrs,
        direction: RST_SENT,
        state: state as u32,
        reason,
        owner_source,
    };
    emit(ev, Counter::ResetEvents, submit_flags());
    Ok(())
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if try_receive_reset(&ctx).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

fn try_receive_reset(ctx: &TracePointContext) -> Result<(), i64> {
    if config!(emit_resets) == 0 {
        return Ok(());
    }
    let o = config!(offsets.receive_reset);
    let raw = Raw::<RECORD>::load(ctx)?;
    let family: u16 = raw.get(o.family)?;
    let sport: u16 = raw.get(o.sport)?;
    let dport: u16 = raw.get(o.dport)?;
    if !accepts(family, sport, dport) {
        return Ok(());
    }
    let skaddr: u64 = raw.get(o.skaddr)?;
    let cookie: u64 = raw.get(o.sock_cookie)?;
    let addrs = read_split_addrs(
        &raw,
        family,
        sport,
        dport,
        [o.saddr, o.daddr, o.saddr_v6, o.daddr_v6],
    )?;
    let (state, owner, owner_source) = tracked(skaddr);
    let ev = ResetEvent {
        // SAFETY: no preconditions.
        header: header(RecordKind::Reset, unsafe { bpf_ktime_get_ns() }),
        skaddr,
        cookie,
        owner,
        addrs,
        direction: RST_RECEIVED,
        state,
        reason: 0,
        owner_source,
    };
    emit(ev, Counter::ResetEvents, submit_flags());
    Ok(())
}

/// A (socket, process) pair whose socket entry needs nothing from that
/// process's recv/send: its owner is that process and its first-touch stack
/// is taken. Valid while its slot's [`IO_GEN`] equals `generation`.
#[derive(Clone, Copy)]
#[repr(C)]
struct IoSlot {
    sk: u64,
    generation: u64,
    tgid: u32,
    _pad: u32,
}

/// Slots per CPU, direct-mapped by socket address.
const IO_SLOTS: usize = 64;

/// Per-CPU cache of settled pairs in front of the `SOCKS` lookup in the
/// recv/send hooks, which run on every recv and send of every process:
/// keep-alive traffic finds its pair here and does no hash lookup.
#[map]
static IO_CACHE: PerCpuArray<[IoSlot; IO_SLOTS]> = PerCpuArray::with_max_entries(1, 0);

/// One generation per slot index, shared by all CPUs. Bumped when a cached
/// pair in that slot may have gone stale on any CPU: a socket's entry
/// removed (its address may come back as another socket) or a known owner
/// replaced (by another process's I/O, close or shutdown). Per slot, so that the sockets a busy
/// host closes every second invalidate 1/64 of the cache each, not all of
/// it. Not bumped on an LRU eviction: an evicted socket's pair skips
/// nothing that the missing entry would not. A plain increment: two CPUs
/// racing may lose one, but the value still moves past every stamp taken
/// before either change.
#[unsafe(no_mangle)]
static mut IO_GEN: [Generation; IO_SLOTS] = [Generation(0); IO_SLOTS];

/// One generation per cache line: a socket closed on one CPU does not slow
/// the recv of an unrelated socket on another.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Generation(u64);

#[inline(always)]
fn bump_io_generation(i: usize) {
    // SAFETY: an aligned global, `i` below IO_SLOTS (from io_slot); see
    // IO_GEN for why a racy increment is enough.
    unsafe {
        let g = core::ptr::read_volatile(&raw const IO_GEN[i].0);
        core::ptr::write_volatile(&raw mut IO_GEN[i].0, g.wrapping_add(1));
    }
}

/// A socket's owner went from `before` (source, tgid) to `tgid`: another
/// CPU may hold a pair for the previous owner, which must no longer skip
/// that owner's recv/send (it would take the socket back). None can exist
/// while the owner is unknown: pairs are only stamped for the owner.
#[inline(always)]
fn owner_replaced(sk: u64, before: (u32, u32), tgid: u32) {
    let (source, previous) = before;
    if config!(io_hooks) != 0 && source != OwnerSource::Unknown as u32 && previous != tgid {
        bump_io_generation(io_slot(sk));
    }
}

/// [`owner_replaced`] for a lean entry whose owner was `before`.
#[inline(always)]
fn lean_owner_replaced(sk: u64, before: &LeanSock, tgid: u32) {
    let (previous, _, source) = before.owner();
    owner_replaced(sk, (source as u32, previous), tgid);
}

/// The cache slot of a socket: `struct sock`s are slab objects over a
/// kilobyte apart, so the bits above the low ten spread them.
#[inline(always)]
fn io_slot(sk: u64) -> usize {
    #[expect(clippy::cast_possible_truncation, reason = "masked to IO_SLOTS")]
    let i = ((sk >> 10) ^ (sk >> 16)) as usize;
    // SAFETY: a read of a local; volatile so that LLVM keeps the mask the
    // verifier needs to bound the index.
    unsafe { core::ptr::read_volatile(&raw const i) & (IO_SLOTS - 1) }
}

/// Shared body of the recv/send hooks. They fire on every recv and send of
/// every process, so the common path is kept to a cheap filter and a hit in
/// the per-CPU pair cache, with no stack spill: the helper call comes first
/// and the rare cases (new owner, first touch, first EOF) are a BPF
/// subprogram, [`io_update`], whose registers the common path does not pay
/// for.
#[inline(always)]
fn on_io(ctx: &TracePointContext, is_recv: bool) -> Result<(), i64> {
    #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid")]
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // (protocol, sk, ret): straight from the context for the standard
    // layout, else from one copy of the record at tracefs's offsets.
    let (protocol, sk, ret) = if config!(direct_ctx) & DIRECT_SOCK_LENGTH != 0 {
        const O: SockLengthOffsets = SockLengthOffsets::STANDARD;
        (
            ctx_field::<u16, { O.protocol as usize }>(ctx),
            ctx_field::<u64, { O.sk as usize }>(ctx),
            ctx_field::<i32, { O.ret as usize }>(ctx),
        )
    } else {
        let o = if is_recv {
            config!(offsets.recv_length)
        } else {
            config!(offsets.send_length)
        };
        let mut buf = [0u8; IO_RECORD];
        let raw = Raw::<IO_RECORD>::fill(ctx, &raw mut buf)?;
        (raw.get(o.protocol)?, raw.get(o.sk)?, raw.get(o.ret)?)
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let i = io_slot(sk);
    // The generation is read before the entry: a change made after this
    // read bumps it past the stamp io_update writes.
    // SAFETY: a read of an aligned global; `i` is below IO_SLOTS.
    let generation = unsafe { core::ptr::read_volatile(&raw const IO_GEN[i].0) };
    // The common path: the same process again on a settled socket, and not
    // an EOF (which has work to do).
    let eof = is_recv && ret == 0;
    if !eof && let Some(slots) = IO_CACHE.get_ptr(0) {
        // SAFETY: this CPU's slots, only this CPU touches them while we
        // run; `i` is below IO_SLOTS.
        let slot = unsafe { &(*slots)[i] };
        if slot.sk == sk && slot.tgid == tgid && slot.generation == generation {
            return Ok(());
        }
    }
    io_update(ctx, sk, IoStamp { generation, tgid }, eof);
    Ok(())
}

/// What [`on_io`] read before its cache missed: the slot generation and the
/// caller's tgid.
#[derive(Clone, Copy)]
struct IoStamp {
    generation: u64,
    tgid: u32,
}

/// The recv/send hooks' work when the pair cache missed: take the owner,
/// create the details on the owner's first touch, note the first EOF, and
/// cache the settled pair. A BPF subprogram (see [`on_io`]).
#[inline(never)]
fn io_update(ctx: &TracePointContext, sk: u64, stamp: IoStamp, eof: bool) {
    let IoStamp { generation, tgid } = stamp;
    // The stream keeps its owners in the lean store; leak mode (and the
    // full socket map) in the details.
    let settled = if config!(lean_socks) != 0 && config!(sock_details) == 0 {
        io_lean_owner(sk)
    } else {
        io_details(ctx, sk, tgid, eof)
    };
    if settled && let Some(slots) = IO_CACHE.get_ptr_mut(0) {
        // SAFETY: this CPU's slots, as in on_io.
        unsafe {
            (*slots)[io_slot(sk)] = IoSlot {
                sk,
                generation,
                tgid,
                _pad: 0,
            };
        }
    }
}

/// A recv/send on `sk`, in the lean store: the caller's process takes the
/// socket unless it owns it already ([`LeanSock::io_owner`]), and its
/// thread's comm goes to the comm cache. Returns whether the socket is
/// tracked, and so settled: the pair can be cached.
#[inline(always)]
fn io_lean_owner(sk: u64) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(slot) = lean_slot(sk) {
        // SAFETY: a slot of an array value, valid for this program run.
        let s = unsafe { *slot };
        // A torn slot is left for the socket's next transition to restart.
        if !s.is_intact() {
            return false;
        }
        if let Some((tgid, tid)) = io_take_owner(sk, &s.sock, pid_tgid) {
            let e = LeanSock {
                tgid,
                tid,
                ..s.sock
            };
            // Only the owner and the seal: a transition of the socket racing
            // on another CPU keeps its state and time, and the seal then
            // fails, which its next transition sees (see table_transition).
            // SAFETY: as above.
            unsafe {
                (*slot).sock.tgid = tgid;
                (*slot).sock.tid = tid;
                (*slot).sock.seal = table::seal(sk, &e);
            }
        }
        true
    } else if let Some(p) = LEAN.get_ptr_mut(sk) {
        // SAFETY: lookup result, valid for this program run.
        let e = unsafe { *p };
        if let Some((tgid, tid)) = io_take_owner(sk, &e, pid_tgid) {
            // SAFETY: as above; the owner only, as for a table slot.
            unsafe {
                (*p).tgid = tgid;
                (*p).tid = tid;
            }
        }
        true
    } else {
        false
    }
}

/// The owner to write into lean entry `e` of `sk` for a recv/send by
/// thread `pid_tgid`, if it changes: other CPUs' cached pairs of the
/// previous owner are invalidated and the thread's comm noted. None on the
/// common path, the owner calling again.
#[inline(always)]
fn io_take_owner(sk: u64, e: &LeanSock, pid_tgid: u64) -> Option<(u32, u32)> {
    let (tgid, tid) = e.io_owner(pid_tgid)?;
    lean_owner_replaced(sk, e, tgid);
    note_comm(pid_tgid);
    Some((tgid, tid))
}

/// A recv/send on `sk`, in its details: take the owner, create the details
/// on the owner's first touch, note the first EOF. Returns whether the
/// socket is settled: this process owns it, and its first-touch stack
/// (when asked for) is taken; only an EOF or another process has work to
/// do then.
#[inline(always)]
fn io_details(ctx: &TracePointContext, sk: u64, tgid: u32, eof: bool) -> bool {
    // The owner's first touch creates the details, filled in below.
    let Some(info) = details(sk, config!(sock_details) != 0) else {
        return false;
    };
    // SAFETY: lookup result, valid for this program run; updated in place.
    let info = unsafe { &mut *info };
    if io_needs_owner_update(info, tgid) {
        owner_replaced(sk, (info.owner_source, info.owner.tgid), tgid);
        info.owner = current_owner();
        info.owner_source = OwnerSource::Io as u32;
    }
    let capture = config!(capture_stacks) != 0;
    if capture && !info.first_stack.is_some() {
        info.first_stack = capture_stack(ctx, tgid);
    }
    if eof && info.eof_ns == 0 {
        // SAFETY: no preconditions.
        info.eof_ns = unsafe { bpf_ktime_get_ns() };
        if capture {
            info.eof_stack = capture_stack(ctx, tgid);
        }
    }
    !capture || info.first_stack.is_some()
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    if on_io(&ctx, true).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    if on_io(&ctx, false).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

/// `bind()` returned EADDRINUSE: the port is held (TIME_WAIT sockets without
/// SO_REUSEADDR on both sides, or a live socket).
#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    if on_sys_exit(&ctx, SYSCALL_BIND, EADDRINUSE).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

/// `connect()` returned EADDRNOTAVAIL: no local port is free for that
/// destination (ephemeral ports exhausted).
#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if on_sys_exit(&ctx, SYSCALL_CONNECT, EADDRNOTAVAIL).is_err() {
        count(Counter::ReadErrors);
    }
    0
}

/// Every bind and connect of every process passes here; the common path is
/// one read of `ret` and a compare.
#[inline(always)]
fn on_sys_exit(ctx: &TracePointContext, syscall: u32, errno: i32) -> Result<(), i64> {
    if config!(emit_failures) == 0 {
        return Ok(());
    }
    let ret: i64 = read(ctx, config!(offsets.sys_exit_ret))?;
    if ret != -i64::from(errno) {
        return Ok(());
    }
    let mut ev = FailureEvent {
        // SAFETY: no preconditions.
        header: header(RecordKind::Failure, unsafe { bpf_ktime_get_ns() }),
        owner: current_owner(),
        syscall,
        ret: -errno,
        ..FailureEvent::default()
    };
    if let Some([fd, uaddr, len]) = syscall_args() {
        #[expect(clippy::cast_possible_truncation, reason = "fds are ints")]
        {
            ev.fd = fd as u32;
        }
        // sockaddr_in (16 bytes) or sockaddr_in6 (28): family, port (network
        // order), then the v4 address at byte 4 or the v6 one at byte 8.
        let mut sa = [0u8; 28];
        let n = if len >= 28 { 28 } else { 16 };
        // SAFETY: reads at most `len` bytes (16 or 28) of the caller's
        // sockaddr into our buffer; the helper faults safely.
        let r =
            unsafe { generated::bpf_probe_read_user(sa.as_mut_ptr().cast(), n, uaddr as *const _) };
        if r == 0 && len >= 16 {
            let family = u16::from_ne_bytes([sa[0], sa[1]]);
            let port = u16::from_be_bytes([sa[2], sa[3]]);
            if family == AF_INET {
                ev.addr[..4].copy_from_slice(&sa[4..8]);
            } else if family == AF_INET6 && n == 28 {
                ev.addr.copy_from_slice(&sa[8..24]);
            } else {
                return Ok(());
            }
            let (lport, rport) = if syscall == SYSCALL_BIND {
                (port, 0)
            } else {
                (0, port)
            };
            // The other side's port is unknown (0): a filter on it drops
            // the event, `--port` matches the one known.
            if !accepts(family, lport, rport) {
                return Ok(());
            }
            ev.family = family;
            ev.port = port;
        }
    }
    // Rare, and worth printing at once: the reader is woken.
    emit(ev, Counter::FailureEvents, 0);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
