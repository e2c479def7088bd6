//! `--netns`: the namespace a [`NetnsSpec`] names, or what it names that
//! does not exist.

use std::io;

use super::{
    Namespaces, NetnsError,
    scan::{self, PidLink},
};
use crate::model::netns::{Netns, NetnsSpec};

impl Namespaces {
    /// The namespace `spec` names, tracked from now on (even past
    /// [`MAX_NAMESPACES`](super::MAX_NAMESPACES)): a `/run/netns` name, the
    /// namespace of process `pid:N`, or `inode:N` if a process or a
    /// `/run/netns` mount is in it (after a refresh if it is not tracked).
    pub fn resolve(&mut self, spec: &NetnsSpec) -> Result<Netns, NetnsError> {
        match spec {
            NetnsSpec::Name(name) => {
                let path = self.roots.name_path(name);
                match scan::mounted(&path, self.nsfs_dev) {
                    Ok(Some(ns)) => {
                        self.entry(ns).ways.add_name(name);
                        Ok(ns)
                    }
                    Ok(None) => Err(NetnsError::NotMounted(name.clone())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Err(NetnsError::NoSuchName(name.clone()))
                    }
                    Err(error) => Err(NetnsError::Read { path, error }),
                }
            }
            NetnsSpec::Pid(pid) => match scan::read_pid_link(&self.roots, *pid) {
                Ok(Some(ns)) => {
                    if ns != self.own {
                        self.entry(ns).ways.add_pid(*pid);
                    }
                    Ok(ns)
                }
                Ok(None) => Err(NetnsError::Read {
                    path: self.roots.pid_link(*pid),
                    error: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the link names no network namespace",
                    ),
                }),
                Err(PidLink::Exited) => Err(NetnsError::NoSuchProcess(*pid)),
                Err(PidLink::Zombie) => Err(NetnsError::Zombie(*pid)),
                Err(PidLink::Unreadable(error)) => Err(NetnsError::Read {
                    path: self.roots.pid_link(*pid),
                    error,
                }),
            },
            NetnsSpec::Inode(inode) => {
                let ns = Netns(*inode);
                if !self.table.contains_key(&ns) {
                    self.refresh();
                }
                if self.table.contains_key(&ns) {
                    Ok(ns)
                } else {
                    Err(NetnsError::NoSuchInode(*inode))
                }
            }
        }
    }
}
