//! tcptrace's kernel side. Tracepoint programs only: this kernel family has no
//! kprobes, and refuses fentry programs.
//!
//! - `inet_sock_set_state`: every TCP state change; keeps the per-socket entry
//!   (state, entry time, owner) and emits one record with the dwell.
//! - `tcp_send_reset` / `tcp_receive_reset`: every RST, with its owner.
//! - `sock_recv_length` / `sock_send_length`: the owner's own I/O, the only
//!   reliable owner for sockets that were accepted (their first transitions run
//!   in softirq).
//! - `sys_exit_bind` / `sys_exit_connect` (`--timewait` only): a `bind()` that
//!   failed with EADDRINUSE, a `connect()` that failed with EADDRNOTAVAIL, with
//!   the address the caller asked for.
//!
//! Field offsets come from tracefs at start-up through the `CONFIG` global.
//!
//! The programs are in [`hooks`], one file per tracepoint family; the other
//! modules hold what they share: the settings ([`config`]), the shared maps
//! ([`maps`]), reading records ([`tracepoint`]) and the current task
//! ([`task`]), the socket stores ([`store`], [`full_store`], [`lean_store`],
//! [`sock_details`]), the pair cache of the I/O hooks ([`owner_cache`]),
//! user stacks ([`stacks`]), counters and histograms ([`hist`]), and
//! sending records ([`emit`]).
//!
//! rustc hands LLVM the crate's functions sorted by mangled name, module path
//! included, and LLVM inlines `#[inline(always)]` functions in that order,
//! which decides where the programs' stack slots and registers go. The
//! stores and `tracepoint` are top-level modules, not submodules, for that
//! order: under a `store` module, for instance, the stores' functions would
//! come after the `inet_sock_set_state` code that calls them and after the
//! `tcptrace_common` functions they call, and `inet_sock_set_state` would
//! compile to other (equivalent) code.
//! Renaming or nesting a module can change the generated code, not what it
//! does: compare the built object's programs before and after.
#![no_std]
#![no_main]

// First: its macros (`config!`, `setting!`) are in scope, by textual order,
// in every module declared after it.
#[macro_use]
mod config;

mod emit;
mod full_store;
mod hist;
mod hooks;
mod lean_store;
mod maps;
mod owner_cache;
mod sock_details;
mod stacks;
mod store;
mod task;
mod tracepoint;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
