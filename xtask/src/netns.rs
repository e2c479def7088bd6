//! The network namespaces the benchmarks and the soak run their traffic
//! in: made fresh (a stale one from an interrupted run is deleted first)
//! with loopback up, and deleted when dropped, which frees every socket
//! left in it.

use std::{
    ffi::OsStr,
    process::{Command, Stdio},
};

use anyhow::Result;

use crate::status;

/// The namespace `name`, deleted on drop.
pub struct Netns(String);

impl Netns {
    pub fn create(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        status(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns(name);
        status(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `ip netns exec NAME PROGRAM`, arguments to add.
pub fn exec(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", name]).arg(program);
    c
}
