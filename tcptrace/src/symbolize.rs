//! User stacks to function names (and <file:line> where debug info exists),
//! with blazesym, the symbolizer made for BPF tools.
//!
//! Two corrections to a raw frame-pointer walk:
//! - the caller of a frameless leaf (glibc's `recv`/`read` wrappers) is
//!   missing from the chain; the kernel side saved the word at the user stack
//!   pointer, which is that caller's return address, and [`splice`] puts it
//!   back when it is plausible, marked as recovered;
//! - a walk that stops early (a library without frame pointers) is reported
//!   as truncated rather than passed off as the whole path.

use std::collections::HashMap;

use blazesym::{
    Pid,
    symbolize::{Input, Symbolized, Symbolizer, source::Process, source::Source},
};
use serde::Serialize;

/// One frame of a symbolized stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// Function name, demangled; null when the address did not resolve.
    pub function: Option<String>,
    /// Instruction address in the process.
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    /// Offset into the function.
    pub offset: u64,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Recovered from the user stack pointer (the caller of a frameless
    /// syscall wrapper), not from the frame-pointer chain.
    pub recovered: bool,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// A symbolized stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The walk stopped before reaching the program's entry (no frame
    /// pointers past the last frame), so outer callers are missing.
    pub truncated: bool,
}

impl Stack {
    /// Function names, innermost first; unresolved frames as their address.
    #[must_use]
    pub fn path(&self) -> Vec<String> {
        self.frames
            .iter()
            .map(|f| {
                f.function
                    .clone()
                    .unwrap_or_else(|| format!("{:#x}", f.addr))
            })
            .collect()
    }
}

/// Functions where a complete user stack ends.
const ROOTS: [&str; 7] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone3",
];

/// The deepest stack `bpf_get_stackid` records (`PERF_MAX_STACK_DEPTH`).
const MAX_DEPTH: usize = 127;

/// Whether a stack whose frames resolved to `functions` (innermost first) is
/// cut short.
#[must_use]
pub fn is_truncated(functions: &[Option<&str>]) -> bool {
    if functions.len() >= MAX_DEPTH {
        return true;
    }
    !functions
        .last()
        .copied()
        .flatten()
        .is_some_and(|f| ROOTS.contains(&f))
}

/// Decide where the saved stack-pointer word goes. `ips` are the walked
/// frames, innermost first; `funcs` their resolved function names and
/// `sp_func` the name `sp_word` resolves to. Returns the index to insert at,
/// or `None` when the word is not a plausible missing caller: unresolved, a
/// repeat of the next frame, or in the same function as a neighbour (the leaf
/// had a frame after all).
#[must_use]
pub fn splice(
    ips: &[u64],
    funcs: &[Option<&str>],
    sp_word: u64,
    sp_func: Option<&str>,
) -> Option<usize> {
    let sp_func = sp_func?;
    if sp_word == 0 || ips.is_empty() {
        return None;
    }
    if ips.get(1) == Some(&sp_word) {
        return None;
    }
    let same = |i: usize| funcs.get(i).copied().flatten() == Some(sp_func);
    if same(0) || same(1) {
        return None;
    }
    Some(1)
}

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
    fn splices_the_caller_of_a_frameless_leaf() {
        // __libc_recv+13 -> main+175 -> __libc_start_call_main, with the
        // handler's return address at the user sp.
        let ips = [0x7f00_0000_1000, 0x5555_0000_2000, 0x7f00_0000_3000];
        let funcs = [
            Some("__libc_recv"),
            Some("main"),
            Some("__libc_start_call_main"),
        ];
        assert_eq!(
            splice(&ips, &funcs, 0x5555_0000_1500, Some("leaky_eof_handler")),
            Some(1)
        );
    }

    #[test]
    fn does_not_splice_implausible_words() {
        let ips = [0x1000, 0x2000];
        let funcs = [Some("__libc_recv"), Some("handler")];
        assert_eq!(
            splice(&ips, &funcs, 0x2000, Some("handler")),
            None,
            "repeat of frame 1"
        );
        assert_eq!(
            splice(&ips, &funcs, 0x2010, Some("handler")),
            None,
            "leaf had a frame"
        );
        assert_eq!(
            splice(&ips, &funcs, 0x1010, Some("__libc_recv")),
            None,
            "inside the leaf"
        );
        assert_eq!(
            splice(&ips, &funcs, 0x7ffd_0000, None),
            None,
            "a stack address, not code"
        );
        assert_eq!(splice(&ips, &funcs, 0, Some("x")), None);
        assert_eq!(splice(&[], &[], 0x10, Some("x")), None);
    }

    #[test]
    fn truncation_is_judged_by_the_outermost_frame() {
        assert!(!is_truncated(&[
            Some("recv"),
            Some("main"),
            Some("__libc_start_call_main")
        ]));
        assert!(!is_truncated(&[Some("f"), Some("start_thread")]));
        assert!(is_truncated(&[Some("__libc_recv")]), "walk stopped in libc");
        assert!(is_truncated(&[Some("recv"), None]));
        assert!(is_truncated(&[]));
        let deep = vec![Some("f"); MAX_DEPTH];
        assert!(is_truncated(&deep));
    }

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
