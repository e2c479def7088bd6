//! The port filters (`--port`, `--lport`, `--rport`): a short list each,
//! and the one rule that the eBPF programs (reading `CONFIG`) and userspace
//! (filtering what sock_diag finds) both apply.

/// The most ports one list holds. The kernel compares a port with every
/// entry of a list, unrolled: a short list keeps that cheap and the
/// program small.
pub const MAX_PORTS: usize = 8;

/// One port list: its first `len` entries; `len` 0 means any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortList {
    /// How many entries of `ports` are used (at most [`MAX_PORTS`]).
    pub len: u16,
    pub ports: [u16; MAX_PORTS],
}

/// A list of more than [`MAX_PORTS`] distinct ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyPorts;

impl PortList {
    /// Any port: no filter.
    pub const ANY: Self = Self {
        len: 0,
        ports: [0; MAX_PORTS],
    };

    /// The list of `ports`, each kept once, in order. An empty slice is
    /// [`PortList::ANY`].
    pub fn new(ports: &[u16]) -> Result<Self, TooManyPorts> {
        let mut list = Self::ANY;
        for &p in ports {
            if list.as_slice().contains(&p) {
                continue;
            }
            let slot = list
                .ports
                .get_mut(usize::from(list.len))
                .ok_or(TooManyPorts)?;
            *slot = p;
            list.len += 1;
        }
        Ok(list)
    }

    /// The ports in use.
    #[must_use]
    pub fn as_slice(&self) -> &[u16] {
        let n = usize::from(self.len).min(MAX_PORTS);
        &self.ports[..n]
    }
}

/// A port list as [`matches`] reads it: a [`PortList`] in userspace; in
/// the eBPF programs, field by field from `CONFIG` ([`ReadPorts`]).
pub trait Ports {
    /// How many ports the list holds; 0: any port.
    fn count(&self) -> u16;
    /// Entry `i`, for `i < MAX_PORTS`.
    fn port(&self, i: usize) -> u16;
}

impl Ports for PortList {
    #[inline(always)]
    fn count(&self) -> u16 {
        self.len
    }

    #[inline(always)]
    fn port(&self, i: usize) -> u16 {
        self.ports.get(i).copied().unwrap_or(0)
    }
}

/// A list read through two functions: its count, and its entry `i`.
pub struct ReadPorts<C, P> {
    pub count: C,
    pub port: P,
}

impl<C: Fn() -> u16, P: Fn(usize) -> u16> Ports for ReadPorts<C, P> {
    #[inline(always)]
    fn count(&self) -> u16 {
        (self.count)()
    }

    #[inline(always)]
    fn port(&self, i: usize) -> u16 {
        (self.port)(i)
    }
}

/// Whether `list` lets a socket with ports `here` and `there` through: an
/// empty list lets every socket through, else one of its first `count`
/// entries (at most [`MAX_PORTS`]) must be `here` or `there` (the same port
/// twice for a list of local or remote ports). A constant number of steps,
/// each a load and two compares: the eBPF verifier's bounded loop,
/// unrolled.
#[inline(always)]
#[must_use]
pub fn matches(list: &impl Ports, here: u16, there: u16) -> bool {
    let used = usize::from(list.count());
    if used == 0 {
        return true;
    }
    let mut slot = 0;
    while slot < MAX_PORTS {
        if slot >= used {
            return false;
        }
        let port = list.port(slot);
        if port == here || port == there {
            return true;
        }
        slot += 1;
    }
    false
}

/// The three lists: `--port` (either end), `--lport`, `--rport`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortLists {
    /// Either endpoint's port must be in it.
    pub port: PortList,
    /// The local port must be in it.
    pub lport: PortList,
    /// The remote port must be in it.
    pub rport: PortList,
}

impl PortLists {
    /// No filter.
    pub const ANY: Self = Self {
        port: PortList::ANY,
        lport: PortList::ANY,
        rport: PortList::ANY,
    };
}

const _: () = assert!(core::mem::size_of::<PortList>() == 2 + 2 * MAX_PORTS);
const _: () = assert!(core::mem::size_of::<PortLists>() == 3 * (2 + 2 * MAX_PORTS));

#[cfg(test)]
mod tests;
