//! Perf maps: the `/tmp/perf-<pid>.map` files in which JIT runtimes (the
//! JVM's `Compiler.perfmap`, Node's `--perf-basic-prof`, Python's `-X perf`)
//! name the code they generate, one `START SIZE name` line per symbol, in
//! hex with or without `0x` (JDK 17 writes `0x`).
//!
//! The traced process writes the file, so a line that does not parse is
//! counted and skipped, never fatal; names are kept as written (the report
//! escapes them).

/// The name the JVM gives its template interpreter's code, and what a
/// report calls a frame in it.
const JVM_INTERPRETER: &str = "Interpreter";
pub const INTERPRETED_JAVA: &str = "[interpreted Java]";

/// A parsed perf map: symbols by start address.
#[derive(Debug, Default)]
pub struct PerfMap {
    /// (start, size, name), sorted by start.
    symbols: Vec<(u64, u64, String)>,
    /// Lines that did not parse.
    pub bad_lines: u64,
}

fn hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// One line: `START SIZE name`, the name being the rest of the line.
fn parse_line(line: &str) -> Option<(u64, u64, String)> {
    let line = line.trim_end_matches('\r');
    let (start, rest) = line.split_once(|c: char| c.is_ascii_whitespace())?;
    let rest = rest.trim_start();
    let (size, name) = rest.split_once(|c: char| c.is_ascii_whitespace())?;
    let name = name.trim();
    let (start, size) = (hex(start)?, hex(size)?);
    if name.is_empty() || start.checked_add(size).is_none() {
        return None;
    }
    Some((start, size, name.to_owned()))
}

impl PerfMap {
    /// Parse a perf map's bytes. Lines that are not UTF-8 or not
    /// `START SIZE name` are counted in `bad_lines`; empty lines are not.
    #[must_use]
    pub fn parse(data: &[u8]) -> Self {
        let mut map = PerfMap::default();
        for line in data.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(line).ok().and_then(parse_line) {
                Some(sym) => map.symbols.push(sym),
                None => map.bad_lines += 1,
            }
        }
        map.symbols.sort_by_key(|s| (s.0, s.1));
        map
    }

    /// Symbols read.
    #[must_use]
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol `addr` is in, and the offset into it. Where symbols
    /// overlap (code the JIT freed and reused, both written to the map), the
    /// one that starts last wins: it was written later.
    #[must_use]
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let after = self.symbols.partition_point(|s| s.0 <= addr);
        self.symbols[..after]
            .iter()
            .rev()
            .take(64)
            .find(|(start, size, _)| addr - start < *size)
            .map(|(start, _, name)| (display_name(name), addr - start))
    }
}

/// The name a report shows for a perf map symbol: the JVM's interpreter is
/// one blob of code for every interpreted method.
#[must_use]
pub fn display_name(name: &str) -> &str {
    if name == JVM_INTERPRETER {
        INTERPRETED_JAVA
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JDK17: &str = "\
0x00007f7468ed63a0 0x00000000000001f8 int sun.nio.ch.SocketDispatcher.read0(java.io.FileDescriptor, long, int)
0x00007f746142ef80 0x0000000000001050 int sun.nio.ch.NioSocketImpl.read(byte[], int, int)
0x00007f7461446440 0x00000000000007f0 int LeakServer.handle(java.net.Socket)
0x00007f7468940b80 0x0000000000017de0 Interpreter
";

    #[test]
    fn reads_a_jdk_17_map() {
        let m = PerfMap::parse(JDK17.as_bytes());
        assert_eq!((m.len(), m.bad_lines), (4, 0));
        assert_eq!(
            m.lookup(0x7f74_6144_669c),
            Some(("int LeakServer.handle(java.net.Socket)", 0x25c))
        );
        assert_eq!(
            m.lookup(0x7f74_6894_1374),
            Some((INTERPRETED_JAVA, 0x7f74_6894_1374 - 0x7f74_6894_0b80))
        );
        assert_eq!(m.lookup(0x7f74_6144_6440 + 0x7f0), None, "one past the end");
        assert_eq!(m.lookup(0x1000), None);
    }

    #[test]
    fn reads_maps_without_0x_and_names_with_spaces() {
        let m = PerfMap::parse(b"7f0000001000 20 LazyCompile:~handler /srv/app.js:10\n");
        assert_eq!(
            m.lookup(0x7f00_0000_1010),
            Some(("LazyCompile:~handler /srv/app.js:10", 0x10))
        );
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut data = b"not a line\n\xff\xfe\x00 20 x\n0x10 zz bad size\n\n0x10\n".to_vec();
        data.extend_from_slice(b"0x2000 0x10 good\nffffffffffffffff 10 overflows\n");
        let m = PerfMap::parse(&data);
        assert_eq!(m.bad_lines, 5);
        assert_eq!(m.lookup(0x2004), Some(("good", 4)));
    }

    #[test]
    fn the_later_of_overlapping_symbols_wins() {
        let m = PerfMap::parse(b"1000 100 old\n1040 20 new\n");
        assert_eq!(m.lookup(0x1048), Some(("new", 8)));
        assert_eq!(m.lookup(0x1010), Some(("old", 0x10)));
        assert_eq!(m.lookup(0x1070), Some(("old", 0x70)));
    }

    proptest::proptest! {
        /// Whatever the bytes, parsing neither panics nor loses count: each
        /// non-blank line is a symbol or a bad line.
        #[test]
        fn any_bytes_parse(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let m = PerfMap::parse(&data);
            let lines = data
                .split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count();
            proptest::prop_assert_eq!(m.len() + usize::try_from(m.bad_lines).unwrap(), lines);
            for a in [0u64, 1, u64::MAX] {
                let _ = m.lookup(a);
            }
        }
    }
}
