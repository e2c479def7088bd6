//! User stacks (leak mode's first touch and EOF read): `STACKS`, and
//! `STACK_SPILL` for the stacks whose `STACKS` bucket another stack holds;
//! `STACK_IDS`, the stacks already captured, by code path, so that a path
//! seen before costs no walk by the kernel (docs/internals.md, "The stack
//! cache").

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_probe_read_user, generated::bpf_get_stack},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, StackTrace},
    programs::tracing::StackIdContext,
};
use tcptrace_common::{
    Counter, STACK_DEPTH, StackRef,
    stack_path::{self, PathKey},
};

use crate::{
    maps::{BPF_NOEXIST, count},
    task::{UserRegs, user_regs},
};

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

/// The stacks already captured, by code path: a [`PathKey`] (the process,
/// the syscall's instruction pointer, the word at the stack pointer and
/// every return address of the frame-pointer chain) to the `id_plus_one`
/// of a [`StackRef`]. One entry in modes without stacks; the stack recycler
/// deletes the entries that name a stack before it frees that stack.
#[map]
static STACK_IDS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(8_192, 0);

/// `bpf_get_stackid` errors (negated): the stack's bucket holds another
/// stack; there is no user stack (a kernel thread); no free bucket.
const EEXIST: i32 = 17;
const EFAULT: i32 = 14;
const ENOMEM: i32 = 12;

/// The current task's user stack: the id of its code path's stack when
/// `STACK_IDS` has it (no walk by the kernel), else a capture, remembered
/// there when the path could be keyed. A kernel thread has none.
/// Without the saved registers, a capture without the cache.
#[inline(always)]
pub(crate) fn capture_stack<C: StackIdContext>(ctx: &C, tgid: u32) -> StackRef {
    let Some(regs) = user_regs() else {
        return walk_stack(ctx, tgid, 0);
    };
    let key = path_key(tgid, &regs);
    // SAFETY: the value is copied out at once; an entry deleted or
    // evicted meanwhile still holds a u32 (the map's values are
    // preallocated and not freed while the program runs).
    if let Some(key) = key
        && let Some(&id_plus_one) = unsafe { STACK_IDS.get(&key) }
    {
        return StackRef {
            id_plus_one,
            tgid,
            sp_word: regs.sp_word,
        };
    }
    let r = walk_stack(ctx, tgid, regs.sp_word);
    if let Some(key) = key
        && r.is_some()
    {
        // A full map evicts its least recently used path; a failed insert
        // only costs that path a walk next time.
        let _ = STACK_IDS.insert(&key, &r.id_plus_one, 0);
    }
    r
}

/// The code path of the current syscall, as [`stack_path`] keys it, from
/// the frame-pointer chain read where it is plausible (see
/// [`stack_path::plausible_frame`]); None when the chain is longer than
/// [`stack_path::MAX_FRAMES`]: such a path is always walked by the kernel.
#[inline(always)]
fn path_key(tgid: u32, regs: &UserRegs) -> Option<u64> {
    let mut k = PathKey::new(tgid, regs.ip, regs.sp_word);
    let mut low = regs.sp;
    let mut fp = regs.bp;
    for _ in 0..stack_path::MAX_FRAMES {
        if !stack_path::plausible_frame(fp, low, regs.sp) {
            return Some(k.finish());
        }
        // SAFETY: a read of user memory through the helper, which faults
        // safely; [saved frame pointer, return address].
        let Ok(frame) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            return Some(k.finish());
        };
        k.frame(frame[1]);
        low = fp + 16;
        fp = frame[0];
    }
    if stack_path::plausible_frame(fp, low, regs.sp) {
        None
    } else {
        Some(k.finish())
    }
}

/// Walk the current task's user stack into `STACKS`, or into `STACK_SPILL`
/// when its `STACKS` bucket is taken.
#[inline(always)]
fn walk_stack<C: StackIdContext>(ctx: &C, tgid: u32, sp_word: u64) -> StackRef {
    let id_plus_one = match ctx.get_stackid(&STACKS, u64::from(BPF_F_USER_STACK)) {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "ids are < max_entries"
        )]
        Ok(id) => id as u32 + 1,
        Err(e) if e == -EFAULT => return StackRef::default(),
        // EEXIST: another stack holds the bucket. ENOMEM: no free bucket at
        // this instant (two CPUs filling empty buckets at once, with the
        // last free one between them). Either way the spill map keeps it.
        Err(e) if e == -EEXIST || e == -ENOMEM => match spill_stack(ctx) {
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
        sp_word,
    }
}

/// Copy the current user stack into `STACK_SPILL` under the key of its
/// frames' hash; the key, or None if it could not be stored. Rare (a bucket
/// collision in `STACKS`): a BPF subprogram, out of the I/O hooks' hot path.
#[inline(never)]
fn spill_stack<C: StackIdContext>(ctx: &C) -> Option<u32> {
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
