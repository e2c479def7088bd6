//! tcptrace's kernel side: tracepoint programs only (this kernel family has
//! no kprobes and refuses fentry). `hooks` holds the programs, one file per
//! tracepoint family; the other modules hold what they share.
//! Mechanism: docs/internals.md, "The kernel side's modules".
#![no_std]
#![no_main]

// First: its macros (`config!`, `setting!`) are in scope, by textual order,
// in every module declared after it.
#[macro_use]
mod config;

// The module names and nesting decide the order in which LLVM inlines the
// programs' helpers, and so their code: after renaming or nesting one,
// compare the built object's programs (docs/internals.md).
mod emit;
mod full_store;
mod hist;
mod hooks;
mod lean_store;
mod maps;
mod netns;
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
