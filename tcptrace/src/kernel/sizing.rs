//! Sizing the kernel's maps and rings: the socket store for
//! `--max-sockets`, the rings, the maps a configuration does not use (made as
//! small as they may be), and the kernel memory all of it takes.

use tcptrace_common::{Config, table};

use crate::kernel::maps::names;

/// The least size of a CPU's state ring: 4096 one-line records.
pub const MIN_CPU_RING_BYTES: u32 = 256 << 10;

/// Each CPU's state ring for a ring size of `requested` bytes: an equal
/// share of it (the largest power of two that fits), at least
/// [`MIN_CPU_RING_BYTES`].
#[must_use]
pub fn cpu_ring_bytes(requested: u32, cpus: u32) -> u32 {
    let share = requested / cpus.max(1);
    let pow2 = if share == 0 { 0 } else { 1 << share.ilog2() };
    pow2.max(MIN_CPU_RING_BYTES)
}

/// Kernel memory of the socket map (`SOCKS`) with `entries` entries, as the
/// kernel accounts it (`memlock` in the map's `/proc/PID/fdinfo`). An LRU
/// hash map is preallocated: every entry is a 48-byte hash element header,
/// the 8-byte key and the value (8-byte aligned), and every hash bucket 16
/// bytes, buckets rounded up to a power of two, plus 960 bytes for the map:
/// 208 bytes per entry with the 136-byte `SockInfo` (the unit test holds
/// the kernel's own figures).
#[must_use]
pub fn socket_map_bytes(entries: u32) -> u64 {
    map_bytes(entries, std::mem::size_of::<tcptrace_common::SockInfo>())
}

/// Kernel memory of the lean socket store that `--hist` uses unless split by
/// comm, for `--max-sockets max_sockets`: the table's buckets (one cache line
/// per two sockets, in one mappable array, rounded up to pages) and the
/// `LEAN` LRU map's entries (24-byte [`LeanSock`] values).
///
/// [`LeanSock`]: tcptrace_common::LeanSock
#[must_use]
pub fn lean_store_bytes(max_sockets: u32) -> u64 {
    let (buckets, map_entries) = table::split(max_sockets);
    table_bytes(buckets)
        + map_bytes(
            map_entries,
            std::mem::size_of::<tcptrace_common::LeanSock>(),
        )
}

/// Bytes per entry of the lean store's LRU map (`LEAN`), for `--help`.
#[must_use]
pub fn lean_map_bytes_per_entry() -> u64 {
    bytes_per_entry(std::mem::size_of::<tcptrace_common::LeanSock>())
}

/// Bytes per entry of a power-of-two LRU map with `value`-byte values.
fn bytes_per_entry(value: usize) -> u64 {
    map_bytes(1 << 20, value) >> 20
}

/// Kernel memory of the lean table with `buckets` buckets: a mappable array
/// is allocated in whole pages, after a page for the map itself.
fn table_bytes(buckets: u32) -> u64 {
    const PAGE: u64 = 4096;
    let data = u64::from(buckets) * std::mem::size_of::<table::LeanBucket>() as u64;
    data.next_multiple_of(PAGE) + PAGE
}

fn map_bytes(entries: u32, value: usize) -> u64 {
    const ELEM_HEADER: u64 = 48;
    const KEY: u64 = 8;
    const BUCKET: u64 = 16;
    const MAP: u64 = 960;
    let value = (value as u64).next_multiple_of(8);
    let n = u64::from(entries);
    n * (ELEM_HEADER + KEY + value) + n.next_power_of_two() * BUCKET + MAP
}

/// Entries of a socket map not in use: the kernel preallocates every
/// entry, so the idle map is made as small as an LRU map may be.
const IDLE_MAP_ENTRIES: u32 = 64;

/// The per-socket maps and their sizes for `--max-sockets max_sockets`:
/// the lean store (`LEAN_TABLE` buckets and `LEAN` entries) with
/// `Config::lean_socks`, else the full `SOCKS` map, which also holds the
/// lean store's details with `Config::sock_details`; the maps not in use
/// are made as small as they may be. Also the kernel memory of what is in
/// use.
pub(crate) struct SocketStore {
    pub(crate) sizes: [(&'static str, u32); 3],
    pub(crate) in_use: &'static [&'static str],
    pub(crate) bytes: u64,
}

impl SocketStore {
    pub(crate) fn new(config: &Config, max_sockets: u32) -> Self {
        if config.lean_socks != 0 {
            let (buckets, map_entries) = table::split(max_sockets);
            let lean = SocketStore {
                sizes: [
                    (names::LEAN_TABLE, buckets),
                    (names::LEAN, map_entries),
                    (names::SOCKS, IDLE_MAP_ENTRIES),
                ],
                in_use: &[names::LEAN_TABLE, names::LEAN],
                bytes: lean_store_bytes(max_sockets),
            };
            if config.sock_details == 0 {
                return lean;
            }
            SocketStore {
                sizes: [lean.sizes[0], lean.sizes[1], (names::SOCKS, max_sockets)],
                in_use: &[names::LEAN_TABLE, names::LEAN, names::SOCKS],
                bytes: lean.bytes + socket_map_bytes(max_sockets),
            }
        } else {
            SocketStore {
                sizes: [
                    (names::LEAN_TABLE, 1),
                    (names::LEAN, IDLE_MAP_ENTRIES),
                    (names::SOCKS, max_sockets),
                ],
                in_use: &[names::SOCKS],
                bytes: socket_map_bytes(max_sockets),
            }
        }
    }

    /// The lean table's buckets.
    pub(crate) fn table_buckets(&self) -> u32 {
        self.sizes[0].1
    }
}

/// Whether the kernel side may put a record in the ring buffer with this
/// configuration: state records, resets or failed `bind()`/`connect()`
/// calls.
pub(crate) fn emits_records(config: &Config) -> bool {
    config.emit_old_states != 0 || config.emit_resets != 0 || config.emit_failures != 0
}

/// The ring buffer's size, and the wakeup threshold in `config` it sets:
/// `requested` (`--ringbuf-kib`), or one page, the smallest, for a mode that
/// emits no record (leak mode), instead of kernel memory it would never use.
pub(crate) fn size_ring(config: &mut Config, requested: u32) -> u32 {
    let bytes = if emits_records(config) {
        requested
    } else {
        u32::try_from(procfs::page_size()).unwrap_or(4096)
    };
    // Every mode also drains the ring on a timer; wake it early only when an
    // eighth of the ring waits, well before it could fill.
    config.wakeup_bytes = bytes / 8;
    bytes
}

/// Sizes of the maps that only some modes use: one entry where the mode
/// does not (the comm cache without noted comms; the stack maps, 16 MiB and
/// 4 MiB of kernel memory allocated up front, without stack captures).
/// `TCPTRACE_STACKS_ENTRIES` shrinks `STACKS`, for the tests that fill it
/// to see stacks go to `STACK_SPILL` ([`stacks_entries`]).
pub(crate) fn mode_map_sizes(config: &Config) -> Vec<(&'static str, u32)> {
    let mut sizes = Vec::new();
    if config.lean_socks == 0 || config.noted_new_states == 0 {
        sizes.push((names::COMMS, 1));
    }
    if config.capture_stacks == 0 {
        sizes.extend([
            (names::STACKS, 1),
            (names::STACK_SPILL, 1),
            (names::STACK_IDS, 1),
        ]);
    } else if let Some(n) = stacks_entries(std::env::var("TCPTRACE_STACKS_ENTRIES").ok().as_deref())
    {
        sizes.push((names::STACKS, n));
    }
    sizes
}

/// `STACKS`' size in the eBPF object, which `TCPTRACE_STACKS_ENTRIES` may
/// only shrink: a setcap'd binary must not let its environment ask for
/// more kernel memory than the object declares.
const STACKS_COMPILED: u32 = 16_384;

/// The `STACKS` size `TCPTRACE_STACKS_ENTRIES` asks for, if it is a number
/// from 1 to the compiled size; anything else is ignored, with a warning.
fn stacks_entries(v: Option<&str>) -> Option<u32> {
    let v = v?;
    match v.parse::<u32>() {
        Ok(n) if (1..=STACKS_COMPILED).contains(&n) => Some(n),
        _ => {
            log::warn!(
                "ignoring TCPTRACE_STACKS_ENTRIES={v:?}: it may only shrink the stack map \
                 (1 to {STACKS_COMPILED})"
            );
            None
        }
    }
}

/// Bytes per entry of a power-of-two socket map, for `--help`.
#[must_use]
pub fn socket_map_bytes_per_entry() -> u64 {
    bytes_per_entry(std::mem::size_of::<tcptrace_common::SockInfo>())
}

/// A map's kernel memory for messages: "about 25 MiB".
#[must_use]
pub fn approx_map_size(bytes: u64) -> String {
    format!("about {} MiB", (bytes + (1 << 19)) >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rings_share_the_ring_size_in_powers_of_two() {
        let mib = 1 << 20;
        assert_eq!(cpu_ring_bytes(4 * mib, 2), 2 * mib);
        assert_eq!(cpu_ring_bytes(4 * mib, 3), mib, "4/3 MiB rounds down");
        assert_eq!(cpu_ring_bytes(4 * mib, 1), 4 * mib);
        assert_eq!(cpu_ring_bytes(4 * mib, 64), MIN_CPU_RING_BYTES);
        assert_eq!(cpu_ring_bytes(4096, 2), MIN_CPU_RING_BYTES);
        assert_eq!(cpu_ring_bytes(4 * mib, 0), 4 * mib);
    }

    #[test]
    fn only_modes_that_emit_records_need_a_ring() {
        assert!(!emits_records(&Config::default()), "leak mode's kind");
        for c in [
            Config {
                emit_old_states: 1 << 8,
                ..Config::default()
            },
            Config {
                emit_resets: 1,
                ..Config::default()
            },
            Config {
                emit_failures: 1,
                ..Config::default()
            },
        ] {
            assert!(emits_records(&c), "{c:?}");
        }
    }

    #[test]
    fn only_modes_that_capture_stacks_get_stack_maps() {
        let hist = Config {
            lean_socks: 1,
            ..Config::default()
        };
        let sizes = mode_map_sizes(&hist);
        for name in ["STACKS", "STACK_SPILL", "STACK_IDS", "COMMS"] {
            assert!(sizes.contains(&(name, 1)), "{name}: {sizes:?}");
        }
        let leaks = Config {
            lean_socks: 1,
            capture_stacks: 1,
            ..Config::default()
        };
        if std::env::var_os("TCPTRACE_STACKS_ENTRIES").is_none() {
            assert_eq!(mode_map_sizes(&leaks), [("COMMS", 1)], "compiled sizes");
        }
    }

    #[test]
    fn the_stack_map_knob_only_shrinks() {
        assert_eq!(stacks_entries(None), None);
        assert_eq!(stacks_entries(Some("1")), Some(1));
        assert_eq!(stacks_entries(Some("16384")), Some(16_384));
        for bad in ["0", "16385", "4294967295", "99999999999", "x", ""] {
            assert_eq!(stacks_entries(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn socket_map_memory_matches_the_kernels_memlock() {
        // memlock as the kernel reports it (Linux 6.18 x86_64), with the
        // 136-byte SockInfo.
        if std::mem::size_of::<tcptrace_common::SockInfo>() == 136 {
            for (entries, memlock) in [
                (1024, 213_952),
                (65_536, 13_632_448),
                (131_072, 27_263_936),
                (262_144, 54_526_912),
                (1 << 20, 218_104_768),
            ] {
                assert_eq!(socket_map_bytes(entries), memlock, "{entries}");
            }
            assert_eq!(socket_map_bytes_per_entry(), 208);
        }
        // 100000 entries still have 131072 buckets.
        let per_entry = socket_map_bytes_per_entry();
        assert_eq!(
            socket_map_bytes(131_072) - socket_map_bytes(100_000),
            31_072 * (per_entry - 16)
        );
        assert_eq!(approx_map_size(socket_map_bytes(131_072)), "about 26 MiB");
        assert_eq!(approx_map_size(socket_map_bytes(262_144)), "about 52 MiB");
        // Half the sockets in table slots (32 bytes), half in the map
        // (24-byte values: 48 + 8 + 24 + 16 bytes per entry).
        assert_eq!(lean_store_bytes(1 << 20) >> 20, 64);
        assert_eq!(lean_map_bytes_per_entry(), 96);
        assert_eq!(approx_map_size(lean_store_bytes(131_072)), "about 8 MiB");
    }
}
