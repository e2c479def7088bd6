//! User stacks (leak mode's first touch and EOF read): `STACKS`, and
//! `STACK_SPILL` for the stacks whose `STACKS` bucket another stack holds.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::generated::bpf_get_stack,
    macros::map,
    maps::{HashMap, PerCpuArray, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext as _},
};
use tcptrace_common::{Counter, STACK_DEPTH, StackRef};

use crate::{
    maps::{BPF_NOEXIST, count},
    task::user_sp_word,
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

/// `bpf_get_stackid` errors (negated): the stack's bucket holds another
/// stack; there is no user stack (a kernel thread); no free bucket.
const EEXIST: i32 = 17;
const EFAULT: i32 = 14;
const ENOMEM: i32 = 12;

/// Capture the current task's user stack: in `STACKS`, or in `STACK_SPILL`
/// when its `STACKS` bucket is taken. A kernel thread has none to capture.
#[inline(always)]
pub(crate) fn capture_stack(ctx: &TracePointContext, tgid: u32) -> StackRef {
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
