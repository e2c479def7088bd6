//! Everything that touches BPF: privileges, tracefs and tracepoint offsets,
//! kernel struct offsets from BTF, loading and sizing, the configuration for
//! a plan, the rings and per-CPU logs, map readers and kernel counters, and
//! what the kernel offers (`--version -v`).

pub mod btf;
pub mod clock;
pub mod counters;
pub mod cpulog;
pub mod features;
pub mod io_hooks;
pub mod load;
pub mod maps;
pub mod offsets;
pub mod privileges;
pub mod rings;
pub mod settings;
pub mod sizing;
pub mod tracefs;
