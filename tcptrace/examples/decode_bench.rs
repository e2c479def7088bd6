//! Userspace micro-benchmark: decode + filter + format (JSON) of state
//! records, on one core. Run by `cargo xtask bench`; prints one JSON object.

use std::{hint::black_box, time::Instant};

use bytes::BytesMut;
use tcptrace::{
    kernel::clock::wall_clock,
    model::{
        filter::Filter,
        records::{as_bytes, decode},
        reset_reasons::ResetReasons,
    },
    report::event_line::{Format, Printer},
};
use tcptrace_common::{
    AF_INET, Addrs, Header, Owner, OwnerSource, RecordKind, StateEvent, TcpState,
};

fn main() {
    let mut addrs = Addrs {
        family: AF_INET,
        sport: 8080,
        dport: 40000,
        ..Addrs::default()
    };
    addrs.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    addrs.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let transitions = [
        (TcpState::Close, TcpState::SynSent),
        (TcpState::SynSent, TcpState::Established),
        (TcpState::Established, TcpState::FinWait1),
        (TcpState::FinWait1, TcpState::FinWait2),
        (TcpState::FinWait2, TcpState::Close),
    ];
    let records: Vec<Vec<u8>> = (0..1024u64)
        .map(|i| {
            let (old, new) = transitions[(i % 5) as usize];
            as_bytes(&StateEvent {
                header: Header {
                    kind: RecordKind::State as u32,
                    netns: 0,
                    ts_ns: 1_000_000 + i * 1000,
                },
                skaddr: 0xffff_0000 + i / 5,
                dwell_ns: 12_345,
                owner: Owner {
                    tgid: 4242,
                    tid: 4242,
                    comm: *b"loadgen\0\0\0\0\0\0\0\0\0",
                },
                addrs,
                old_state: old as u32,
                new_state: new as u32,
                owner_source: OwnerSource::Syscall as u32,
                _pad: 0,
            })
        })
        .collect();
    let printer = Printer::new(Format::Json, wall_clock(), ResetReasons::default());
    let filter = Filter::default();
    let mut out = BytesMut::with_capacity(1 << 20);
    let n: u64 = 2_000_000;
    let start = Instant::now();
    for i in 0..n {
        let rec = &records[usize::try_from(i % 1024).unwrap_or(0)];
        if let Ok(ev) = decode(black_box(rec))
            && filter.matches(&ev)
        {
            printer.write(&ev, None, &mut out);
        }
        if out.len() > 512 * 1024 {
            black_box(&out);
            out.clear();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = n as f64 / secs;
    println!("{{\"events\":{n},\"seconds\":{secs:.3},\"events_per_s\":{rate:.0}}}");
}
