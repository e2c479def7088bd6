//! `tcp_send_reset` / `tcp_receive_reset`: every RST sent or received, sent
//! to userspace with the socket's state and owner.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext,
};
use tcptrace_common::{
    AF_INET, AF_INET6, Addrs, Counter, RESET_REASON_NONE, RST_RECEIVED, RST_SENT, RecordKind,
    ResetEvent,
    config::{SEND_RESET_SPLIT, SendResetOffsets},
};

use crate::{
    config::accepts,
    emit::{emit, submit_flags},
    maps::count,
    netns::sock_netns,
    store::tracked,
    tracepoint::{RECORD, Raw, header, read, read_split_addrs},
};

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
    let Some(addrs) = (if o.layout == SEND_RESET_SPLIT {
        split_reset_addrs(ctx, &o)?
    } else {
        sockaddr_reset_addrs(ctx, &o)?
    }) else {
        return Ok(());
    };
    let skaddr: u64 = read(ctx, o.skaddr)?;
    // A RST that answers a segment no socket matched has no socket, so no
    // namespace: 0, and `--netns` drops it.
    let netns = sock_netns(skaddr);
    if config!(netns_filter) != 0 && netns != config!(netns_filter) {
        return Ok(());
    }
    let state: i32 = read(ctx, o.state)?;
    let reason: u32 = if o.layout == SEND_RESET_SPLIT {
        RESET_REASON_NONE
    } else {
        read(ctx, o.reason)?
    };
    let (_, owner, owner_source) = tracked(skaddr);
    #[expect(clippy::cast_sign_loss, reason = "TCP states are 0..=12")]
    let ev = ResetEvent {
        // SAFETY: no preconditions.
        header: header(RecordKind::Reset, netns, unsafe { bpf_ktime_get_ns() }),
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

/// The endpoints of a sent reset in the 6.10+ layout, unless the filters
/// drop it.
#[inline(always)]
fn sockaddr_reset_addrs(
    ctx: &TracePointContext,
    o: &SendResetOffsets,
) -> Result<Option<Addrs>, i64> {
    // saddr/daddr are `struct sockaddr_in` or `sockaddr_in6` in 28 bytes:
    // family (host order), port (network order), then the address at byte 4
    // (v4) or byte 8 (v6). The sender of the RST is the local side.
    let s: [u8; 28] = read(ctx, o.saddr)?;
    let d: [u8; 28] = read(ctx, o.daddr)?;
    let family = u16::from_ne_bytes([s[0], s[1]]);
    let sport = u16::from_be_bytes([s[2], s[3]]);
    let dport = u16::from_be_bytes([d[2], d[3]]);
    if !accepts(family, sport, dport) {
        return Ok(None);
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
    Ok(Some(addrs))
}

/// The endpoints of a sent reset in the layout before 6.10 (the
/// `tcp_event_sk_skb` class), unless the filters drop it.
#[inline(always)]
fn split_reset_addrs(ctx: &TracePointContext, o: &SendResetOffsets) -> Result<Option<Addrs>, i64> {
    let raw = Raw::<RECORD>::load(ctx)?;
    let family: u16 = raw.get(o.family)?;
    let sport: u16 = raw.get(o.sport)?;
    let dport: u16 = raw.get(o.dport)?;
    if !accepts(family, sport, dport) {
        return Ok(None);
    }
    let addrs = read_split_addrs(
        &raw,
        family,
        sport,
        dport,
        [o.saddr, o.daddr, o.saddr_v6, o.daddr_v6],
    )?;
    Ok(Some(addrs))
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
    let netns = sock_netns(skaddr);
    if config!(netns_filter) != 0 && netns != config!(netns_filter) {
        return Ok(());
    }
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
        header: header(RecordKind::Reset, netns, unsafe { bpf_ktime_get_ns() }),
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
