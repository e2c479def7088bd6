//! Addresses of a live process to function names and <file:line>, with
//! blazesym, the symbolizer made for BPF tools. This runs only in the
//! symbolizer process ([`super::worker`]): blazesym opens and maps files the
//! traced process chooses.

use blazesym::{
    Pid,
    symbolize::{Input, Symbolized, Symbolizer, source::Process, source::Source},
};

use super::{perfmap, preflight::Checked};
use crate::model::stack::{Frame, Skipped};

fn to_frame(addr: u64, s: Option<&Symbolized<'_>>) -> Frame {
    match s {
        Some(Symbolized::Sym(sym)) => Frame {
            function: Some(sym.name.to_string()),
            addr,
            offset: sym.offset as u64,
            module: sym
                .module
                .as_deref()
                .map(|m| m.to_string_lossy().into_owned()),
            file: sym
                .code_info
                .as_deref()
                .map(|c| c.to_path().display().to_string()),
            line: sym.code_info.as_deref().and_then(|c| c.line),
            recovered: false,
            skipped: None,
        },
        _ => Frame::unresolved(addr, None),
    }
}

/// One blazesym symbolizer, with its per-file caches.
pub struct Resolver {
    inner: Symbolizer,
}

impl Resolver {
    pub fn new() -> Self {
        Self {
            inner: Symbolizer::new(),
        }
    }

    /// Resolve `addrs` of `pid` with what the preflight allows, and its
    /// anonymous executable addresses (JIT code) with its perf map.
    /// Addresses that cannot be resolved (the process exited, no symbols)
    /// come back with `function: None`, and with the refusal that explains
    /// it, if any. Also returns the perf map's lines that did not parse.
    pub fn frames(&self, pid: u32, addrs: &[u64], checked: &Checked) -> (Vec<Frame>, u64) {
        let mut source = Process::new(Pid::from(pid));
        source.debug_syms = checked.debug_refused.is_none();
        // blazesym's perf map reader mmaps the file and gives up on the
        // whole map at one line it cannot parse (JDK 17 writes `0x`
        // prefixes it does not take): tcptrace reads perf maps itself.
        source.perf_map = false;
        let mut frames = self.resolve(pid, addrs, &source);
        for f in &mut frames {
            if !checked.anonymous.contains(&f.addr) {
                f.skipped = checked.debug_refused.clone().map(Skipped::Refused);
            }
        }
        if checked.anonymous.is_empty() {
            return (frames, 0);
        }
        let (path, shown) = perfmap::path(pid);
        match perfmap::read(&path, &shown) {
            Ok(Some(map)) => {
                for f in frames
                    .iter_mut()
                    .filter(|f| checked.anonymous.contains(&f.addr))
                {
                    if let Some((name, offset)) = map.lookup(f.addr) {
                        f.function = Some(name.to_owned());
                        f.offset = offset;
                        // The module of a JIT frame is the map that named
                        // it: the name may be stale (see docs/internals.md).
                        f.module = Some(shown.clone());
                    }
                }
                (frames, map.bad_lines)
            }
            Ok(None) => (frames, 0),
            Err(why) => {
                for f in frames
                    .iter_mut()
                    .filter(|f| checked.anonymous.contains(&f.addr))
                {
                    f.skipped = Some(Skipped::Refused(why.clone()));
                }
                (frames, 0)
            }
        }
    }

    /// Resolve a batch; one address that a source cannot read (blazesym
    /// fails the whole batch, e.g. on a section of Debian's libc) must not
    /// cost the others, so failures fall back to one address at a time, then
    /// to the ELF symbol tables without DWARF.
    fn resolve(&self, pid: u32, addrs: &[u64], source: &Process) -> Vec<Frame> {
        let with_debug = Source::Process(source.clone());
        match self.inner.symbolize(&with_debug, Input::AbsAddr(addrs)) {
            Ok(v) => {
                return addrs
                    .iter()
                    .zip(v.iter().map(Some).chain(std::iter::repeat(None)))
                    .map(|(a, s)| to_frame(*a, s))
                    .collect();
            }
            Err(e) => log::debug!("symbolizing {} addresses in pid {pid}: {e}", addrs.len()),
        }
        let mut symtab_only = source.clone();
        symtab_only.debug_syms = false;
        let symtab_only = Source::Process(symtab_only);
        addrs
            .iter()
            .map(|a| {
                let one = std::slice::from_ref(a);
                let r = self
                    .inner
                    .symbolize(&with_debug, Input::AbsAddr(one))
                    .or_else(|_| self.inner.symbolize(&symtab_only, Input::AbsAddr(one)))
                    .inspect_err(|e| log::debug!("symbolizing {a:#x} in pid {pid}: {e}"));
                to_frame(*a, r.ok().as_ref().and_then(|v| v.first()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes_a_function_of_this_process() {
        #[inline(never)]
        fn marker() -> u64 {
            marker as *const () as u64
        }
        let r = Resolver::new();
        let ok = Checked::default();
        let (frames, _) = r.frames(std::process::id(), &[marker()], &ok);
        let f = frames[0].function.as_deref().unwrap_or_default();
        assert!(f.contains("marker"), "{frames:?}");
        let (gone, _) = r.frames(u32::MAX - 1, &[0x1234], &ok);
        assert_eq!(gone[0].function, None, "an exited process is not an error");
    }
}
