//! The ring buffers userspace drains: the shared `EVENTS` ring, registered
//! with the event loop so that the kernel can wake it, and the per-CPU state
//! rings, which wake nobody and are drained on a timer.

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

/// Wait for the kernel to wake the ring buffer's reader, then drain it with
/// `drain`.
pub async fn drain_when_woken<T>(
    ring: &mut AsyncFd<RingBuf<MapData>>,
    drain: impl FnOnce(&mut RingBuf<MapData>) -> T,
) -> anyhow::Result<T> {
    let mut guard = ring
        .readable_mut()
        .await
        .context("waiting on the ring buffer")?;
    let out = drain(guard.get_inner_mut());
    guard.clear_ready();
    Ok(out)
}
