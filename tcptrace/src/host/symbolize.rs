//! User stacks to function names (and <file:line> where debug info exists),
//! with blazesym, the symbolizer made for BPF tools. The stack model and its
//! corrections (splice, truncation) are `crate::model::stack`'s.

use std::collections::HashMap;

use blazesym::{
    Pid,
    symbolize::{Input, Symbolized, Symbolizer, source::Process, source::Source},
};

use crate::model::stack::{Frame, Stack, is_truncated, splice};

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
        },
        _ => Frame {
            function: None,
            addr,
            offset: 0,
            module: None,
            file: None,
            line: None,
            recovered: false,
        },
    }
}

/// Symbolizes addresses of live processes, caching per (pid, address).
pub struct Symbols {
    inner: Symbolizer,
    cache: HashMap<(u32, u64), Frame>,
}

impl Default for Symbols {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbols {
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Symbolizer::new(),
            cache: HashMap::new(),
        }
    }

    /// Forget cached addresses (processes come and go; addresses are reused).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Resolve `addrs` in process `pid`. Addresses that cannot be resolved
    /// (the process exited, no symbols) come back with `function: None`.
    pub fn frames(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.cache.contains_key(&(pid, *a)))
            .collect();
        if !missing.is_empty() {
            let frames = self.resolve(pid, &missing);
            for (addr, frame) in missing.iter().zip(frames) {
                self.cache.insert((pid, *addr), frame);
            }
        }
        addrs
            .iter()
            .filter_map(|a| self.cache.get(&(pid, *a)).cloned())
            .collect()
    }

    /// Resolve a batch; one address that a source cannot read (blazesym
    /// fails the whole batch, e.g. on a section of Debian's libc) must not
    /// cost the others, so failures fall back to one address at a time, then
    /// to the ELF symbol tables without DWARF.
    fn resolve(&self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let with_debug = Source::Process(Process::new(Pid::from(pid)));
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
        let mut symtab_only = Process::new(Pid::from(pid));
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

    /// Symbolize a captured stack: `ips` from the stack map, `sp_word` from
    /// the kernel side (0 if none).
    pub fn stack(&mut self, pid: u32, ips: &[u64], sp_word: u64) -> Stack {
        let mut all = ips.to_vec();
        if sp_word != 0 {
            all.push(sp_word);
        }
        let mut frames = self.frames(pid, &all);
        let sp_frame = (sp_word != 0).then(|| frames.pop()).flatten();
        let funcs: Vec<Option<&str>> = frames.iter().map(|f| f.function.as_deref()).collect();
        let at = sp_frame
            .as_ref()
            .and_then(|f| splice(ips, &funcs, sp_word, f.function.as_deref()));
        let truncated = is_truncated(&funcs);
        if let (Some(at), Some(mut f)) = (at, sp_frame) {
            f.recovered = true;
            frames.insert(at, f);
        }
        Stack { frames, truncated }
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
        let mut s = Symbols::new();
        let frames = s.frames(std::process::id(), &[marker()]);
        let f = frames[0].function.as_deref().unwrap_or_default();
        assert!(f.contains("marker"), "{frames:?}");
        let gone = s.frames(u32::MAX - 1, &[0x1234]);
        assert_eq!(gone[0].function, None, "an exited process is not an error");
    }
}
