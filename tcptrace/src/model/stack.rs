//! Symbolized user stacks, and the two corrections to a raw frame-pointer
//! walk: the caller of a frameless leaf (glibc's `recv`/`read` wrappers) is
//! put back from the word the kernel side saved at the user stack pointer
//! ([`splice`]), and a walk that stops early is called truncated
//! ([`is_truncated`]) rather than passed off as the whole path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a frame has no function name, or a name without a source line: the
/// symbolizer runs untrusted inputs (the traced process's files) under a
/// deadline and refuses files that are not what they should be.
/// In JSON it is its text: "timed out", "interrupted", "symbolizer failed",
/// or the refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Skipped {
    /// The symbolizer overran its deadline on this process.
    TimedOut,
    /// The run was stopping while the symbolizer worked on this process.
    Interrupted,
    /// The symbolizer process died (e.g. SIGBUS on a file truncated under it).
    Failed,
    /// A file the symbolizer would open was refused (not a regular file, too
    /// large); the text says which.
    Refused(String),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::TimedOut => f.write_str("timed out"),
            Skipped::Interrupted => f.write_str("interrupted"),
            Skipped::Failed => f.write_str("symbolizer failed"),
            Skipped::Refused(why) => f.write_str(why),
        }
    }
}

impl From<Skipped> for String {
    fn from(s: Skipped) -> String {
        s.to_string()
    }
}

impl From<String> for Skipped {
    fn from(s: String) -> Skipped {
        match s.as_str() {
            "timed out" => Skipped::TimedOut,
            "interrupted" => Skipped::Interrupted,
            "symbolizer failed" => Skipped::Failed,
            _ => Skipped::Refused(s),
        }
    }
}

/// One frame of a symbolized stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Function name, demangled; null when the address did not resolve.
    pub function: Option<String>,
    /// Instruction address in the process.
    #[serde(serialize_with = "hex", deserialize_with = "unhex")]
    pub addr: u64,
    /// Offset into the function.
    pub offset: u64,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Recovered from the user stack pointer (the caller of a frameless
    /// syscall wrapper), not from the frame-pointer chain.
    pub recovered: bool,
    /// What the symbolizer skipped for this frame: everything when
    /// `function` is null, the debug info (source lines) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skipped>,
}

impl Frame {
    /// A frame whose address did not resolve; `skipped` says why, if the
    /// symbolizer skipped it.
    #[must_use]
    pub fn unresolved(addr: u64, skipped: Option<Skipped>) -> Self {
        Frame {
            function: None,
            addr,
            offset: 0,
            module: None,
            file: None,
            line: None,
            recovered: false,
            skipped,
        }
    }
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn unhex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    let digits = s.strip_prefix("0x").unwrap_or(&s);
    u64::from_str_radix(digits, 16).map_err(serde::de::Error::custom)
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

/// Functions where a complete user stack ends: a thread's root. C and
/// Rust: the main thread's `_start` / `__libc_start_main`, other threads'
/// `start_thread` / `clone3`. Go: every goroutine (`main` included) starts
/// at `runtime.goexit` (`.abi0` in Go 1.17+ symbol tables); the system
/// stacks at `runtime.mstart` or `runtime.rt0_go`.
const ROOTS: [&str; 13] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone3",
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.mstart",
    "runtime.mstart.abi0",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
];

/// Functions that a thread's root calls: where a stack also ends when the
/// root itself (glibc's `start_thread`, a local symbol of a stripped libc)
/// did not resolve. The JVM's threads: the launcher's main thread and
/// HotSpot's (`thread_native_entry(Thread*)` demangled).
const THREAD_ENTRIES: [&str; 2] = ["ThreadJavaMain", "thread_native_entry("];

/// The deepest stack `bpf_get_stackid` records (`PERF_MAX_STACK_DEPTH`).
const MAX_DEPTH: usize = 127;

/// Whether a stack whose frames resolved to `functions` (innermost first) is
/// cut short.
#[must_use]
pub fn is_truncated(functions: &[Option<&str>]) -> bool {
    if functions.len() >= MAX_DEPTH {
        return true;
    }
    let root = |f: Option<&str>| f.is_some_and(|f| ROOTS.contains(&f));
    let entry =
        |f: Option<&str>| f.is_some_and(|f| THREAD_ENTRIES.iter().any(|e| f.starts_with(e)));
    match functions {
        [.., last] if root(*last) => false,
        [.., before, None] if entry(*before) => false,
        _ => true,
    }
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

    /// A goroutine's stack ends at `runtime.goexit`: complete, not a walk
    /// that lost its frame pointers.
    #[test]
    fn go_stacks_that_reach_goexit_are_complete() {
        let goroutine = [
            Some("internal/poll.(*FD).Read"),
            Some("net.(*conn).Read"),
            Some("main.leakyHandler"),
            Some("main.serve.gowrap1"),
            Some("runtime.goexit.abi0"),
        ];
        assert!(!is_truncated(&goroutine));
        let main_goroutine = [
            Some("main.main"),
            Some("runtime.main"),
            Some("runtime.goexit"),
        ];
        assert!(!is_truncated(&main_goroutine));
        assert!(
            is_truncated(&goroutine[..3]),
            "a goroutine whose walk stopped in its handler is cut short"
        );
    }

    /// glibc threads end at `start_thread` then `clone3`; the main thread
    /// at `_start`.
    #[test]
    fn glibc_thread_and_main_thread_stacks_are_complete() {
        let thread = [
            Some("__libc_recv"),
            Some("worker"),
            Some("start_thread"),
            Some("__clone3"),
        ];
        assert!(!is_truncated(&thread));
        let main = [
            Some("__libc_recv"),
            Some("main"),
            Some("__libc_start_call_main"),
            Some("__libc_start_main"),
            Some("_start"),
        ];
        assert!(!is_truncated(&main));
    }

    /// A JVM thread's stack ends in HotSpot's thread entry, then in
    /// `start_thread`, which a stripped libc does not name.
    #[test]
    fn jvm_thread_stacks_are_complete() {
        let main = [
            Some("int LeakServer.handle(java.net.Socket)"),
            Some("JavaMain"),
            Some("ThreadJavaMain"),
            None,
        ];
        assert!(!is_truncated(&main));
        let worker = [
            Some("java_start"),
            Some("thread_native_entry(Thread*)"),
            None,
        ];
        assert!(!is_truncated(&worker));
        assert!(
            is_truncated(&[Some("JavaMain"), None]),
            "an unnamed frame past another function is a lost walk"
        );
        assert!(is_truncated(&[Some("ThreadJavaMain"), None, None]));
    }
}
