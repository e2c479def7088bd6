//! `tcp_destroy_sock`: the kernel frees a socket: its entry in the socket
//! store goes, and the pair-cache slot of its address is invalidated.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tcptrace_common::{
    Counter,
    config::{DESTROY_SKADDR_STANDARD, DIRECT_DESTROY},
    track::is_gap_at_destroy,
};

use crate::{
    lean_store::lean_slot,
    maps::{LEAN, SOCKS, count},
    owner_cache::{bump_io_generation, io_slot},
    tracepoint::{ctx_field, read},
};

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
                    // program run.
                    let s = unsafe { *slot };
                    // A transition missed on the way to CLOSE shows here;
                    // for sockets in the map or in SOCKS it would cost a
                    // lookup more per socket, and is not looked for.
                    if s.is_intact() && is_gap_at_destroy(s.sock.state) {
                        count(Counter::TransitionGaps);
                    }
                    // SAFETY: as above. Key 0: free for the next claim.
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
