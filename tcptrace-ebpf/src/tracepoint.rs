//! Reading tracepoint records: straight from the context for a standard
//! layout, else from one copy at the offsets tracefs gave; the
//! `inet_sock_set_state` record either way, and the header of a record sent.

use aya_ebpf::{
    EbpfContext as _, helpers::generated, macros::map, maps::PerCpuArray,
    programs::TracePointContext,
};
use tcptrace_common::{AF_INET, Addrs, Header, RecordKind, config::SetStateOffsets};

/// `IPPROTO_TCP`, the protocol field of a TCP socket's records.
pub(crate) const IPPROTO_TCP: u16 = 6;

/// A tracepoint record copied with one helper call into a buffer (a per-CPU
/// scratch slot, or the stack for small records). Fields are then read at the
/// offsets from `CONFIG`, bounds-checked (the verifier requires it; a layout
/// larger than `N` fails as a read error). One copy replaces a
/// `bpf_probe_read_kernel` call per field, a hook's largest cost.
pub(crate) struct Raw<const N: usize> {
    buf: *const u8,
}

/// Record bytes copied for `inet_sock_set_state` and `tcp_receive_reset`
/// (72 on 6.x; the slack absorbs a field more on other kernels).
pub(crate) const RECORD: usize = 80;
/// Record bytes copied for `sock_recv_length`/`sock_send_length` (28 on 6.x).
pub(crate) const IO_RECORD: usize = 32;

/// Per-CPU room for one record: the 512-byte BPF stack has none to spare in
/// `inet_sock_set_state`.
#[map]
static SCRATCH: PerCpuArray<[u8; RECORD]> = PerCpuArray::with_max_entries(1, 0);

impl<const N: usize> Raw<N> {
    /// Copy the record into `dst`.
    #[inline(always)]
    pub(crate) fn fill(ctx: &TracePointContext, dst: *mut [u8; N]) -> Result<Self, i64> {
        // SAFETY: copies N bytes from the tracepoint record into a buffer of
        // N bytes we own; the helper faults safely. N is far below the record
        // buffer the kernel gives tracepoint programs (PERF_MAX_TRACE_SIZE).
        #[expect(clippy::cast_possible_truncation, reason = "N is a small constant")]
        let r = unsafe {
            generated::bpf_probe_read_kernel(dst.cast(), N as u32, ctx.as_ptr().cast_const())
        };
        if r < 0 {
            Err(r)
        } else {
            Ok(Raw {
                buf: dst.cast_const().cast(),
            })
        }
    }

    #[inline(always)]
    pub(crate) fn get<T: Copy>(&self, offset: u32) -> Result<T, i64> {
        let o = offset as usize;
        if o > N - core::mem::size_of::<T>() {
            return Err(-1);
        }
        // SAFETY: `buf` holds N initialised bytes and `o + size_of::<T>()`
        // is within them; read_unaligned because fields sit at the kernel's
        // offsets.
        Ok(unsafe { self.buf.add(o).cast::<T>().read_unaligned() })
    }
}

impl Raw<RECORD> {
    #[inline(always)]
    pub(crate) fn load(ctx: &TracePointContext) -> Result<Self, i64> {
        let slot = SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
        Self::fill(ctx, slot)
    }
}

/// One field of the tracepoint record, loaded straight from the context.
/// `OFFSET` must be a multiple of `T`'s size (the verifier's rule for
/// tracepoint contexts) and a constant, so that it lands in the load
/// instruction: the verifier refuses a context pointer moved by a register.
#[inline(always)]
pub(crate) fn ctx_field<T: Copy, const OFFSET: usize>(ctx: &TracePointContext) -> T {
    // SAFETY: the kernel hands tracepoint programs a buffer of
    // PERF_MAX_TRACE_SIZE bytes, and the verifier checks the offset, size and
    // alignment of every context load. Used only when userspace found the
    // standard layout, so that OFFSET is this field's offset.
    unsafe { ctx.as_ptr().cast::<u8>().add(OFFSET).cast::<T>().read() }
}

/// Sixteen address bytes from two 8-byte halves (aligned context loads).
#[inline(always)]
fn v6_bytes(lo: u64, hi: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&lo.to_ne_bytes());
    a[8..].copy_from_slice(&hi.to_ne_bytes());
    a
}

#[inline(always)]
pub(crate) fn read<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    // SAFETY: `offset` is a field offset of this tracepoint's record, read
    // from its tracefs `format` at start-up; bpf_probe_read_kernel checks it.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(i64::from)
}

#[inline(always)]
pub(crate) fn header(kind: RecordKind, netns: u32, ts_ns: u64) -> Header {
    Header {
        kind: kind as u32,
        netns,
        ts_ns,
    }
}

/// Read the address fields that `inet_sock_set_state` and `tcp_receive_reset`
/// share: separate v4 and v6 arrays, host-order ports.
#[inline(always)]
pub(crate) fn read_split_addrs(
    raw: &Raw<RECORD>,
    family: u16,
    sport: u16,
    dport: u16,
    off: [u32; 4],
) -> Result<Addrs, i64> {
    let [saddr, daddr, saddr_v6, daddr_v6] = off;
    let mut a = Addrs {
        family,
        sport,
        dport,
        ..Addrs::default()
    };
    if family == AF_INET {
        let s: [u8; 4] = raw.get(saddr)?;
        let d: [u8; 4] = raw.get(daddr)?;
        a.saddr[..4].copy_from_slice(&s);
        a.daddr[..4].copy_from_slice(&d);
    } else {
        a.saddr = raw.get(saddr_v6)?;
        a.daddr = raw.get(daddr_v6)?;
    }
    Ok(a)
}

/// The fixed-size fields of an `inet_sock_set_state` record.
pub(crate) struct SetStateHead {
    pub(crate) skaddr: u64,
    pub(crate) old: u32,
    pub(crate) new: u32,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) family: u16,
    pub(crate) protocol: u16,
}

/// An `inet_sock_set_state` record, wherever its fields are read from.
pub(crate) trait SetStateRecord {
    fn head(&self) -> Result<SetStateHead, i64>;
    fn addrs(&self, h: &SetStateHead) -> Result<Addrs, i64>;
}

/// The standard layout ([`SetStateOffsets::STANDARD`]), loaded straight
/// from the context: no helper call, no copy.
pub(crate) struct DirectSetState<'a>(pub(crate) &'a TracePointContext);

/// The standard `inet_sock_set_state` layout, for [`ctx_field`] offsets.
const STD: SetStateOffsets = SetStateOffsets::STANDARD;

impl SetStateRecord for DirectSetState<'_> {
    #[inline(always)]
    fn head(&self) -> Result<SetStateHead, i64> {
        let c = self.0;
        #[expect(clippy::cast_sign_loss, reason = "TCP states are 1..=12")]
        Ok(SetStateHead {
            skaddr: ctx_field::<u64, { STD.skaddr as usize }>(c),
            old: ctx_field::<i32, { STD.oldstate as usize }>(c) as u32,
            new: ctx_field::<i32, { STD.newstate as usize }>(c) as u32,
            sport: ctx_field::<u16, { STD.sport as usize }>(c),
            dport: ctx_field::<u16, { STD.dport as usize }>(c),
            family: ctx_field::<u16, { STD.family as usize }>(c),
            protocol: ctx_field::<u16, { STD.protocol as usize }>(c),
        })
    }

    #[inline(always)]
    fn addrs(&self, h: &SetStateHead) -> Result<Addrs, i64> {
        let c = self.0;
        let mut a = Addrs {
            family: h.family,
            sport: h.sport,
            dport: h.dport,
            ..Addrs::default()
        };
        if h.family == AF_INET {
            a.saddr[..4]
                .copy_from_slice(&ctx_field::<u32, { STD.saddr as usize }>(c).to_ne_bytes());
            a.daddr[..4]
                .copy_from_slice(&ctx_field::<u32, { STD.daddr as usize }>(c).to_ne_bytes());
        } else {
            a.saddr = v6_bytes(
                ctx_field::<u64, { STD.saddr_v6 as usize }>(c),
                ctx_field::<u64, { STD.saddr_v6 as usize + 8 }>(c),
            );
            a.daddr = v6_bytes(
                ctx_field::<u64, { STD.daddr_v6 as usize }>(c),
                ctx_field::<u64, { STD.daddr_v6 as usize + 8 }>(c),
            );
        }
        Ok(a)
    }
}

/// Any other layout: the record copied once, fields read at the offsets
/// tracefs gave.
pub(crate) struct CopiedSetState {
    pub(crate) raw: Raw<RECORD>,
    pub(crate) o: SetStateOffsets,
}

impl SetStateRecord for CopiedSetState {
    #[inline(always)]
    fn head(&self) -> Result<SetStateHead, i64> {
        let (raw, o) = (&self.raw, &self.o);
        let old: i32 = raw.get(o.oldstate)?;
        let new: i32 = raw.get(o.newstate)?;
        #[expect(clippy::cast_sign_loss, reason = "TCP states are 1..=12")]
        Ok(SetStateHead {
            skaddr: raw.get(o.skaddr)?,
            old: old as u32,
            new: new as u32,
            sport: raw.get(o.sport)?,
            dport: raw.get(o.dport)?,
            family: raw.get(o.family)?,
            protocol: raw.get(o.protocol)?,
        })
    }

    #[inline(always)]
    fn addrs(&self, h: &SetStateHead) -> Result<Addrs, i64> {
        let o = &self.o;
        read_split_addrs(
            &self.raw,
            h.family,
            h.sport,
            h.dport,
            [o.saddr, o.daddr, o.saddr_v6, o.daddr_v6],
        )
    }
}
