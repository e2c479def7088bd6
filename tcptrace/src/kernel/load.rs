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
};
use thiserror::Error;

use crate::{
    kernel::{
        btf,
        counters::map_memlock,
        io_hooks::{self, IoHooks},
        maps::names,
        offsets::{self, SYSCALL_TRACEPOINTS, TRACEPOINTS},
        privileges,
        sizing::{SocketStore, approx_map_size, cpu_ring_bytes, mode_map_sizes, size_ring},
        tracefs::{Tracefs, TracefsError},
    },
    model::reset_reasons::ResetReasons,
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
    #[error(
        "--netns needs the network namespace of each socket, which the kernel's BTF locates, \
         and {0}"
    )]
    NetnsFilter(String),
    #[error(transparent)]
    IoFallback(#[from] io_hooks::FallbackError),
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
    /// Why `bind()`/`connect()` failures are not caught, when they were asked
    /// for (`Config::emit_failures`) and the kernel cannot give them.
    pub failures_unavailable: Option<String>,
    /// CPUs the per-CPU log (`CPU_LOG`) was sized for; 0 when no record
    /// is logged (`Config::log_old_states`).
    pub log_cpus: u32,
    /// The state rings (`STATE_RINGS`), one per possible CPU, in CPU order;
    /// none when the mode emits no state record (`Config::emit_old_states`).
    pub state_rings: Vec<RingBuf<MapData>>,
    /// Why records carry no network namespace, when they do not: the
    /// kernel's BTF is missing or lacks a member of the chain.
    pub netns_unavailable: Option<String>,
}

/// Where the kernel's BTF is read from: `TCPTRACE_BTF` (for tests of a
/// kernel without one), else [`btf::VMLINUX`].
fn btf_path() -> std::path::PathBuf {
    std::env::var_os("TCPTRACE_BTF").map_or_else(|| btf::VMLINUX.into(), Into::into)
}

/// Fill in `config.netns` from the kernel's BTF. Returns why records will
/// carry no namespace, if they will not (said once, here); without the task
/// chain only failed syscalls' records go without. `--netns` cannot work
/// without it.
fn netns_config(config: &mut Config) -> Result<Option<String>, LoadError> {
    let why = netns_offsets(config);
    if let Some(why) = &why {
        if config.netns_filter != 0 {
            return Err(LoadError::NetnsFilter(why.clone()));
        }
        eprintln!(
            "tcptrace: warning: records carry no network namespace ({why}): sockets of every \
             namespace are traced, but sock_diag, the sysctls and netstat are read in \
             tcptrace's own namespace only"
        );
    }
    Ok(why)
}

fn netns_offsets(config: &mut Config) -> Option<String> {
    let path = btf_path();
    match btf::kernel_offsets_at(&path) {
        Ok(k) => {
            config.netns.sk_net = k.netns.skc_net + k.netns.net_ptr;
            config.netns.net_inum = k.netns.net_ns + k.netns.ns_inum;
            match k.task {
                Ok(t) => {
                    config.netns.task_nsproxy = t.task_nsproxy;
                    config.netns.nsproxy_net = t.nsproxy_net;
                }
                Err(e) => {
                    log::warn!("failed bind()/connect() calls carry no network namespace: {e}");
                }
            }
            log::debug!("network namespace offsets: {:?}", config.netns);
            None
        }
        Err(e) => Some(e.to_string()),
    }
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
        .map_mut(names::STATE_RINGS)
        .ok_or(LoadError::MissingMap(names::STATE_RINGS))?;
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
        let ring = MapData::create(def, names::STATE_RING, None).map_err(err)?;
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

/// How each hot program reads its tracepoint record, logged for `-v`:
/// straight from the context where the layout is standard, else through a
/// copy at tracefs offsets (tests force the copy with
/// `TCPTRACE_COPY_RECORDS=1`, so that both paths keep working). Without the
/// recv/send tracepoints, their fexit fallback reads arguments, not records.
fn direct_ctx(offs: &tcptrace_common::config::TpOffsets, io_tracepoints: bool) -> u8 {
    use tcptrace_common::config::{DIRECT_DESTROY, DIRECT_SET_STATE, DIRECT_SOCK_LENGTH};
    let copy = std::env::var_os("TCPTRACE_COPY_RECORDS").is_some_and(|v| v == "1");
    let direct = if copy { 0 } else { offs.direct_ctx() };
    let access: Vec<String> = [
        ("inet_sock_set_state", DIRECT_SET_STATE, true),
        (
            "sock_recv_length/sock_send_length",
            DIRECT_SOCK_LENGTH,
            io_tracepoints,
        ),
        ("tcp_destroy_sock", DIRECT_DESTROY, true),
    ]
    .iter()
    .filter(|&&(_, _, present)| present)
    .map(|&(name, bit, _)| {
        let how = if direct & bit != 0 {
            "direct"
        } else {
            "copied"
        };
        format!("{name} {how}")
    })
    .collect();
    log::info!("record access: {}", access.join(", "));
    direct
}

/// The recv/send hooks, skipped without `Config::io_hooks`.
const IO_HOOKS: [&str; 2] = ["sock_recv_length", "sock_send_length"];

/// Load and attach the programs `config` needs, with `io` as the recv/send
/// hooks.
fn attach(ebpf: &mut Ebpf, config: &Config, io: IoHooks) -> Result<(), LoadError> {
    let syscalls: &[(&str, &str)] = if config.emit_failures != 0 {
        &SYSCALL_TRACEPOINTS
    } else {
        &[]
    };
    for &(group, name) in TRACEPOINTS.iter().chain(syscalls) {
        if IO_HOOKS.contains(&name) && (config.io_hooks == 0 || io == IoHooks::Fexit) {
            if config.io_hooks == 0 {
                log::info!("not attaching {group}:{name}: no analysis of this run needs it");
            }
            continue;
        }
        // inet_sock_set_state has a program per shape (see SetStateShape).
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
    if config.io_hooks != 0 && io == IoHooks::Fexit {
        io_hooks::attach_fexit(ebpf)?;
    }
    Ok(())
}

/// How many programs are attached: [`attach`] loads only the programs it
/// attaches, and a failed attach fails the load.
#[must_use]
pub fn attached(ebpf: &Ebpf) -> usize {
    ebpf.programs().filter(|(_, p)| p.fd().is_ok()).count()
}

/// Check privileges, read the kernel's tracepoint layouts, load and attach.
pub fn load(opts: LoadOptions) -> Result<Tracer, LoadError> {
    privileges::check()?;
    privileges::raise_memlock();
    let tracefs = Tracefs::find_or_mount()?;
    let (offs, reasons, io_tracepoints) = offsets::read(&tracefs)?;
    let io = IoHooks::choose(io_tracepoints);
    if opts.config.io_hooks != 0 {
        log::info!("recv/send hooks: {}", io.describe());
    }
    let mut config = opts.config;
    config.offsets = offs;
    config.direct_ctx = direct_ctx(&offs, io_tracepoints);
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
    let netns_unavailable = netns_config(&mut config)?;
    let ringbuf_bytes = size_ring(&mut config, opts.ringbuf_bytes);

    let store = SocketStore::new(&config, opts.max_sockets);
    config.lean_table_mask = store.table_buckets() - 1;
    let mut loader = EbpfLoader::new();
    loader
        .override_global("CONFIG", &config, true)
        .map_max_entries(names::EVENTS, ringbuf_bytes);
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
    let log_cpus = per_cpu(config.log_old_states != 0, names::CPU_LOG)?;
    let ring_cpus = per_cpu(config.emit_old_states != 0, names::STATE_RINGS)?;
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
                map_memlock(m).map_or_else(|| "?".to_owned(), |b| b.to_string())
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

    attach(&mut ebpf, &config, io)?;
    Ok(Tracer {
        ebpf,
        reasons,
        logger,
        failures_unavailable,
        log_cpus,
        state_rings,
        netns_unavailable,
    })
}
