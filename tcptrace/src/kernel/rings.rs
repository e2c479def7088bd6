//! The shared `EVENTS` ring, registered with the event loop so that the
//! kernel can wake it (the per-CPU state rings wake nobody: the loader
//! creates them and the runtime drains them on a timer).

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::kernel::maps::names;

/// Take the `EVENTS` ring buffer and register it with the event loop. It is
/// drained completely, then `clear_ready`.
pub fn take_events(ebpf: &mut aya::Ebpf) -> anyhow::Result<AsyncFd<RingBuf<MapData>>> {
    let ring = ebpf
        .take_map(names::EVENTS)
        .context("the eBPF object has no EVENTS map")?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    // SAFETY: the RingBuf owns the map fd, which stays open and refers to the
    // same ring buffer until the AsyncFd (and the RingBuf in it) is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with the event loop: {e}"))
}
