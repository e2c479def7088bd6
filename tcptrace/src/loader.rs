//! Loading and attaching the eBPF programs: privilege check, tracefs, offsets
//! from the running kernel, `CONFIG`, then one tracepoint program each.

use aya::{
    Ebpf, EbpfLoader,
    maps::{ArrayOfMaps, MapData, MapError, RingBuf},
    programs::{ProgramError, TracePoint},
};
use tcptrace_common::{
    Config,
    config::{SET_STATE_GENERIC, set_state_program},
    table,
};
use thiserror::Error;

use crate::{
    offsets::{self, ResetReasons, SYSCALL_TRACEPOINTS, TRACEPOINTS},
    privileges,
    tracefs::{Tracefs, TracefsError},
};

/// The compiled eBPF object, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptrace"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("loading the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error(
        "creating the socket map with --max-sockets {max_sockets} ({memory} of preallocated \
         kernel memory): {source}; try a smaller --max-sockets"
    )]
    SocketMap {
        max_sockets: u32,
        /// `approx_map_size` of the map that failed.
        memory: String,
        #[source]
        source: std::io::Error,
    },
    #[error("counting the possible CPUs for the per-CPU log ({path}): {source}")]
    Cpus {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF program {0} is missing from the object (build mismatch)")]
    MissingProgram(&'static str),
    #[error("eBPF map {0} is missing from the object (build mismatch)")]
    MissingMap(&'static str),
    #[error("creating the per-CPU state rings ({bytes} bytes each; try a smaller --ringbuf-kib)")]
    StateRings {
        bytes: u32,
        #[source]
        source: MapError,
    },
    #[error("loading eBPF program {name} (the kernel verifier refused it?): {source}")]
    Load {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching to tracepoint {group}:{name}: {source}")]
    Attach {
        group: &'static str,
        name: &'static str,
        #[source]
        source: ProgramError,
    },
}

/// A loaded, attached tracer. Dropping it detaches everything.
pub struct Tracer {
    pub ebpf: Ebpf,
    pub reasons: ResetReasons,
    /// Drains aya-log records from the eBPF side.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The configuration the programs were loaded with (filters, modes,
    /// offsets), for userspace to apply the same filters to what sock_diag
    /// finds.
    pub config: Config,
    /// Why `bind()`/`connect()` failures are not caught, when they were asked
    /// for (`Config::emit_failures`) and the kernel cannot give them.
    pub failures_unavailable: Option<String>,
    /// CPUs the per-CPU log (`CPU_LOG`) was sized for; 0 when the mode
    /// logs nothing (`Config::log_old_states`).
    pub log_cpus: u32,
    /// The state rings (`STATE_RINGS`), one per possible CPU, in CPU order;
    /// none when the mode emits no state record (`Config::emit_old_states`).
    pub state_rings: Vec<RingBuf<MapData>>,
}

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

/// Create one state ring of `bytes` for each of `cpus` CPUs and put it in
/// `STATE_RINGS`, before any program that writes them is attached.
fn create_state_rings(
    ebpf: &mut Ebpf,
    cpus: u32,
    bytes: u32,
) -> Result<Vec<RingBuf<MapData>>, LoadError> {
    let err = |source: MapError| LoadError::StateRings { bytes, source };
    let outer = ebpf
        .map_mut("STATE_RINGS")
        .ok_or(LoadError::MissingMap("STATE_RINGS"))?;
    let mut outer: ArrayOfMaps<&mut MapData> = ArrayOfMaps::try_from(outer).map_err(err)?;
    let mut rings = Vec::new();
    for cpu in 0..cpus {
        let def = aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
            0,
            0,
            bytes,
            0,
        );
        let ring = MapData::create(def, "STATE_RING", None).map_err(err)?;
        outer.set(cpu, &ring, 0).map_err(err)?;
        rings.push(RingBuf::try_from(aya::maps::Map::RingBuf(ring)).map_err(err)?);
    }
    Ok(rings)
}

/// What to load.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Filters and modes; offsets are filled in from tracefs.
    pub config: Config,
    /// Ring-buffer size in bytes: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
    /// Sockets tracked at once (`--max-sockets`): the entries of the `SOCKS`
    /// LRU map, or in lean mode the lean table's slots and the `LEAN` map's
    /// entries together ([`tcptrace_common::table::split`]).
    pub max_sockets: u32,
}

/// Kernel memory of the socket map (`SOCKS`) with `entries` entries, as the
/// kernel accounts it (`memlock` in the map's `/proc/PID/fdinfo`). An LRU
/// hash map is preallocated: every entry is a 48-byte hash element header,
/// the 8-byte key and the value (8-byte aligned), and every hash bucket 16
/// bytes, buckets rounded up to a power of two, plus 896 bytes for the map.
/// Measured on Linux 6.18 `x86_64` with the 120-byte `SockInfo`: memlock
/// 197504, 12583808, 25166720, 50332544 and 201327488 bytes for 1024, 64Ki,
/// 128Ki, 256Ki and 1Mi entries, i.e. 192 bytes per entry.
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
    const MAP: u64 = 896;
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
struct SocketStore {
    sizes: [(&'static str, u32); 3],
    in_use: &'static [&'static str],
    bytes: u64,
}

impl SocketStore {
    fn new(config: &Config, max_sockets: u32) -> Self {
        if config.lean_socks != 0 {
            let (buckets, map_entries) = table::split(max_sockets);
            let lean = SocketStore {
                sizes: [
                    ("LEAN_TABLE", buckets),
                    ("LEAN", map_entries),
                    ("SOCKS", IDLE_MAP_ENTRIES),
                ],
                in_use: &["LEAN_TABLE", "LEAN"],
                bytes: lean_store_bytes(max_sockets),
            };
            if config.sock_details == 0 {
                return lean;
            }
            SocketStore {
                sizes: [lean.sizes[0], lean.sizes[1], ("SOCKS", max_sockets)],
                in_use: &["LEAN_TABLE", "LEAN", "SOCKS"],
                bytes: lean.bytes + socket_map_bytes(max_sockets),
            }
        } else {
            SocketStore {
                sizes: [
                    ("LEAN_TABLE", 1),
                    ("LEAN", IDLE_MAP_ENTRIES),
                    ("SOCKS", max_sockets),
                ],
                in_use: &["SOCKS"],
                bytes: socket_map_bytes(max_sockets),
            }
        }
    }

    /// The lean table's buckets.
    fn table_buckets(&self) -> u32 {
        self.sizes[0].1
    }
}

/// Whether the kernel side may put a record in the ring buffer with this
/// configuration: state records, resets or failed `bind()`/`connect()`
/// calls.
fn emits_records(config: &Config) -> bool {
    config.emit_old_states != 0 || config.emit_resets != 0 || config.emit_failures != 0
}

/// The ring buffer's size, and the wakeup threshold in `config` it sets:
/// `requested` (`--ringbuf-kib`), or one page, the smallest, for a mode that
/// emits no record (leak mode), instead of kernel memory it would never use.
fn size_ring(config: &mut Config, requested: u32) -> u32 {
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
/// `TCPTRACE_STACKS_ENTRIES` sets `STACKS`' size, for the tests that fill it
/// to see stacks go to `STACK_SPILL`.
fn mode_map_sizes(config: &Config) -> Vec<(&'static str, u32)> {
    let mut sizes = Vec::new();
    if config.lean_socks == 0 || config.noted_new_states == 0 {
        sizes.push(("COMMS", 1));
    }
    if config.capture_stacks == 0 {
        sizes.extend([("STACKS", 1), ("STACK_SPILL", 1)]);
    } else if let Some(n) = std::env::var("TCPTRACE_STACKS_ENTRIES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n > 0)
    {
        sizes.push(("STACKS", n));
    }
    sizes
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

/// How each hot program reads its tracepoint record, for `-v`: straight from
/// the context (the standard layout) or through a copy at tracefs offsets.
fn record_access(direct: u8) -> String {
    use tcptrace_common::config::{DIRECT_DESTROY, DIRECT_SET_STATE, DIRECT_SOCK_LENGTH};
    [
        ("inet_sock_set_state", DIRECT_SET_STATE),
        ("sock_recv_length/sock_send_length", DIRECT_SOCK_LENGTH),
        ("tcp_destroy_sock", DIRECT_DESTROY),
    ]
    .iter()
    .map(|&(name, bit)| {
        let how = if direct & bit != 0 {
            "direct"
        } else {
            "copied"
        };
        format!("{name} {how}")
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// The recv/send hooks, skipped without `Config::io_hooks`.
const IO_HOOKS: [&str; 2] = ["sock_recv_length", "sock_send_length"];

/// Load and attach the programs `config`'s mode needs.
fn attach(ebpf: &mut Ebpf, config: &Config) -> Result<(), LoadError> {
    let syscalls: &[(&str, &str)] = if config.emit_failures != 0 {
        &SYSCALL_TRACEPOINTS
    } else {
        &[]
    };
    for &(group, name) in TRACEPOINTS.iter().chain(syscalls) {
        if config.io_hooks == 0 && IO_HOOKS.contains(&name) {
            log::info!("not attaching {group}:{name}: this mode does not need it");
            continue;
        }
        // inet_sock_set_state has a program per mode (see SetStateShape).
        let program = if name == SET_STATE_GENERIC {
            set_state_program(config)
        } else {
            name
        };
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(LoadError::MissingProgram(program))?
            .try_into()
            .map_err(|source| LoadError::Load {
                name: program,
                source,
            })?;
        prog.load().map_err(|source| LoadError::Load {
            name: program,
            source,
        })?;
        prog.attach(group, name)
            .map_err(|source| LoadError::Attach {
                group,
                name,
                source,
            })?;
        log::info!("attached {group}:{name} (program {program})");
    }
    Ok(())
}

/// Check privileges, read the kernel's tracepoint layouts, load and attach.
pub fn load(opts: LoadOptions) -> Result<Tracer, LoadError> {
    privileges::check()?;
    privileges::raise_memlock();
    let tracefs = Tracefs::find_or_mount()?;
    let (offs, reasons) = offsets::read(&tracefs)?;
    let mut config = opts.config;
    config.offsets = offs;
    // Standard layouts are read straight from the tracepoint context; the
    // copy at tracefs offsets stays for the others, and tests force it with
    // TCPTRACE_COPY_RECORDS=1 so that both paths keep working.
    config.direct_ctx = if std::env::var_os("TCPTRACE_COPY_RECORDS").is_some_and(|v| v == "1") {
        0
    } else {
        offs.direct_ctx()
    };
    log::info!("record access: {}", record_access(config.direct_ctx));
    // Failures come from optional tracepoints: without them --timewait still
    // has its census, and says what it cannot see.
    let mut failures_unavailable = None;
    if config.emit_failures != 0 {
        if cfg!(target_arch = "x86_64") {
            match offsets::sys_exit_ret(&tracefs) {
                Ok(o) => config.offsets.sys_exit_ret = o,
                Err(e) => failures_unavailable = Some(e.to_string()),
            }
        } else {
            failures_unavailable =
                Some("reading syscall arguments is implemented for x86_64 only".to_owned());
        }
        if failures_unavailable.is_some() {
            config.emit_failures = 0;
        }
    }
    log::debug!("tracepoint offsets: {:?}", config.offsets);
    let ringbuf_bytes = size_ring(&mut config, opts.ringbuf_bytes);

    let store = SocketStore::new(&config, opts.max_sockets);
    config.lean_table_mask = store.table_buckets() - 1;
    let mut loader = EbpfLoader::new();
    loader
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", ringbuf_bytes);
    for (name, entries) in store.sizes {
        loader.map_max_entries(name, entries);
    }
    for (name, entries) in mode_map_sizes(&config) {
        loader.map_max_entries(name, entries);
    }
    // One log per possible CPU for the modes that log state records, one
    // state ring per possible CPU for those that emit them:
    // bpf_get_smp_processor_id() is below that count.
    let mut per_cpu = |wanted: bool, map: &'static str| -> Result<u32, LoadError> {
        if !wanted {
            return Ok(0);
        }
        let n = aya::util::nr_cpus().map_err(|(path, source)| LoadError::Cpus { path, source })?;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        loader.map_max_entries(map, n);
        Ok(n)
    };
    let log_cpus = per_cpu(config.log_old_states != 0, "CPU_LOG")?;
    let ring_cpus = per_cpu(config.emit_old_states != 0, "STATE_RINGS")?;
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| match e {
        aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error })
            if store.in_use.contains(&name.as_str()) =>
        {
            LoadError::SocketMap {
                max_sockets: opts.max_sockets,
                memory: approx_map_size(store.bytes),
                source: io_error,
            }
        }
        e => LoadError::Object(e),
    })?;

    for &(name, entries) in &store.sizes {
        if !store.in_use.contains(&name) {
            continue;
        }
        if let Some(aya::maps::Map::LruHashMap(m) | aya::maps::Map::Array(m)) = ebpf.map(name) {
            log::info!(
                "socket store ({name}): {entries} entries, {} bytes of kernel memory (memlock)",
                crate::stats::map_memlock(m).map_or_else(|| "?".to_owned(), |b| b.to_string())
            );
        }
    }

    // The eBPF side logs only rare failures (a socket-map insert refused);
    // the event loop drains them into the `log` facade.
    let logger = aya_log::EbpfLogger::init(&mut ebpf)
        .inspect_err(|e| log::debug!("eBPF logger not initialised: {e}"))
        .ok();

    let state_rings = if ring_cpus == 0 {
        Vec::new()
    } else {
        let bytes = cpu_ring_bytes(opts.ringbuf_bytes, ring_cpus);
        log::info!("state rings: {ring_cpus} of {bytes} bytes, one per possible CPU");
        create_state_rings(&mut ebpf, ring_cpus, bytes)?
    };

    attach(&mut ebpf, &config)?;
    Ok(Tracer {
        ebpf,
        reasons,
        logger,
        config,
        failures_unavailable,
        log_cpus,
        state_rings,
    })
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
        for name in ["STACKS", "STACK_SPILL", "COMMS"] {
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
    fn socket_map_memory_matches_the_kernels_memlock() {
        // memlock measured on Linux 6.18 x86_64 with the 120-byte SockInfo.
        if std::mem::size_of::<tcptrace_common::SockInfo>() == 120 {
            for (entries, memlock) in [
                (1024, 197_504),
                (65_536, 12_583_808),
                (131_072, 25_166_720),
                (262_144, 50_332_544),
                (1 << 20, 201_327_488),
            ] {
                assert_eq!(socket_map_bytes(entries), memlock, "{entries}");
            }
            assert_eq!(socket_map_bytes_per_entry(), 192);
        }
        // 100000 entries still have 131072 buckets.
        let per_entry = socket_map_bytes_per_entry();
        assert_eq!(
            socket_map_bytes(131_072) - socket_map_bytes(100_000),
            31_072 * (per_entry - 16)
        );
        assert_eq!(approx_map_size(socket_map_bytes(131_072)), "about 24 MiB");
        assert_eq!(approx_map_size(socket_map_bytes(262_144)), "about 48 MiB");
        // Half the sockets in table slots (32 bytes), half in the map
        // (24-byte values: 48 + 8 + 24 + 16 bytes per entry).
        assert_eq!(lean_store_bytes(1 << 20) >> 20, 64);
        assert_eq!(lean_map_bytes_per_entry(), 96);
        assert_eq!(approx_map_size(lean_store_bytes(131_072)), "about 8 MiB");
    }
}
