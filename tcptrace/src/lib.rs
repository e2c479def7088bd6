//! tcptrace: an eBPF TCP lifecycle tracer. The library holds everything the
//! binary does, so that the pure parts (decode, filter, format) are unit
//! tested without a kernel.

pub mod advice;
pub mod census;
pub mod cli;
pub mod cpulog;
pub mod event;
pub mod filter;
pub mod histmode;
pub mod histogram;
pub mod leakmode;
pub mod leaks;
pub mod loader;
pub mod metrics;
pub mod offsets;
pub mod output;
pub mod privileges;
pub mod procs;
pub mod sockdiag;
pub mod stats;
pub mod stop;
pub mod stream;
pub mod symbolize;
pub mod sysctl;
pub mod timewait;
pub mod tracefs;
pub mod twmode;
