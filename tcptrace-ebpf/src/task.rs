//! The current task: its owner identity, and the registers its syscall
//! saved at entry (x86-64 `struct pt_regs`), for the syscall's arguments
//! and where a user stack walk starts.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
#[cfg(bpf_target_arch = "x86_64")]
use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_user,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};
use tcptrace_common::Owner;

#[inline(always)]
pub(crate) fn current_owner() -> Owner {
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
pub(crate) fn syscall_args() -> Option<[u64; 3]> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: as in `user_regs`: the current task's saved registers,
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

/// Offsets of `bp` and `ip` in x86-64 `struct pt_regs` (see [`PT_REGS_SP`]).
#[cfg(bpf_target_arch = "x86_64")]
const PT_REGS_BP: usize = 4 * 8;
#[cfg(bpf_target_arch = "x86_64")]
const PT_REGS_IP: usize = 16 * 8;

/// The user registers saved at syscall entry that a stack walk starts
/// from, and the word at the stack pointer.
pub(crate) struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The word at `sp`. Inside a frameless syscall wrapper (glibc's
    /// `recv`/`read`) it is the return address into the wrapper's caller,
    /// the frame that a frame-pointer walk skips; 0 if unreadable.
    pub sp_word: u64,
}

/// The current task's [`UserRegs`]; None where the saved registers cannot
/// be read (or on an architecture tcptrace does not know the layout of).
#[inline(always)]
pub(crate) fn user_regs() -> Option<UserRegs> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: bpf_get_current_task_btf returns the current task (never
        // NULL in process context) and bpf_task_pt_regs its saved user
        // registers; every read goes through a probe_read helper that
        // faults safely.
        unsafe {
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
            if regs.is_null() {
                return None;
            }
            let word = |off: usize| bpf_probe_read_kernel(regs.add(off).cast::<u64>()).ok();
            let (ip, sp, bp) = (word(PT_REGS_IP)?, word(PT_REGS_SP)?, word(PT_REGS_BP)?);
            Some(UserRegs {
                ip,
                sp,
                bp,
                sp_word: bpf_probe_read_user(sp as *const u64).unwrap_or(0),
            })
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        None
    }
}
