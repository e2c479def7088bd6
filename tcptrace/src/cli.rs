//! The command line: flags, with `--help` as the first documentation a user
//! reads (keep it in step with the README), turned into the typed [`Plan`]
//! that everything below `main` works from.

use std::{net::SocketAddr, time::Duration};

use clap::{ArgAction, ArgGroup, CommandFactory as _, Parser, error::ErrorKind};
use tcptrace_common::{HistBy, TcpState, ports::PortLists};

use crate::model::{
    cardinality::DEFAULT_TOP,
    filter::{Filter, PortFilter},
    netns::NetnsSpec,
    plan::{
        Analyses, GroupLabel, HistOptions, LeakOptions, Plan, Scope, Sizes, TextStyle,
        TimewaitOptions,
    },
};

pub mod generate;
mod help;
mod parse;
#[cfg(test)]
mod tests;

use help::{SHORT_AFTER_HELP, after_help};
pub use parse::{
    By, parse_by, parse_cgroup, parse_container, parse_duration, parse_listen, parse_netns,
    parse_state,
};
use parse::{parse_max_sockets, parse_port, parse_ringbuf_kib, parse_top, port_list};

/// The default `--max-sockets`: 100k live sockets fit with room to spare.
pub const DEFAULT_MAX_SOCKETS: u32 = 131_072;
/// The bounds of `--max-sockets`. Below the minimum the kernel's per-CPU
/// free lists (batches of 128 entries per CPU) make the size meaningless;
/// above the maximum the table alone would take gigabytes of kernel memory.
pub const MAX_SOCKETS_RANGE: std::ops::RangeInclusive<u32> = 1024..=16_777_216;

/// Where `--agent` serves `/metrics` without `--prometheus`: loopback, so
/// that nothing is exposed by default.
pub const AGENT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// `--help`'s headings: what to run, its options, which sockets.
const MODES: &str = "Modes (any combination; none: stream every transition and RST)";
const MODE_OPTIONS: &str = "Mode options";
const FILTERS: &str = "Filters";

/// The report period when `-i` is not given.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Trace TCP socket state transitions and resets with eBPF.
#[derive(Debug, Parser)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
#[command(name = "tcptrace", version = generate::VERSION, about, after_help = SHORT_AFTER_HELP,
          after_long_help = after_help())]
#[command(group(ArgGroup::new("leak_mode").args(["closewait_leaks", "agent"]).multiple(true)))]
#[command(group(ArgGroup::new("metrics").args(["prometheus", "agent"]).multiple(true)))]
#[command(group(ArgGroup::new("reporting")
    .args(["hist", "closewait_leaks", "timewait", "agent"]).multiple(true)))]
pub struct Cli {
    /// Who leaks CLOSE_WAIT sockets, and where in the code.
    ///
    /// Every --interval, the sockets stuck in CLOSE_WAIT past --min-age,
    /// grouped by owning process and code path (where it read EOF, where it
    /// first touched the socket).
    #[arg(long, help_heading = MODES)]
    pub closewait_leaks: bool,

    /// "Address already in use", ports run out.
    ///
    /// Diagnoses TIME_WAIT: restart failures (`bind()` EADDRINUSE) and
    /// ephemeral-port exhaustion (`connect()` EADDRNOTAVAIL), with a census by
    /// destination and local port, a projection, and advice.
    #[arg(long, help_heading = MODES)]
    pub timewait: bool,

    /// How long sockets sit in each state: dwell histograms.
    ///
    /// Every state, TIME_WAIT included, printed every --interval (counted in
    /// the kernel: no per-transition records).
    #[arg(long, help_heading = MODES)]
    pub hist: bool,

    /// All three as Prometheus metrics, always on.
    ///
    /// --hist, --closewait-leaks and --timewait at once, RST counters
    /// included, served on 127.0.0.1:9464 (or --prometheus ADDR:PORT), and
    /// nothing on stdout. Metrics refresh every second; leak gauges every
    /// --interval.
    #[arg(long, conflicts_with_all = ["hist", "closewait_leaks", "timewait", "json", "by"],
          help_heading = MODES)]
    pub agent: bool,

    /// Report every DURATION (default 10s).
    ///
    /// Every mode shares it. The stream has no reports: it prints each event
    /// as it comes, and refuses -i.
    #[arg(short = 'i', long, value_name = "DURATION", value_parser = parse_duration,
          requires = "reporting", help_heading = MODE_OPTIONS)]
    pub interval: Option<Duration>,

    /// Split --hist by KEY (lport, comm, netns, ...).
    ///
    /// One histogram per state and lport, rport, raddr, comm, netns, or
    /// container (a network namespace, named by the container in it).
    #[arg(long, value_name = "KEY", value_parser = parse_by, requires = "hist",
          help_heading = MODE_OPTIONS)]
    pub by: Option<By>,

    /// Report leaks older than this.
    ///
    /// A socket in CLOSE_WAIT this long is reported; a healthy program
    /// closes within milliseconds of EOF.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration,
          requires = "leak_mode", help_heading = MODE_OPTIONS)]
    pub min_age: Duration,

    /// --closewait-leaks: how long symbolizing one process may take.
    ///
    /// The symbolizer runs apart, since it opens files the traced process
    /// chooses; past this it is killed and that process's frames print as
    /// "not symbolized (timed out)".
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration,
          requires = "leak_mode", help_heading = MODE_OPTIONS, hide_short_help = true)]
    pub symbolize_timeout: Duration,

    /// --closewait-leaks: never attach to JVMs to refresh their perf maps.
    ///
    /// By default a JVM whose leak has Java frames its perf map does not name
    /// is asked, as `jcmd <pid> Compiler.perfmap` would (a trigger file and
    /// SIGQUIT, once per JVM per report), to rewrite /tmp/perf-<pid>.map.
    /// With this flag only an existing perf map is read.
    #[arg(long, requires = "leak_mode", help_heading = MODE_OPTIONS, hide_short_help = true)]
    pub no_jvm_attach: bool,

    /// Serve metrics on ADDR:PORT (/metrics).
    ///
    /// Prometheus metrics at http://ADDR:PORT/metrics (and /healthz) for
    /// whatever analyses run: --hist, --closewait-leaks, --timewait, or
    /// --agent (all of them). A bare PORT binds 127.0.0.1 (loopback) only.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen,
          help_heading = MODE_OPTIONS)]
    pub prometheus: Option<SocketAddr>,

    /// Metrics: name the N largest destinations, comms, ports; sum the rest.
    ///
    /// With --prometheus or --agent: the rest are summed as `other` (a client
    /// with 28,000 ephemeral ports makes N+1 series, not 28,000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOP,
          value_parser = parse_top, requires = "metrics", help_heading = MODE_OPTIONS,
          hide_short_help = true)]
    pub top: usize,

    /// Only sockets owned by these pids.
    ///
    /// Comma-separated or repeated.
    #[arg(short = 'p', long = "pid", value_delimiter = ',', value_name = "PID",
          help_heading = FILTERS)]
    pub pids: Vec<u32>,

    /// Only sockets whose owner's command name is COMM.
    ///
    /// An exact match.
    #[arg(long, value_name = "COMM", help_heading = FILTERS)]
    pub comm: Option<String>,

    /// Only these ports, local or remote: 80,443 (at most 8).
    ///
    /// A socket passes when its local or its remote port is one of them.
    /// Comma-separated or repeated, at most 8 different ports; filtered in
    /// the kernel.
    #[arg(long, value_name = "PORT", value_delimiter = ',', value_parser = parse_port,
          help_heading = FILTERS)]
    pub port: Vec<u16>,

    /// Only these local ports: 80,443 (at most 8).
    ///
    /// As tcpstates's -L (--localport works too). Comma-separated or
    /// repeated, at most 8 different ports; filtered in the kernel.
    #[arg(short = 'L', long, alias = "localport", value_name = "PORT", value_delimiter = ',',
          value_parser = parse_port, help_heading = FILTERS)]
    pub lport: Vec<u16>,

    /// Only these remote ports: 80,443 (at most 8).
    ///
    /// As tcpstates's -D (--remoteport works too). Comma-separated or
    /// repeated, at most 8 different ports; filtered in the kernel.
    #[arg(short = 'D', long, alias = "remoteport", value_name = "PORT", value_delimiter = ',',
          value_parser = parse_port, help_heading = FILTERS)]
    pub rport: Vec<u16>,

    /// IPv4 sockets only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6", help_heading = FILTERS,
          hide_short_help = true)]
    pub ipv4: bool,

    /// IPv6 sockets only.
    #[arg(short = '6', long = "ipv6", help_heading = FILTERS, hide_short_help = true)]
    pub ipv6: bool,

    /// Only transitions into or out of STATE.
    ///
    /// Comma-separated, as the kernel names them (`CLOSE_WAIT,FIN_WAIT2`) or
    /// as ss does (`close-wait,fin-wait-2`).
    #[arg(long = "state", value_delimiter = ',', value_name = "STATE", value_parser = parse_state,
          help_heading = FILTERS)]
    pub states: Vec<TcpState>,

    /// One network namespace: NAME, pid:PID or inode:INODE.
    ///
    /// Filtered in the kernel: NAME under /run/netns, pid:PID or
    /// inode:INODE. Default: every namespace on the host. See NAMESPACES AND
    /// CONTAINERS below.
    #[arg(long, value_name = "NS", value_parser = parse_netns, help_heading = FILTERS)]
    pub netns: Option<NetnsSpec>,

    /// Only owners in a container whose id starts with ID.
    ///
    /// The 12 hex digits `docker ps` shows will do.
    #[arg(long, value_name = "ID", value_parser = parse_container, help_heading = FILTERS)]
    pub container: Option<String>,

    /// Only owners whose cgroup is PATH or below it.
    ///
    /// As /proc/PID/cgroup shows it (e.g. /system.slice).
    #[arg(long, value_name = "PATH", value_parser = parse_cgroup, help_heading = FILTERS,
          hide_short_help = true)]
    pub cgroup: Option<String>,

    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// The stream's times in local time (default UTC).
    ///
    /// As tcpstates's -T. JSON times stay UTC (RFC 3339, `Z`).
    #[arg(short = 'T', long = "localtime", conflicts_with = "json")]
    pub local_time: bool,

    /// Address columns wide enough for IPv6.
    ///
    /// By default they fit IPv4 endpoints, so that a line fits 120 columns;
    /// a longer address still prints whole, shifting the line.
    #[arg(short = 'w', long, conflicts_with = "json")]
    pub wide: bool,

    /// Stop after DURATION: 30 (seconds), 30s, 5m.
    ///
    /// Every DURATION (this, --interval, --min-age) is at most 10 years.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Ring-buffer size in KiB.
    ///
    /// A power of two, at least 4. --closewait-leaks emits no record and uses
    /// one page whatever this says. The stream's state records go to one ring
    /// per CPU, each an equal share of this (a power of two, at least 256
    /// KiB); resets to one ring of this size.
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ringbuf_kib,
          hide_short_help = true)]
    pub ringbuf_kib: u32,

    /// Sockets tracked at once (see SOCKET TABLE in --help).
    ///
    /// The kernel's per-socket table, preallocated. Beyond it the least
    /// recently used entries are evicted and counted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOCKETS,
          value_parser = parse_max_sockets, hide_short_help = true)]
    pub max_sockets: u32,

    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(short, long, action = ArgAction::Count, hide_short_help = true)]
    pub verbose: u8,

    /// Print a release artefact on stdout and exit: the man page or a shell
    /// completion script (`cargo xtask dist`). Needs no root, loads nothing.
    #[arg(long, value_name = "WHAT", hide = true)]
    pub generate: Option<generate::Artefact>,
}

impl Cli {
    /// The plan these flags ask for, or the error clap prints for a
    /// combination it cannot express.
    pub fn plan(&self) -> Result<Plan, clap::Error> {
        let interval = self.interval.unwrap_or(DEFAULT_INTERVAL);
        let hist = (self.hist || self.agent).then(|| {
            let by = self.by.unwrap_or(By {
                key: HistBy::State,
                label: GroupLabel::Key,
            });
            HistOptions {
                interval,
                by: by.key,
                label: by.label,
            }
        });
        let closewait = (self.closewait_leaks || self.agent).then_some(LeakOptions {
            min_age: self.min_age,
            interval,
            symbolize_timeout: self.symbolize_timeout,
            jvm_attach: !self.no_jvm_attach,
        });
        let timewait = (self.timewait || self.agent).then_some(TimewaitOptions { interval });
        let stream = hist.is_none() && closewait.is_none() && timewait.is_none();
        if stream && self.prometheus.is_some() {
            return Err(Self::command().error(
                ErrorKind::MissingRequiredArgument,
                "--prometheus serves what --hist, --closewait-leaks and --timewait count \
                 (--agent runs all three); the stream of events exports no metrics: \
                 add one of those, or use --agent",
            ));
        }
        let prometheus = (self.prometheus).or_else(|| self.agent.then_some(AGENT_LISTEN));
        if !stream && (self.local_time || self.wide) {
            return Err(Self::command().error(
                ErrorKind::ArgumentConflict,
                "-T and -w shape the stream's text lines; the reports of --hist, \
                 --closewait-leaks and --timewait carry their own times (UTC)",
            ));
        }
        if closewait.is_some() && hist.is_some_and(|h| h.by != HistBy::State) {
            return Err(Self::command().error(
                ErrorKind::ArgumentConflict,
                "--closewait-leaks cannot run with --hist --by yet: its summary of leaks \
                 that ended needs the histograms by state. Run --hist --by in a second \
                 tcptrace, or drop --by",
            ));
        }
        if (hist.is_some() || timewait.is_some())
            && (self.container.is_some() || self.cgroup.is_some())
        {
            return Err(Self::command().error(
                ErrorKind::ArgumentConflict,
                "--container and --cgroup filter the stream and --closewait-leaks, which know \
                 each socket's owner; --hist and --timewait count in the kernel by namespace: \
                 use --netns (a container's namespace: --netns pid:PID of a process in it)",
            ));
        }
        Ok(Plan {
            analyses: Analyses {
                stream,
                hist,
                closewait,
                timewait,
            },
            filter: Filter {
                pids: self.pids.clone(),
                comm: self.comm.clone(),
                states: self.states.clone(),
            },
            ports: PortFilter {
                families: PortFilter::families(self.ipv4, self.ipv6),
                ports: PortLists {
                    port: port_list("--port", &self.port)?,
                    lport: port_list("-L/--lport", &self.lport)?,
                    rport: port_list("-D/--rport", &self.rport)?,
                },
            },
            scope: Scope {
                netns: self.netns.clone(),
                container: self.container.clone(),
                cgroup: self.cgroup.clone(),
            },
            json: self.json,
            text: TextStyle {
                local_time: self.local_time,
                wide: self.wide,
            },
            quiet: self.agent,
            duration: self.duration,
            prometheus,
            metrics_top: self.top,
            sizes: Sizes {
                ringbuf_bytes: self.ringbuf_kib * 1024,
                max_sockets: self.max_sockets,
            },
        })
    }
}
