//! Command-line interface. `--help` is the first documentation a user reads:
//! keep it in step with the README.

use std::time::Duration;

use std::net::{Ipv4Addr, SocketAddr};

use clap::{ArgAction, Parser};
use tcptrace_common::{Config, HistBy, TcpState, config::shapes};

const AFTER_HELP: &str = "\
OUTPUT
  One line per event on stdout. State events: time (UTC), owner pid and comm,
  local and remote endpoints, OLD -> NEW and the time spent in OLD. RST events:
  sent or received, the socket's state and, for sent RSTs, the kernel's reason
  (enum sk_rst_reason, e.g. TCP_ABORT_ON_CLOSE for close() with unread data,
  TCP_STATE for SO_LINGER{1,0}, NO_SOCKET for a SYN to a closed port).
  With --json, one JSON object per line (schema in the README).
  A summary of event counts and losses goes to stderr at exit.

OWNERS
  The owner is recorded only from the owner's own system calls (connect,
  listen, close, shutdown) and its recv/send calls, never from whichever task
  happened to be on the CPU: ESTABLISHED -> CLOSE_WAIT runs in softirq, often
  in the peer's context. An owner not known yet prints as '?' (null in JSON).

CLOSE_WAIT LEAKS (--closewait-leaks)
  A socket in CLOSE_WAIT has received the peer's FIN; only the program's
  close() ends it, no sysctl does. Every --interval tcptrace prints the sockets
  older than --min-age, grouped by process and code path, with two classes:
  'never read to EOF' (unread data or the FIN still queued) and 'read EOF but
  never closed'. Stacks are symbolized (blazesym); programs built without frame
  pointers give truncated stacks, and tcptrace says so. Sockets already in
  CLOSE_WAIT at start-up are found through sock_diag in tcptrace's network
  namespace; their age is a lower bound. Ctrl-C prints a final report.

DWELL HISTOGRAMS (--hist)
  One histogram per state: SYN_SENT is connect latency, ESTABLISHED connection
  lifetime, CLOSE_WAIT how long programs take to close after the peer's FIN.
  TIME_WAIT and orphaned FIN_WAIT2 live in timewait sockets the tracepoint
  never sees: tcptrace follows them with sock_diag polls (1 s resolution for
  early ends; a natural end is the kernel timer's, exact). Percentiles come
  from log-linear buckets, within 6.25%; exact dwells are in the --json stream.
  --prometheus serves them all as metrics for a fleet's Prometheus.

TIME_WAIT (--timewait)
  The side that closes first keeps the 4-tuple in TIME_WAIT for 60 s. On a
  server that blocks a restart's bind() (EADDRINUSE); on a client each one
  holds an ephemeral port to one destination, and connect() fails with
  EADDRNOTAVAIL when ip_local_port_range runs out. --timewait counts TIME_WAIT
  sockets by destination and by local port with the rate of new ones and who
  closed first, projects port use a minute ahead, catches every failed
  bind()/connect() with the port or destination and what held it, and gives
  advice from those figures and the namespace's sysctls. tcp_tw_recycle is
  never suggested: it broke clients behind NAT and Linux 4.12 removed it.
  sysctls and sock_diag are per network namespace: run tcptrace in the
  namespace of the service (e.g. `ip netns exec NS tcptrace --timewait`).

SOCKET TABLE (--max-sockets)
  The kernel side keeps one entry per live TCP socket it has seen (state,
  entry time, owner) for --max-sockets sockets, {default} by default.
  --hist --by comm keeps it in an LRU hash map. The
  kernel allocates the whole map at start-up, used or not: {per_entry} bytes per
  entry ({elem}-byte entry, 16-byte hash bucket; buckets round up to a power
  of two), so {default_mib} MiB for {default} entries and {double_mib} MiB for {double} (memlock
  in the map's /proc/PID/fdinfo, measured on Linux 6.18 x86_64). Every
  other mode keeps state, entry time and pid in a lean store:
  half of --max-sockets in a table of 32-byte slots (the socket's address
  picks a two-slot bucket, no hash-map lookup), the rest, and sockets whose
  bucket is full, in an LRU map of {lean_per_entry} bytes per entry ({lean_default_mib} MiB in all
  for {default}), plus a 512 KiB cache of the owners' comms, by thread, that
  names the owners in streamed records and --timewait's closers;
  --timewait adds a 256 KiB log of TIME_WAIT entries per CPU; --closewait-leaks adds the full map for the sockets its owner
  reads or writes or that enter CLOSE_WAIT. Size it for
  the most TCP sockets the host holds at once; both ends of a local
  connection count. When it is full, each new socket evicts the least
  recently used entry (evictions can start a few hundred entries early: the
  kernel hands each CPU free entries in batches). An evicted socket's next
  transitions print no dwell ('?') and may lose their owner, and an evicted
  CLOSE_WAIT socket drops out of --closewait-leaks reports. None of it is
  silent: the exit summary counts 'socket-map evictions' and prints the
  map's occupancy; /metrics has tcptrace_lost_events_total with
  reason=\"socket_map_eviction\".

EXAMPLES
  sudo tcptrace                          every TCP transition and RST
  sudo tcptrace --hist -i 30s --by lport per-service dwell histograms
  sudo tcptrace --hist --prometheus 9464 metrics on 127.0.0.1:9464/metrics
  sudo tcptrace --closewait-leaks        who leaks CLOSE_WAIT sockets, and where
  sudo tcptrace --closewait-leaks --min-age 30s -i 1m --json
  sudo tcptrace --timewait -i 30s        restart failures and port exhaustion
  sudo tcptrace --port 8080 -d 30s       one service for 30 seconds
  sudo tcptrace --state CLOSE_WAIT       transitions into or out of CLOSE_WAIT
  sudo tcptrace --json | jq .            machine-readable
  sudo tcptrace --closewait-leaks --max-sockets 1048576   a host with ~1M sockets

PRIVILEGES
  Needs root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN on older kernels).
  tcptrace mounts tracefs at /sys/kernel/tracing if it is not mounted.";

/// [`AFTER_HELP`] with the socket map's sizes filled in from the entry layout.
fn after_help() -> String {
    use crate::loader::{lean_store_bytes, socket_map_bytes, socket_map_bytes_per_entry};
    let mib = |n: u32| ((socket_map_bytes(n) + (1 << 19)) >> 20).to_string();
    let per_entry = socket_map_bytes_per_entry();
    AFTER_HELP
        .replace(
            "{lean_per_entry}",
            &crate::loader::lean_map_bytes_per_entry().to_string(),
        )
        .replace(
            "{lean_default_mib}",
            &((lean_store_bytes(DEFAULT_MAX_SOCKETS) + (1 << 19)) >> 20).to_string(),
        )
        .replace("{default}", &DEFAULT_MAX_SOCKETS.to_string())
        .replace("{double}", &(2 * DEFAULT_MAX_SOCKETS).to_string())
        .replace("{per_entry}", &per_entry.to_string())
        .replace("{elem}", &(per_entry - 16).to_string())
        .replace("{default_mib}", &mib(DEFAULT_MAX_SOCKETS))
        .replace("{double_mib}", &mib(2 * DEFAULT_MAX_SOCKETS))
}

/// Trace TCP socket state transitions and resets with eBPF.
#[derive(Debug, Parser)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
#[command(name = "tcptrace", version, about, after_help = after_help())]
pub struct Cli {
    /// Only events of sockets owned by these pids (comma-separated or repeated).
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only events of sockets whose owner's command name is COMM (exact match).
    #[arg(long, value_name = "COMM")]
    pub comm: Option<String>,

    /// Only sockets with this local or remote port (filtered in the kernel).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Only sockets with this local port (filtered in the kernel).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub lport: Option<u16>,

    /// Only sockets with this remote port (filtered in the kernel).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub rport: Option<u16>,

    /// IPv4 sockets only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 sockets only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only transitions into or out of these states, e.g. `CLOSE_WAIT,FIN_WAIT2`.
    #[arg(long = "state", value_delimiter = ',', value_name = "STATE", value_parser = parse_state)]
    pub states: Vec<TcpState>,

    /// Stop after this long: seconds (30) or a humantime duration (30s, 5m).
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Report sockets stuck in CLOSE_WAIT, grouped by owning process and
    /// code path (where it read EOF, where it first touched the socket).
    #[arg(long, help_heading = "Modes", conflicts_with_all = ["hist", "timewait"])]
    pub closewait_leaks: bool,

    /// Diagnose TIME_WAIT: restart failures (`bind()` EADDRINUSE) and
    /// ephemeral-port exhaustion (`connect()` EADDRNOTAVAIL), with a census by
    /// destination and local port, a projection, and advice.
    #[arg(long, help_heading = "Modes", conflicts_with = "hist")]
    pub timewait: bool,

    /// Dwell-time histograms for every state, TIME_WAIT included, printed
    /// every --interval (counted in the kernel: no per-transition records).
    #[arg(long, help_heading = "Modes")]
    pub hist: bool,

    /// With --hist: one histogram per state and lport, rport, raddr or comm.
    #[arg(long, value_name = "KEY", value_parser = parse_by, requires = "hist", help_heading = "Modes")]
    pub by: Option<HistBy>,

    /// With --hist: serve Prometheus metrics at http://ADDR:PORT/metrics.
    /// A bare PORT binds 127.0.0.1 (loopback) only.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen, requires = "hist", help_heading = "Modes")]
    pub prometheus: Option<SocketAddr>,

    /// With --closewait-leaks: report a socket once it has been in CLOSE_WAIT
    /// this long. A healthy program closes within milliseconds of EOF.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration,
          requires = "closewait_leaks", conflicts_with = "timewait", help_heading = "Modes")]
    pub min_age: Duration,

    /// Print a report every DURATION (reporting modes); default 10s.
    #[arg(short = 'i', long, value_name = "DURATION", value_parser = parse_duration,
          help_heading = "Modes")]
    pub interval: Option<Duration>,

    /// Ring-buffer size in KiB (a power of two, at least 4). --closewait-leaks
    /// emits no record and uses one page whatever this says. The stream's
    /// state records go to one ring per CPU, each an equal share of this
    /// (a power of two, at least 256 KiB); resets to one ring of this size.
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ringbuf_kib)]
    pub ringbuf_kib: u32,

    /// Sockets tracked at once (the kernel's per-socket table, preallocated:
    /// see SOCKET TABLE below). Beyond it the least recently used entries
    /// are evicted and counted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOCKETS,
          value_parser = parse_max_sockets)]
    pub max_sockets: u32,

    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

impl Cli {
    /// The kernel side's settings (`CONFIG`) for the mode and filters asked
    /// for. Each mode starts from its [`shapes`] entry, which also picks the
    /// `inet_sock_set_state` program compiled for it
    /// ([`tcptrace_common::config::set_state_program`]).
    #[must_use]
    pub fn kernel_config(&self) -> Config {
        let mut config = self.mode_config();
        crate::filter::apply_kernel_filters(self, &mut config);
        // sock_recv_length/sock_send_length run on every recv and send of
        // every process. Histograms by state, port or address and the
        // TIME_WAIT census need owners only from close() (process context);
        // --by comm, the stream and leak reports need the owners of accepted
        // sockets from their first recv/send, and leak mode their EOF.
        let by_comm = self.by == Some(HistBy::Comm);
        config.io_hooks = u8::from(!(self.timewait || (self.hist && !by_comm)));
        config
    }

    fn mode_config(&self) -> Config {
        if self.hist {
            // Dwell is counted in the kernel and TIME_WAIT followed through
            // sock_diag; only resets stream. By state, the mode's shape; split
            // otherwise (comm needs the full socket map for the owner's comm).
            let by = self.by.unwrap_or(HistBy::State);
            let base = shapes::HIST.apply(Config {
                emit_resets: 1,
                ..Config::default()
            });
            Config {
                hist_by: by as u32,
                lean_socks: u8::from(by != HistBy::Comm),
                ..base
            }
        } else if self.timewait {
            // Plus failed bind()/connect() calls.
            shapes::TIMEWAIT.apply(Config {
                emit_failures: 1,
                ..Config::default()
            })
        } else if self.closewait_leaks {
            shapes::LEAKS.apply(Config {
                capture_stacks: 1,
                // CLOSE_WAIT exits past --min-age: the leaks that ended.
                long_dwell_ns: u64::try_from(self.min_age.as_nanos()).unwrap_or(u64::MAX),
                ..Config::default()
            })
        } else {
            shapes::STREAM.apply(Config {
                emit_resets: 1,
                ..Config::default()
            })
        }
    }
}

/// `30` (seconds) or a humantime duration such as `30s`, `1m30s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = if let Ok(secs) = s.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        humantime::parse_duration(s).map_err(|e| format!("{e} (try 30, 30s or 5m)"))?
    };
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

/// A TCP state name, case-insensitive, with or without the `TCP_` prefix.
pub fn parse_state(s: &str) -> Result<TcpState, String> {
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("TCP_").unwrap_or(&up);
    TcpState::ALL
        .into_iter()
        .find(|st| st.name() == name)
        .ok_or_else(|| {
            let names: Vec<_> = TcpState::ALL.iter().map(|s| s.name()).collect();
            format!("unknown TCP state; expected one of {}", names.join(", "))
        })
}

/// `lport`, `rport`, `raddr` or `comm`.
pub fn parse_by(s: &str) -> Result<HistBy, String> {
    match s {
        "lport" => Ok(HistBy::LocalPort),
        "rport" => Ok(HistBy::RemotePort),
        "raddr" => Ok(HistBy::RemoteAddr),
        "comm" => Ok(HistBy::Comm),
        _ => Err("expected one of lport, rport, raddr, comm".to_owned()),
    }
}

/// `ADDR:PORT`, `[V6]:PORT`, or a bare `PORT` on loopback.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    s.parse()
        .map_err(|_| "expected ADDR:PORT (e.g. 127.0.0.1:9464) or a port".to_owned())
}

/// The default `--max-sockets`: 100k live sockets fit with room to spare.
pub const DEFAULT_MAX_SOCKETS: u32 = 131_072;
/// The bounds of `--max-sockets`. Below the minimum the kernel's per-CPU
/// free lists (batches of 128 entries per CPU) make the size meaningless;
/// above the maximum the table alone would take gigabytes of kernel memory.
pub const MAX_SOCKETS_RANGE: std::ops::RangeInclusive<u32> = 1024..=16_777_216;

/// `--max-sockets`: a plain count within [`MAX_SOCKETS_RANGE`].
fn parse_max_sockets(s: &str) -> Result<u32, String> {
    let (lo, hi) = (*MAX_SOCKETS_RANGE.start(), *MAX_SOCKETS_RANGE.end());
    let bounds = || format!("must be a number of sockets from {lo} to {hi}");
    let v: u64 = s.trim().parse().map_err(|e| format!("{e}; {}", bounds()))?;
    u32::try_from(v)
        .ok()
        .filter(|v| MAX_SOCKETS_RANGE.contains(v))
        .ok_or_else(bounds)
}

fn parse_ringbuf_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if v < 4 || !v.is_power_of_two() || v > 1 << 20 {
        return Err("must be a power of two from 4 to 1048576".to_owned());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, error::ErrorKind};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tcptrace").chain(args.iter().copied()))
    }

    #[test]
    fn each_mode_gets_the_set_state_program_compiled_for_it() {
        use tcptrace_common::config::{SET_STATE_GENERIC, set_state_program};
        for (args, program) in [
            (&[][..], "inet_sock_set_state_stream"),
            (
                &["--pid", "1", "--port", "80"][..],
                "inet_sock_set_state_stream",
            ),
            (&["--hist"][..], "inet_sock_set_state_hist"),
            (
                &["--hist", "-6", "--lport", "80"][..],
                "inet_sock_set_state_hist",
            ),
            (&["--timewait"][..], "inet_sock_set_state_timewait"),
            (&["--closewait-leaks"][..], "inet_sock_set_state_leaks"),
            (
                &["--closewait-leaks", "--min-age", "1m"][..],
                "inet_sock_set_state_leaks",
            ),
            // Split histograms: the generic program.
            (&["--hist", "--by", "lport"][..], SET_STATE_GENERIC),
            (&["--hist", "--by", "comm"][..], SET_STATE_GENERIC),
        ] {
            let c = parse(args).unwrap().kernel_config();
            assert_eq!(set_state_program(&c), program, "{args:?}");
        }
    }

    #[test]
    fn mode_configs_keep_what_their_shape_leaves_out() {
        let c = parse(&["--closewait-leaks", "--min-age", "2s"])
            .unwrap()
            .kernel_config();
        assert_eq!((c.capture_stacks, c.long_dwell_ns), (1, 2_000_000_000));
        assert_eq!(
            parse(&["--timewait"])
                .unwrap()
                .kernel_config()
                .emit_failures,
            1
        );
        let by_comm = parse(&["--hist", "--by", "comm"]).unwrap().kernel_config();
        assert_eq!(
            (by_comm.lean_socks, by_comm.hist_by),
            (0, HistBy::Comm as u32)
        );
        assert_eq!(parse(&["--port", "80"]).unwrap().kernel_config().port, 80);
        for (args, io_hooks) in [
            (&[][..], 1),
            (&["--closewait-leaks"][..], 1),
            (&["--hist", "--by", "comm"][..], 1),
            (&["--hist"][..], 0),
            (&["--hist", "--by", "lport"][..], 0),
            (&["--timewait"][..], 0),
        ] {
            let c = parse(args).unwrap().kernel_config();
            assert_eq!(c.io_hooks, io_hooks, "{args:?}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_in_seconds_or_humantime() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        let cli = parse(&["-d", "250ms"]).unwrap();
        assert_eq!(cli.duration, Some(Duration::from_millis(250)));
    }

    #[test]
    fn states_parse_in_any_case_with_or_without_prefix() {
        let cli = parse(&["--state", "close_wait,TCP_FIN_WAIT2"]).unwrap();
        assert_eq!(cli.states, vec![TcpState::CloseWait, TcpState::FinWait2]);
        let err = parse(&["--state", "HALF_OPEN"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("CLOSE_WAIT"), "{err}");
    }

    #[test]
    fn bad_flags_and_values_are_clap_errors() {
        assert_eq!(
            parse(&["--nope"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse(&["--port", "0"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["--port", "70000"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["-p", "abc"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["-4", "-6"]).unwrap_err().kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse(&["--ringbuf-kib", "3"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn help_teaches_the_socket_table() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--max-sockets <N>"), "{help}");
        let section = help
            .split("SOCKET TABLE (--max-sockets)")
            .nth(1)
            .unwrap_or_default();
        for placeholder in ["{default", "{double", "{per_entry", "{elem", "{lean"] {
            assert!(!section.contains(placeholder), "{placeholder}: {section}");
        }
        let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
        let per_entry = format!(
            "{} bytes per entry",
            crate::loader::socket_map_bytes_per_entry()
        );
        for want in [
            "131072 by default",
            &per_entry,
            "evicts the least recently used",
            "memlock",
        ] {
            assert!(section.contains(want), "{want}: {section}");
        }
    }

    #[test]
    fn max_sockets_bounds() {
        assert_eq!(parse(&[]).unwrap().max_sockets, DEFAULT_MAX_SOCKETS);
        const {
            assert!(
                DEFAULT_MAX_SOCKETS >= 100_000,
                "100k sockets fit by default"
            );
        };
        assert_eq!(parse_max_sockets("262144"), Ok(262_144));
        assert_eq!(parse_max_sockets("1024"), Ok(1024));
        assert_eq!(parse_max_sockets("16777216"), Ok(16_777_216));
        for bad in [
            "0",
            "1023",
            "16777217",
            "99999999999",
            "-5",
            "1e6",
            "lots",
            "",
        ] {
            let err = parse_max_sockets(bad).unwrap_err();
            assert!(err.contains("from 1024 to 16777216"), "{bad}: {err}");
        }
        let cli = parse(&["--closewait-leaks", "--max-sockets", "300000"]).unwrap();
        assert_eq!(cli.max_sockets, 300_000);
        assert_eq!(
            parse(&["--max-sockets", "0"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn leak_mode_flags() {
        let cli = parse(&["--closewait-leaks"]).unwrap();
        assert_eq!(cli.min_age, Duration::from_secs(10), "documented default");
        assert_eq!(cli.interval, None);
        let cli = parse(&["--closewait-leaks", "--min-age", "5s", "-i", "2"]).unwrap();
        assert_eq!(cli.min_age, Duration::from_secs(5));
        assert_eq!(cli.interval, Some(Duration::from_secs(2)));
        let err = parse(&["--closewait-leaks", "--min-age", "soon"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let err = parse(&["--closewait-leaks", "--interval", "0"]).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
        let err = parse(&["--min-age", "5s"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn hist_mode_flags() {
        let cli = parse(&["--hist", "--by", "lport", "--prometheus", "9464"]).unwrap();
        assert!(cli.hist);
        assert_eq!(cli.by, Some(HistBy::LocalPort));
        assert_eq!(cli.prometheus, Some("127.0.0.1:9464".parse().unwrap()));
        let cli = parse(&["--hist", "--prometheus", "[::1]:9000"]).unwrap();
        assert_eq!(cli.prometheus, Some("[::1]:9000".parse().unwrap()));
        let err = parse(&["--hist", "--by", "pid"]).unwrap_err();
        assert!(
            err.to_string().contains("lport, rport, raddr, comm"),
            "{err}"
        );
        assert_eq!(
            parse(&["--hist", "-i", "0"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["--by", "lport"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--hist", "--closewait-leaks"]).unwrap_err().kind(),
            ErrorKind::ArgumentConflict
        );
        assert!(parse(&["--hist", "--prometheus", "nowhere"]).is_err());
    }

    #[test]
    fn timewait_mode_flags() {
        let cli = parse(&["--timewait", "-i", "5s", "--json", "--port", "80"]).unwrap();
        assert!(cli.timewait);
        assert_eq!(cli.interval, Some(Duration::from_secs(5)));
        for other in ["--hist", "--closewait-leaks"] {
            assert_eq!(
                parse(&["--timewait", other]).unwrap_err().kind(),
                ErrorKind::ArgumentConflict,
                "{other}"
            );
        }
        assert_eq!(
            parse(&["--timewait", "--min-age", "5s"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn pids_are_comma_separated_or_repeated() {
        let cli = parse(&["-p", "1,2", "--pid", "3"]).unwrap();
        assert_eq!(cli.pids, vec![1, 2, 3]);
    }
}
