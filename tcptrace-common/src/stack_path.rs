//! The key of a code path in the eBPF side's stack cache (`STACK_IDS`):
//! what tells two first-touch (or EOF) stacks apart before the kernel walks
//! them. docs/internals.md, "The stack cache".
//!
//! A user stack as `bpf_get_stackid` captures it is the syscall's
//! instruction pointer, then the return address of every frame on the
//! frame-pointer chain (from the saved `bp`), until the chain ends; tcptrace
//! adds the word at the stack pointer (the return address a frameless
//! syscall wrapper leaves there). The key hashes exactly those, with the
//! process, so that two paths the leak report tells apart have two keys. The
//! eBPF side reads the chain itself, one frame at a time, but only where a
//! frame can be ([`plausible_frame`]): code built without frame pointers
//! (most of glibc, Rust's std) leaves anything in `bp`, and the kernel's own
//! walk pays a page fault on such an address, which is most of a capture's
//! cost. What follows a chain's last plausible frame is left out of the key:
//! there the kernel's walk reads garbage or faults.

/// Frames read at most. A longer chain is not keyed: its stack is captured
/// every time, as without the cache.
pub const MAX_FRAMES: usize = 32;

/// How far above the stack pointer a frame may be: a thread's stack is
/// 8 MiB by default (a goroutine's far less).
pub const MAX_SPAN: u64 = 8 << 20;

/// The top of x86-64 user space (47-bit addresses).
const USER_TOP: u64 = 1 << 47;

/// Whether `fp` can be a frame of the chain: 8-byte aligned, at or above
/// `low` (the previous frame's end, or the stack pointer: the chain grows
/// towards older frames, up the stack), within [`MAX_SPAN`] of the stack
/// pointer `sp`, in user space. The eBPF side reads only such frames.
#[inline(always)]
#[must_use]
pub const fn plausible_frame(fp: u64, low: u64, sp: u64) -> bool {
    fp != 0
        && fp.is_multiple_of(8)
        && fp >= low
        && low >= sp
        && fp - sp < MAX_SPAN
        && fp < USER_TOP - 16
}

/// FNV-1a's 64-bit offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A code path's key, built frame by frame: FNV-1a over the process id, the
/// syscall's instruction pointer, the word at the stack pointer, the number
/// of frames and each return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    hash: u64,
    frames: u64,
}

impl PathKey {
    #[inline(always)]
    #[must_use]
    pub const fn new(tgid: u32, ip: u64, sp_word: u64) -> Self {
        let h = mix(mix(mix(FNV_OFFSET, tgid as u64), ip), sp_word);
        Self { hash: h, frames: 0 }
    }

    /// The next return address of the chain.
    #[inline(always)]
    pub const fn frame(&mut self, ret: u64) {
        self.hash = mix(self.hash, ret);
        self.frames += 1;
    }

    /// The key: the hash with the number of frames mixed in, so that a
    /// chain is never the prefix of another's key.
    #[inline(always)]
    #[must_use]
    pub const fn finish(self) -> u64 {
        mix(self.hash, self.frames)
    }
}

#[inline(always)]
const fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(FNV_PRIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, ip: u64, sp_word: u64, rets: &[u64]) -> u64 {
        let mut k = PathKey::new(tgid, ip, sp_word);
        for &r in rets {
            k.frame(r);
        }
        k.finish()
    }

    #[test]
    fn paths_the_report_tells_apart_have_their_own_keys() {
        let base = key(1, 0x10, 0x20, &[0x30, 0x40]);
        assert_eq!(base, key(1, 0x10, 0x20, &[0x30, 0x40]));
        // Another process, another syscall site, another caller of a
        // frameless wrapper, another frame anywhere on the chain.
        assert_ne!(base, key(2, 0x10, 0x20, &[0x30, 0x40]));
        assert_ne!(base, key(1, 0x11, 0x20, &[0x30, 0x40]));
        assert_ne!(base, key(1, 0x10, 0x21, &[0x30, 0x40]));
        assert_ne!(base, key(1, 0x10, 0x20, &[0x30, 0x41]));
        assert_ne!(base, key(1, 0x10, 0x20, &[0x31, 0x40]));
        // Go: every read shares its runtime frames; the callers differ deep.
        let runtime = [0x100, 0x200, 0x300, 0x400, 0x500, 0x600, 0x700, 0x800];
        let mut a = runtime.to_vec();
        a.extend([0xa00, 0xf00]);
        let mut b = runtime.to_vec();
        b.extend([0xb00, 0xf00]);
        assert_ne!(key(1, 0x10, 0x20, &a), key(1, 0x10, 0x20, &b));
        // A chain is not its own prefix.
        assert_ne!(key(1, 0x10, 0x20, &a[..9]), key(1, 0x10, 0x20, &a));
    }

    #[test]
    fn only_frames_up_the_stack_near_the_stack_pointer_are_read() {
        let sp = 0x7ffd_0000_1000;
        assert!(plausible_frame(sp + 0x40, sp, sp));
        assert!(plausible_frame(sp, sp, sp));
        // Not a pointer, misaligned, below the previous frame or the stack
        // pointer, beyond a stack's span, kernel or non-canonical addresses.
        assert!(!plausible_frame(0, sp, sp));
        assert!(!plausible_frame(42, sp, sp));
        assert!(!plausible_frame(sp + 0x41, sp, sp));
        assert!(!plausible_frame(sp + 0x40, sp + 0x50, sp));
        assert!(!plausible_frame(sp - 8, sp, sp));
        assert!(!plausible_frame(sp + MAX_SPAN, sp, sp));
        assert!(!plausible_frame(0xffff_8880_0000_0000, sp, sp));
        // A heap pointer far from the stack.
        assert!(!plausible_frame(0x5555_5555_0000, 0x5555_5555_0000 - 8, sp));
    }
}
