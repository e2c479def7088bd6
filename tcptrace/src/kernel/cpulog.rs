//! Reading the kernel's per-CPU record logs (`CPU_LOG`,
//! [`tcptrace_common::cpulog`]) through one read-only shared mapping: no
//! system call per drain, only the heads and the new slots are read. The
//! comm cache (`COMMS`), which names the owners of the logs' records and of
//! the stream's, is read the same way.

use std::{
    num::NonZeroUsize,
    os::fd::AsFd as _,
    ptr::NonNull,
    sync::atomic::{Ordering, fence},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Map, MapData},
};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use tcptrace_common::{
    StateEvent,
    comms::{self, CommSlot},
    cpulog::{CpuLog, Cursor, LogRecord, LogView, SLOT_MASK, state_event},
};

use crate::kernel::maps::names;

/// How often the per-CPU logs are read: each CPU's log holds
/// `tcptrace_common::cpulog::SLOTS` records, so one CPU can log 40 000
/// entries a second before any is lost.
pub const LOG_DRAIN: std::time::Duration = std::time::Duration::from_millis(50);

/// A read-only shared mapping of a `BPF_F_MMAPABLE` array's values, which
/// the kernel keeps writing: read it with volatile loads only.
pub struct ArrayMapping {
    ptr: NonNull<std::ffi::c_void>,
    len: NonZeroUsize,
}

impl ArrayMapping {
    /// Map the first `len` bytes of the values of array `data` (mmapable
    /// arrays map them from offset 0, value after value, each a multiple of
    /// 8 bytes).
    pub fn new(data: &MapData, len: NonZeroUsize) -> Result<Self, nix::Error> {
        // SAFETY: a new read-only shared mapping, unmapped in Drop; nothing
        // borrows from it beyond the ArrayMapping.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                data.fd().as_fd(),
                0,
            )
        }?;
        Ok(ArrayMapping { ptr, len })
    }

    /// The start of the mapping, as an array of `T`.
    #[must_use]
    pub fn base<T>(&self) -> *const T {
        self.ptr.as_ptr().cast_const().cast()
    }
}

impl Drop for ArrayMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(); nothing uses it after this.
        if let Err(e) = unsafe { munmap(self.ptr, self.len.get()) } {
            log::warn!("unmapping a BPF array: {e}");
        }
    }
}

/// The kernel's comm cache (`COMMS`, [`tcptrace_common::comms`]), mapped:
/// the comms of the threads that the lean store names as owners by pid and
/// tid only.
pub struct CommCache {
    slots: ArrayMapping,
}

impl CommCache {
    /// Map `ebpf`'s `COMMS`.
    pub fn open(ebpf: &Ebpf) -> anyhow::Result<Self> {
        Ok(CommCache {
            slots: map_array::<CommSlot>(ebpf, names::COMMS, comms::SLOTS as usize)?,
        })
    }

    /// The comm and cgroup v2 id the cache holds for thread `thread` of
    /// process `process`; None if its slot went to another thread, or holds
    /// none.
    #[must_use]
    pub fn comm(&self, process: u32, thread: u32) -> Option<([u8; 16], u64)> {
        let pid_tgid = (u64::from(process) << 32) | u64::from(thread);
        let i = comms::slot_of(pid_tgid) as usize;
        // SAFETY: slot i < SLOTS lies within the mapping; CommSlot is plain
        // integers. A slot torn by the kernel fails its seal.
        let slot = unsafe { self.slots.base::<CommSlot>().add(i).read_volatile() };
        slot.comm_of(pid_tgid)
    }
}

/// The logs of every possible CPU, mapped, with a reader's place in each,
/// and the comm cache the records' owners are named from.
pub struct CpuLogs {
    logs: ArrayMapping,
    comms: CommCache,
    cursors: Vec<Cursor>,
    read: u64,
    lost: u64,
}

/// One CPU's log in the mapping.
struct View(*const CpuLog);

impl LogView for View {
    fn head(&self) -> u64 {
        // SAFETY: a log inside the live mapping; the kernel writes it
        // concurrently, so it is read with a volatile load, never a
        // reference. The fence keeps the slot reads after it.
        let h = unsafe { (&raw const (*self.0).head).read_volatile() };
        fence(Ordering::Acquire);
        h
    }

    fn slot(&self, seq: u64) -> LogRecord {
        let i = (seq & SLOT_MASK) as usize;
        // SAFETY: as in head(); slot i < SLOTS lies within the log, and
        // LogRecord is plain integers, valid for any bit pattern. A copy
        // torn by the writer fails its seal.
        let s = unsafe { (&raw const (*self.0).slots[i]).read_volatile() };
        fence(Ordering::Acquire);
        s
    }
}

/// A mmapable array of `ebpf`, mapped for `n` values of `T`.
fn map_array<T>(ebpf: &Ebpf, name: &str, n: usize) -> anyhow::Result<ArrayMapping> {
    let Some(Map::Array(data)) = ebpf.map(name) else {
        anyhow::bail!("the eBPF object has no {name} array (build mismatch)");
    };
    let len = NonZeroUsize::new(n * size_of::<T>()).with_context(|| format!("{name} is empty"))?;
    ArrayMapping::new(data, len).with_context(|| format!("mapping {name}"))
}

impl CpuLogs {
    /// Map `CPU_LOG`, sized by the loader for `cpus` CPUs, and `COMMS`.
    pub fn open(ebpf: &Ebpf, cpus: u32) -> anyhow::Result<Self> {
        let n = usize::try_from(cpus).context("CPU count")?;
        Ok(CpuLogs {
            logs: map_array::<CpuLog>(ebpf, names::CPU_LOG, n)?,
            comms: CommCache::open(ebpf)?,
            cursors: vec![Cursor::default(); n],
            read: 0,
            lost: 0,
        })
    }

    /// Every record logged since the last drain, as state records, all CPUs
    /// merged in time order (a connection's records come from any CPU).
    pub fn drain(&mut self) -> Vec<StateEvent> {
        let mut records = Vec::new();
        for (cpu, cursor) in self.cursors.iter_mut().enumerate() {
            // SAFETY: cpu < the CPU count the mapping was made for.
            let view = View(unsafe { self.logs.base::<CpuLog>().add(cpu) });
            self.lost += cursor.drain(&view, |r| records.push(*r));
        }
        records.sort_by_key(|r| r.ts_ns);
        self.read += records.len() as u64;
        records
            .iter()
            .map(|r| {
                let comm = self.comms.comm(r.tgid, r.tid).map_or([0; 16], |c| c.0);
                state_event(r, comm)
            })
            .collect()
    }

    /// Records read so far.
    #[must_use]
    pub fn read(&self) -> u64 {
        self.read
    }

    /// Records overwritten before they were read, or never intact.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost
    }
}
