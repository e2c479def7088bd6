//! The comm cache (`COMMS`): thread names and cgroup ids noted at owner
//! transitions, by thread id, for the lean store, which keeps only a
//! socket owner's pid and tid.
//! Mechanism: docs/internals.md, "The comm cache".

/// Slots in the cache: 40 bytes each, 640 KiB in all.
pub const SLOTS: u32 = 16_384;

/// One thread's comm and cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommSlot {
    /// `bpf_get_current_pid_tgid()` of the thread: tgid in the upper half.
    pub pid_tgid: u64,
    pub comm: [u8; 16],
    /// `bpf_get_current_cgroup_id()`: the thread's cgroup v2 id, which
    /// names its container after it has exited.
    pub cgroup: u64,
    /// [`seal`] over the other fields; never 0.
    pub seal: u64,
}

const _: () = assert!(core::mem::size_of::<CommSlot>() == 40);

/// The slot of a thread: its tid, modulo [`SLOTS`].
#[inline(always)]
#[must_use]
#[expect(clippy::cast_possible_truncation, reason = "the tid is the lower half")]
pub const fn slot_of(pid_tgid: u64) -> u32 {
    (pid_tgid as u32) & (SLOTS - 1)
}

/// The seal of a slot holding `pid_tgid`, `comm` and `cgroup`: never 0,
/// so that a zeroed slot is never intact.
#[inline(always)]
#[must_use]
pub const fn seal(pid_tgid: u64, comm: &[u8; 16], cgroup: u64) -> u64 {
    let lo = u64::from_ne_bytes([
        comm[0], comm[1], comm[2], comm[3], comm[4], comm[5], comm[6], comm[7],
    ]);
    let hi = u64::from_ne_bytes([
        comm[8], comm[9], comm[10], comm[11], comm[12], comm[13], comm[14], comm[15],
    ]);
    let x = pid_tgid ^ lo.rotate_left(21) ^ hi.rotate_left(43) ^ cgroup.rotate_left(7);
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

impl CommSlot {
    /// A sealed slot for `pid_tgid`, `comm` and `cgroup`.
    #[inline(always)]
    #[must_use]
    pub const fn new(pid_tgid: u64, comm: [u8; 16], cgroup: u64) -> Self {
        CommSlot {
            pid_tgid,
            comm,
            cgroup,
            seal: seal(pid_tgid, &comm, cgroup),
        }
    }

    /// Whether this slot names thread `pid_tgid` as `comm` in `cgroup`
    /// already.
    #[inline(always)]
    #[must_use]
    pub fn holds(&self, pid_tgid: u64, comm: &[u8; 16], cgroup: u64) -> bool {
        self.pid_tgid == pid_tgid && self.comm == *comm && self.cgroup == cgroup
    }

    /// The comm and cgroup id of thread `pid_tgid`, if this intact slot is
    /// that thread's.
    #[inline(always)]
    #[must_use]
    pub fn comm_of(&self, pid_tgid: u64) -> Option<([u8; 16], u64)> {
        (pid_tgid != 0
            && self.pid_tgid == pid_tgid
            && self.seal == seal(self.pid_tgid, &self.comm, self.cgroup))
        .then_some((self.comm, self.cgroup))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pid_tgid` of pid 100's thread 101, and of a thread of another pid
    /// whose thread id is `SLOTS` higher.
    const A: u64 = pid_tgid(100, 101);
    const B: u64 = pid_tgid(200, 101 + SLOTS);

    const fn pid_tgid(process: u32, thread: u32) -> u64 {
        ((process as u64) << 32) + thread as u64
    }

    fn comm(s: &[u8]) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s);
        c
    }

    #[test]
    fn threads_ids_apart_by_the_size_share_a_slot() {
        assert_eq!(slot_of(A), slot_of(B));
        assert_ne!(slot_of(A), slot_of(A + 1));
    }

    #[test]
    fn a_slot_names_only_its_own_thread() {
        let s = CommSlot::new(A, comm(b"nginx"), 9);
        assert_eq!(s.comm_of(A), Some((comm(b"nginx"), 9)));
        assert_eq!(s.comm_of(B), None);
        assert!(s.holds(A, &comm(b"nginx"), 9));
        assert!(!s.holds(A, &comm(b"nginx: worker"), 9));
        assert!(!s.holds(A, &comm(b"nginx"), 10), "moved to another cgroup");
        assert_eq!(CommSlot::default().comm_of(0), None);
        assert_eq!(CommSlot::default().comm_of(A), None);
    }

    /// Two writers racing on one slot: every mix of their three fields that
    /// is not wholly one writer's names nobody.
    #[test]
    fn a_torn_slot_names_nobody() {
        let a = CommSlot::new(A, comm(b"client"), 5);
        let b = CommSlot::new(B, comm(b"server"), 6);
        for mask in 0u8..16 {
            let pick = |bit: u8| mask & (1 << bit) != 0;
            let s = CommSlot {
                pid_tgid: if pick(0) { b.pid_tgid } else { a.pid_tgid },
                comm: if pick(1) { b.comm } else { a.comm },
                cgroup: if pick(2) { b.cgroup } else { a.cgroup },
                seal: if pick(3) { b.seal } else { a.seal },
            };
            let whole = mask == 0 || mask == 15;
            let named = s.comm_of(A).or(s.comm_of(B));
            assert_eq!(named.is_some(), whole, "mix {mask:03b}");
        }
        // Same thread, a renamed comm racing the old one.
        let renamed = CommSlot::new(A, comm(b"client-2"), 5);
        let torn = CommSlot {
            comm: renamed.comm,
            ..a
        };
        assert_eq!(torn.comm_of(A), None);
    }
}
