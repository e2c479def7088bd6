//! The settings: `CONFIG`, which userspace writes before load, the
//! `config!` macro that reads one of its fields at run time, and the
//! `inet_sock_set_state` variants, which compile some settings in.

use tcptrace_common::{
    Config,
    config::{SET_STATE_GENERIC, SET_STATE_VARIANTS, SetStateShape},
    ports::{MAX_PORTS, ReadPorts},
};

/// Written by userspace before load (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
// SAFETY: `Config` is plain integers; all-zero is a valid value.
pub(crate) static CONFIG: Config = unsafe { core::mem::zeroed() };

/// Read one field of `CONFIG`. Volatile, so the compiler does not fold the
/// all-zero initialiser into the code; one field at a time, because the BPF
/// stack is 512 bytes.
macro_rules! config {
    ($($field:tt)+) => {
        // SAFETY: CONFIG is a valid, aligned static; this reads one field.
        unsafe { core::ptr::read_volatile(&raw const $crate::config::CONFIG.$($field)+) }
    };
}

/// The family and port filters of `CONFIG`. Each port list's entries are
/// read only when its count is not 0, one at a time.
#[inline(always)]
pub(crate) fn accepts(family: u16, lport: u16, rport: u16) -> bool {
    macro_rules! list {
        ($l:ident) => {
            ReadPorts {
                count: || config!(ports.$l.len),
                port: |i: usize| port_at(&raw const CONFIG.ports.$l.ports, i),
            }
        };
    }
    tcptrace_common::config::accepts(
        config!(families),
        &list!(port),
        &list!(lport),
        &list!(rport),
        family,
        lport,
        rport,
    )
}

/// Entry `i` of a `CONFIG` port list, 0 past its end. Through a pointer,
/// not an index: an index's bounds check leaves a call to the panic
/// handler in the object, even where the check folds away.
#[inline(always)]
fn port_at(ports: *const [u16; MAX_PORTS], i: usize) -> u16 {
    if i >= MAX_PORTS {
        return 0;
    }
    // SAFETY: `ports` points into CONFIG, a valid static, and `i` is
    // within the array.
    unsafe { ports.cast::<u16>().add(i).read_volatile() }
}

/// A variant of the `inet_sock_set_state` program: the settings it was
/// compiled with ([`SetStateShape`]), or none (the generic program, which
/// reads them from `CONFIG`).
pub(crate) trait Variant {
    const SHAPE: Option<SetStateShape>;
    /// The program name userspace attaches for this variant.
    const NAME: &'static str;
}

/// The generic program.
pub(crate) struct Generic;

impl Variant for Generic {
    const SHAPE: Option<SetStateShape> = None;
    const NAME: &'static str = SET_STATE_GENERIC;
}

/// The variant compiled with `SET_STATE_VARIANTS[I]`'s shape.
pub(crate) struct Fixed<const I: usize>;

impl<const I: usize> Variant for Fixed<I> {
    const SHAPE: Option<SetStateShape> = Some(SET_STATE_VARIANTS[I].1);
    const NAME: &'static str = SET_STATE_VARIANTS[I].0;
}

/// One [`SetStateShape`] setting of variant `V`: a constant in a variant,
/// a `CONFIG` read in the generic program.
macro_rules! setting {
    ($v:ident, $field:ident) => {
        match $v::SHAPE {
            Some(shape) => shape.$field,
            None => config!($field),
        }
    };
}
