//! What a JVM's options say about its stacks and its attach mechanism, read
//! from its command line and the option variables the launcher reads
//! (`JDK_JAVA_OPTIONS`) and the JVM itself reads (`JAVA_TOOL_OPTIONS`,
//! `_JAVA_OPTIONS`).

/// The options that matter to tcptrace; the last occurrence of each wins,
/// as in HotSpot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JvmFlags {
    /// `-XX:+PreserveFramePointer`: JIT-compiled code keeps the frame
    /// pointer, so a frame-pointer walk goes through Java frames. Without
    /// it the walk stops at the first compiled frame.
    pub preserve_frame_pointer: bool,
    /// `-Xrs` or `-XX:+ReduceSignalUsage`: the JVM leaves SIGQUIT to its
    /// default action, which kills it, so the attach mechanism (started by
    /// SIGQUIT) must not be used.
    pub reduce_signal_usage: bool,
}

impl JvmFlags {
    /// From the options in the order the JVM applies them:
    /// `JAVA_TOOL_OPTIONS`, then the command line (with `JDK_JAVA_OPTIONS`,
    /// which the launcher puts in it), then `_JAVA_OPTIONS`.
    #[must_use]
    pub fn from_options<'a>(options: impl IntoIterator<Item = &'a str>) -> Self {
        let mut f = JvmFlags::default();
        for o in options {
            match o {
                "-XX:+PreserveFramePointer" => f.preserve_frame_pointer = true,
                "-XX:-PreserveFramePointer" => f.preserve_frame_pointer = false,
                "-Xrs" | "-XX:+ReduceSignalUsage" => f.reduce_signal_usage = true,
                "-XX:-ReduceSignalUsage" => f.reduce_signal_usage = false,
                _ => {}
            }
        }
        f
    }

    /// From a process's NUL-separated command line and environment.
    #[must_use]
    pub fn from_process(cmdline: &[u8], environ: &[u8]) -> Self {
        let var = |name: &str| {
            environ
                .split(|&b| b == 0)
                .filter_map(|kv| std::str::from_utf8(kv).ok())
                .filter_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .next_back()
                .unwrap_or("")
        };
        let args = cmdline
            .split(|&b| b == 0)
            .filter_map(|a| std::str::from_utf8(a).ok());
        let tool = var("JAVA_TOOL_OPTIONS").split_ascii_whitespace();
        let launcher = var("JDK_JAVA_OPTIONS").split_ascii_whitespace();
        let last = var("_JAVA_OPTIONS").split_ascii_whitespace();
        // The launcher puts JDK_JAVA_OPTIONS before the command line's own.
        Self::from_options(tool.chain(launcher).chain(args).chain(last))
    }
}

/// The note a leak report adds for a JVM whose Java frames a walk cannot
/// follow.
pub const NO_FRAME_POINTER_NOTE: &str = "this JVM runs without -XX:+PreserveFramePointer: \
     the stack walk stops at the first JIT-compiled Java frame; \
     start it with -XX:+PreserveFramePointer for whole Java paths";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_occurrence_wins() {
        let f = JvmFlags::from_options([
            "-XX:+PreserveFramePointer",
            "-cp",
            ".",
            "-XX:-PreserveFramePointer",
        ]);
        assert!(!f.preserve_frame_pointer);
        let f = JvmFlags::from_options(["-XX:-PreserveFramePointer", "-XX:+PreserveFramePointer"]);
        assert!(f.preserve_frame_pointer);
        assert!(!f.reduce_signal_usage);
    }

    #[test]
    fn reads_the_command_line_and_the_option_variables() {
        let cmdline = b"java\0-XX:+PreserveFramePointer\0-cp\0.\0Main\0";
        let f = JvmFlags::from_process(cmdline, b"PATH=/bin\0");
        assert!(f.preserve_frame_pointer && !f.reduce_signal_usage);
        let env = b"JAVA_TOOL_OPTIONS=-Xmx1g -Xrs\0HOME=/\0";
        let f = JvmFlags::from_process(b"java\0Main\0", env);
        assert!(!f.preserve_frame_pointer && f.reduce_signal_usage);
        let env = b"_JAVA_OPTIONS=-XX:-PreserveFramePointer\0";
        assert!(!JvmFlags::from_process(cmdline, env).preserve_frame_pointer);
        let env = b"JDK_JAVA_OPTIONS=-XX:+PreserveFramePointer\0";
        assert!(JvmFlags::from_process(b"java\0Main\0", env).preserve_frame_pointer);
    }
}
