//! The tracepoint programs, one file per tracepoint family. Userspace loads
//! and attaches each program by its function's name.

mod destroy;
mod io;
mod io_fexit;
mod reset;
mod set_state;
mod sys_exit;
