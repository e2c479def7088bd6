//! Generated events through both JSON writers: the hand-written one must
//! give the serde reference's bytes for every shape of event.

use bytes::BytesMut;

use super::{Format, Printer};
use crate::model::{clock::Clock, event::Event, records::decode, reset_reasons::ResetReasons};

/// splitmix64: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[usize::try_from(self.below(xs.len() as u64)).unwrap()]
    }

    /// Edge values often, any width otherwise.
    fn int(&mut self) -> u64 {
        match self.below(4) {
            0 => self.pick(&[0, 1, 9, 10, 99, 100, 255, 65_535, 1 << 32, u64::MAX]),
            1 => {
                let shift = self.below(64);
                self.next() >> shift
            }
            _ => self.next(),
        }
    }

    fn u32(&mut self) -> u32 {
        u32::try_from(self.int() & u64::from(u32::MAX)).unwrap()
    }

    fn byte(&mut self) -> u8 {
        u8::try_from(self.below(256)).unwrap()
    }

    fn addr(&mut self, v6: bool) -> [u8; 16] {
        let mut a = [0u8; 16];
        if !v6 {
            for b in &mut a[..4] {
                *b = self.pick(&[0, 1, 9, 10, 99, 100, 199, 200, 255, 127]);
            }
            return a;
        }
        match self.below(5) {
            // ::ffff:a.b.c.d and ::a.b.c.d
            0 | 1 => {
                if self.below(2) == 0 {
                    a[10..12].copy_from_slice(&[0xff, 0xff]);
                }
                a[12..].copy_from_slice(&self.addr(false)[..4]);
            }
            // ::, ::1, 1::
            2 => a[self.pick(&[0, 1, 15])] = self.pick(&[0, 1]),
            // Runs of zero groups of every length, where `::` applies.
            _ => {
                for group in a.chunks_exact_mut(2) {
                    if self.below(2) == 0 {
                        group.copy_from_slice(&[self.byte() >> 4, self.byte()]);
                    }
                }
            }
        }
        a
    }

    /// Up to 16 bytes of anything a kernel comm can hold.
    fn comm(&mut self) -> [u8; tcptrace_common::COMM_LEN] {
        let mut bytes = Vec::new();
        let len = self.below(17);
        while (bytes.len() as u64) < len {
            match self.below(9) {
                0 => bytes.push(b'"'),
                1 => bytes.push(b'\\'),
                2 => bytes.push(self.byte() & 0x1f),
                3 => bytes.push(0x7f),
                4 => bytes.push(self.byte() | 0x80),
                5 => bytes.extend_from_slice("é€😀".as_bytes()),
                _ => bytes.push(b'a' + u8::try_from(self.below(26)).unwrap()),
            }
        }
        let mut comm = [0u8; tcptrace_common::COMM_LEN];
        let n = bytes.len().min(comm.len());
        comm[..n].copy_from_slice(&bytes[..n]);
        comm
    }
}

/// Raw records of every field combination, through the real decoder.
fn generated_events(n: usize) -> Vec<Event> {
    use tcptrace_common::{
        AF_INET, AF_INET6, Addrs, DWELL_UNKNOWN, Header, RST_RECEIVED, RST_SENT, RecordKind,
        ResetEvent, StateEvent,
    };
    let mut rng = Rng(0x7c9_7ace);
    let mut ts = 0u64;
    (0..n)
        .map(|_| {
            // Mostly close together (the cached second), sometimes a jump.
            ts = if rng.below(8) == 0 {
                rng.int()
            } else {
                ts.wrapping_add(rng.below(400_000_000))
            };
            let v6 = rng.below(2) == 0;
            let addrs = Addrs {
                family: if v6 { AF_INET6 } else { AF_INET },
                sport: u16::try_from(rng.int() & 0xffff).unwrap(),
                dport: u16::try_from(rng.int() & 0xffff).unwrap(),
                _pad: 0,
                saddr: rng.addr(v6),
                daddr: rng.addr(v6),
            };
            let owner = tcptrace_common::Owner {
                tgid: rng.pick(&[0, 1, 4242, u32::MAX]),
                tid: rng.u32(),
                comm: rng.comm(),
            };
            let owner_source = u32::try_from(rng.below(5)).unwrap();
            let bytes = if rng.below(2) == 0 {
                crate::model::records::as_bytes(&StateEvent {
                    header: Header {
                        kind: RecordKind::State as u32,
                        netns: rng.pick(&[0, 4_026_531_840, u32::MAX]),
                        ts_ns: ts,
                    },
                    skaddr: rng.int(),
                    dwell_ns: if rng.below(4) == 0 {
                        DWELL_UNKNOWN
                    } else {
                        rng.int()
                    },
                    owner,
                    addrs,
                    old_state: u32::try_from(1 + rng.below(12)).unwrap(),
                    new_state: u32::try_from(1 + rng.below(12)).unwrap(),
                    owner_source,
                    _pad: 0,
                })
            } else {
                crate::model::records::as_bytes(&ResetEvent {
                    header: Header {
                        kind: RecordKind::Reset as u32,
                        netns: rng.pick(&[0, 4_026_532_281]),
                        ts_ns: ts,
                    },
                    skaddr: if rng.below(3) == 0 { 0 } else { rng.int() },
                    cookie: if rng.below(3) == 0 { 0 } else { rng.int() },
                    owner,
                    addrs,
                    direction: rng.pick(&[RST_SENT, RST_RECEIVED]),
                    // 0 and 13: no state.
                    state: u32::try_from(rng.below(14)).unwrap(),
                    reason: if rng.below(8) == 0 {
                        rng.u32()
                    } else {
                        rng.pick(&[0, 1, 2, 3, 4, 5, 77])
                    },
                    owner_source,
                })
            };
            decode(&bytes).unwrap()
        })
        .collect()
}

#[test]
fn json_writer_matches_the_serde_reference() {
    let events = generated_events(600);
    let reasons = ResetReasons::from_pairs(vec![
        (1, "NOT_SPECIFIED".into()),
        (2, "NO_SOCKET".into()),
        (3, "we\"ird\\name\n\u{1f}".into()),
        (4, "ünïcödé\u{7f}".into()),
        (5, String::new()),
    ]);
    let mut all = BytesMut::new();
    for epoch in [0, 1_700_000_000_000_000_000, 1_763_740_000_999_999_999] {
        let p = Printer::new(Format::Json, Clock::fixed(epoch), reasons.clone());
        for (i, ev) in events.iter().enumerate() {
            let container = [None, Some("0123456789abcdef"), Some("we\"ird\n")][i % 3];
            let (mut got, mut want) = (BytesMut::new(), BytesMut::new());
            p.write(ev, container, &mut got);
            p.serde_json_line(ev, container, &mut want);
            assert_eq!(got, want, "{ev:?}");
            all.extend_from_slice(&got);
        }
    }
    // The set covers what it is meant to.
    let all = String::from_utf8(all.to_vec()).unwrap();
    for needle in [
        "\"type\":\"state\"",
        "\"netns\":null",
        "\"netns\":4026531840",
        "\"container\":null",
        "\"container\":\"0123456789abcdef\"",
        "\"type\":\"reset\"",
        "\"family\":\"ipv6\"",
        "\"local\":{\"addr\":\"::ffff:",
        "\"remote\":{\"addr\":\"::\"",
        "\"pid\":null",
        "\"dwell_ns\":null",
        "\"state\":null",
        "\"reason\":null",
        "\"sock_cookie\":null",
        "\"reason\":\"UNKNOWN(",
        "\"reason\":\"we\\\"ird\\\\name\\n\\u001f\"",
        "\"skaddr\":\"0x0\"",
        "\\u00",
        "\\\"",
        "\\\\",
        "\u{7f}",
        "\u{fffd}",
        "€",
    ] {
        assert!(all.contains(needle), "no {needle} in the generated lines");
    }
}
