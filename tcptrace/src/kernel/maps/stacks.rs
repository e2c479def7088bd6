//! The stack maps: `STACKS`, `STACK_SPILL` and the stack cache
//! `STACK_IDS`; reading a socket's stacks, and freeing the stacks no socket
//! refers to any more.

use std::{collections::HashSet, os::fd::AsFd as _};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData, MapError, StackTraceMap},
    sys::SyscallError,
};
use tcptrace_common::{STACK_DEPTH, SockInfo, StackLocation, StackRef};

use super::{ReadError, err, names, readable};
use crate::model::aging::Sweep;

/// The kernel's two stack maps: `STACKS`, and `STACK_SPILL` for the stacks
/// whose `STACKS` bucket was taken.
pub struct StackMaps<'a> {
    stacks: Option<StackTraceMap<&'a MapData>>,
    spill: Option<BpfHashMap<&'a MapData, u32, [u64; STACK_DEPTH]>>,
}

impl<'a> StackMaps<'a> {
    pub fn new(ebpf: &'a Ebpf) -> Result<Self, ReadError> {
        Ok(Self {
            stacks: ebpf
                .map(names::STACKS)
                .map(StackTraceMap::try_from)
                .transpose()
                .map_err(err(names::STACKS))?,
            spill: ebpf
                .map(names::STACK_SPILL)
                .map(BpfHashMap::try_from)
                .transpose()
                .map_err(err(names::STACK_SPILL))?,
        })
    }

    /// The frames of `r`, innermost first; None if it has none or they are
    /// gone.
    #[must_use]
    pub fn frames(&self, r: &StackRef) -> Option<Vec<u64>> {
        match r.location()? {
            StackLocation::Stacks(id) => {
                let trace = self.stacks.as_ref()?.get(&id, 0).ok()?;
                Some(trace.frames().iter().map(|f| f.ip).collect())
            }
            StackLocation::Spill(key) => {
                let words = self.spill.as_ref()?.get(&key, 0).ok()?;
                Some(words.into_iter().take_while(|&ip| ip != 0).collect())
            }
        }
    }
}

/// Frees the stacks no socket refers to any more: with address-space
/// randomisation every new process brings new stacks, and `STACKS` and
/// `STACK_SPILL` would fill for good. Given the marks of the sockets in
/// `SOCKS` ([`StackMarks`]), deletes the ids and keys that two consecutive
/// sweeps found unreferenced ([`Sweep`]). A stack captured between a pass's mark
/// and its deletes, under an id that was a suspect already, can still be
/// deleted: that socket then reports its stack as gone, or another stack
/// if one takes the bucket before the report.
#[derive(Debug, Default)]
pub struct StackRecycler {
    stacks: Sweep,
    spill: Sweep,
}

/// What one [`StackRecycler::sweep`] deleted and what it found in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recycled {
    pub stacks: u64,
    pub spill: u64,
    pub referenced: u64,
}

/// A handle of our own on map `name`, for deletes (the loaded object
/// lends its maps read-only).
fn own(ebpf: &Ebpf, name: &'static str) -> Result<Option<Map>, ReadError> {
    let Some(m) = ebpf.map(name) else {
        return Ok(None);
    };
    let (Map::StackTraceMap(data) | Map::HashMap(data) | Map::LruHashMap(data)) = m else {
        return Err(ReadError::Missing(name));
    };
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
        err(name)(MapError::from(SyscallError {
            call: "dup",
            io_error,
        }))
    })?;
    MapData::from_fd(fd)
        .and_then(Map::from_map_data)
        .map(Some)
        .map_err(err(name))
}

/// The stacks the sockets in `SOCKS` refer to, marked while a report reads
/// them ([`StackMarks::mark`]), for [`StackRecycler::sweep`].
#[derive(Debug, Default)]
pub struct StackMarks {
    ids: HashSet<u32>,
    keys: HashSet<u32>,
}

impl StackMarks {
    /// Forget the marks of the previous report.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.keys.clear();
    }

    /// Mark the stacks of one socket.
    pub fn mark(&mut self, info: &SockInfo) {
        for r in [info.first_stack, info.eof_stack] {
            match r.location() {
                Some(StackLocation::Stacks(id)) => self.ids.insert(id),
                Some(StackLocation::Spill(key)) => self.keys.insert(key),
                None => false,
            };
        }
    }
}

impl StackRecycler {
    /// Sweep `STACKS` and `STACK_SPILL` with the marks of every socket in
    /// `SOCKS`, read just before (by the same report, so the map is walked
    /// once).
    pub fn sweep(&mut self, ebpf: &Ebpf, marks: &StackMarks) -> Result<Recycled, ReadError> {
        let mut out = Recycled {
            referenced: (marks.ids.len() + marks.keys.len()) as u64,
            ..Recycled::default()
        };
        let mut stacks = own(ebpf, names::STACKS)?
            .map(|m| StackTraceMap::try_from(m).map_err(err(names::STACKS)))
            .transpose()?;
        let mut spill: Option<BpfHashMap<_, u32, [u64; STACK_DEPTH]>> =
            own(ebpf, names::STACK_SPILL)?
                .map(|m| BpfHashMap::try_from(m).map_err(err(names::STACK_SPILL)))
                .transpose()?;
        let doomed_ids = stacks.as_ref().map_or_else(Vec::new, |map| {
            let present: Vec<u32> = map.stack_ids().filter_map(readable).collect();
            self.stacks.pass(present, &marks.ids)
        });
        let doomed_keys = spill.as_ref().map_or_else(Vec::new, |map| {
            let present: Vec<u32> = map.keys().filter_map(readable).collect();
            self.spill.pass(present, &marks.keys)
        });
        // The cache first: once a stack is freed, no code path may hand its
        // id (or its bucket, taken by another stack) to a new socket.
        let refs: HashSet<u32> = doomed_ids
            .iter()
            .map(|id| id + 1)
            .chain(doomed_keys.iter().copied())
            .collect();
        forget_cached(ebpf, &refs)?;
        if let Some(map) = stacks.as_mut() {
            for id in doomed_ids {
                out.stacks += u64::from(map.remove(&id).is_ok());
            }
        }
        if let Some(map) = spill.as_mut() {
            for key in doomed_keys {
                out.spill += u64::from(map.remove(&key).is_ok());
            }
        }
        // And after: a path first walked between the two found its stack
        // still there and cached it. Left, that entry would hand the freed
        // id (or missing key) to every later socket of the path.
        forget_cached(ebpf, &refs)?;
        Ok(out)
    }
}

/// Delete the `STACK_IDS` entries whose stack (`StackRef::id_plus_one`) is
/// in `refs`.
fn forget_cached(ebpf: &Ebpf, refs: &HashSet<u32>) -> Result<(), ReadError> {
    if refs.is_empty() {
        return Ok(());
    }
    let Some(m) = own(ebpf, names::STACK_IDS)? else {
        return Ok(());
    };
    let mut map: BpfHashMap<_, u64, u32> =
        BpfHashMap::try_from(m).map_err(err(names::STACK_IDS))?;
    let stale: Vec<u64> = map
        .iter()
        .filter_map(readable)
        .filter(|(_, v)| refs.contains(v))
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        let _ = map.remove(&k);
    }
    Ok(())
}
