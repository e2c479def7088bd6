//! `--help`'s sections after the flags: output, owners, each analysis, the
//! socket table with its sizes computed from the entry layouts, examples and
//! privileges.

use super::DEFAULT_MAX_SOCKETS;

/// What `-h` ends with: the incidents, and where the rest is.
pub(super) const SHORT_AFTER_HELP: &str = "\
In an incident (as root):
  tcptrace --closewait-leaks        who leaks CLOSE_WAIT, and where in the code
  tcptrace --timewait               \"Address already in use\", port exhaustion
  tcptrace --port 8080 -d 30s       every transition and RST of one service
--help explains each mode, the output, namespaces and privileges.";

const AFTER_HELP: &str = "\
OUTPUT
  One line per event on stdout. State events: time (UTC), owner pid and comm,
  local and remote endpoints, OLD -> NEW and the time spent in OLD. RST events:
  sent or received, the socket's state and, for sent RSTs, the kernel's reason
  (enum sk_rst_reason, e.g. TCP_ABORT_ON_CLOSE for close() with unread data,
  TCP_STATE for SO_LINGER{1,0}, NO_SOCKET for a SYN to a closed port).
  With --json, one JSON object per line (keys in docs/json.md).
  A summary of event counts and losses goes to stderr at exit.

OWNERS
  The owner is recorded only from the owner's own system calls (connect,
  listen, close, shutdown) and its recv/send calls, never from whichever task
  happened to be on the CPU: ESTABLISHED -> CLOSE_WAIT runs in softirq, often
  in the peer's context. An owner not known yet prints as '?' (null in JSON).

NAMESPACES AND CONTAINERS (--netns, --container, --cgroup)
  By default tcptrace traces the sockets of every network namespace on the
  host, containers' included. --netns narrows every analysis to one, and the
  kernel side drops other namespaces' sockets. It takes NAME, a namespace
  `ip netns add NAME` made (/run/netns/NAME); pid:PID, the namespace process
  PID is in (/proc/PID/ns/net); or inode:INODE, the namespace with that inode
  (`lsns -t net` lists them; `ls -l /proc/PID/ns/net` shows net:[INODE]). A
  bare number is refused: it could be a pid or an inode.
  --container ID keeps the sockets whose owner runs in a container whose id
  starts with ID. Docker, containerd, CRI-O and podman ids are 64 hex digits
  (case is ignored; `docker ps` shows the first 12), Kubernetes's
  containerd://ID works too, and a systemd-nspawn container goes by its
  machine name. --cgroup PATH keeps those whose owner's cgroup is PATH or
  below it, on whole components, as /proc/PID/cgroup shows it after \"0::\":
  /system.slice matches /system.slice/docker-ID.scope, not /system.slicer.
  Owners not known yet match neither. Both filter the stream and
  --closewait-leaks; --hist and --timewait count by namespace in the
  kernel, so they take --netns instead. --hist --by netns splits the
  histograms per network namespace; --by container names each namespace by
  the container in it.

ANALYSES
  --closewait-leaks, --hist and --timewait are analyses; give any of them,
  alone or together, and one tcptrace runs them all over one loaded kernel
  object, each printing its own reports every --interval. With none of
  them, tcptrace streams every transition and RST. --prometheus serves what
  the analyses count as metrics, whichever of them run.

THE AGENT (--agent)
  The process to leave running on every host: all three analyses, RST
  counters included, served at http://127.0.0.1:9464/metrics (--prometheus
  ADDR:PORT to let a Prometheus on another host scrape it) and /healthz, and
  nothing on stdout. Leak gauges refresh every --interval (10s), the rest
  every second. --top N bounds every label that traced processes choose
  (destinations, comms, ports): the N largest, and `other` for the rest.
  The metrics and their labels are listed in the README.

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
  Each network namespace gets its own census, read inside it: its sysctls,
  its sock_diag sockets, its advice (--netns narrows it to one).

SOCKET TABLE (--max-sockets)
  {default} sockets tracked by default, preallocated: {lean_default_mib} MiB of kernel memory,
  {default_mib} MiB more with --closewait-leaks or --hist --by comm ({per_entry} bytes per
  entry). Past it the least recently used are evicted, and counted (exit
  summary, /metrics). Layout and sizes: docs/internals.md.

EXAMPLES
  sudo tcptrace                          every TCP transition and RST
  sudo tcptrace --hist -i 30s --by lport per-service dwell histograms
  sudo tcptrace --agent                  always on: every analysis as metrics
  sudo tcptrace --agent --prometheus 0.0.0.0:9464   scraped from other hosts
  sudo tcptrace --hist --prometheus 9464 metrics on 127.0.0.1:9464/metrics
  sudo tcptrace --closewait-leaks        who leaks CLOSE_WAIT sockets, and where
  sudo tcptrace --closewait-leaks --min-age 30s -i 1m --json
  sudo tcptrace --timewait -i 30s        restart failures and port exhaustion
  sudo tcptrace --port 8080 -d 30s       one service for 30 seconds
  sudo tcptrace --netns pid:4242         the network namespace of process 4242
  sudo tcptrace --hist --by container    dwell histograms per container
  sudo tcptrace --state CLOSE_WAIT       transitions into or out of CLOSE_WAIT
  sudo tcptrace --json | jq .            machine-readable
  sudo tcptrace --closewait-leaks --max-sockets 1048576   a host with ~1M sockets

PRIVILEGES
  Needs root, or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN + CAP_DAC_READ_SEARCH +
  CAP_SYS_PTRACE (deploy/systemd/tcptrace.service): load and attach the eBPF
  programs; setns() into each network namespace; read tracefs; read other
  users' /proc/PID/ns/net and fd links.
  tcptrace mounts tracefs at /sys/kernel/tracing if it is not mounted.";

/// [`AFTER_HELP`] with the socket map's sizes filled in from the entry layout.
pub(super) fn after_help() -> String {
    use crate::kernel::sizing::{
        lean_map_bytes_per_entry, lean_store_bytes, socket_map_bytes, socket_map_bytes_per_entry,
    };
    let mib = |n: u32| ((socket_map_bytes(n) + (1 << 19)) >> 20).to_string();
    let per_entry = socket_map_bytes_per_entry();
    AFTER_HELP
        .replace("{lean_per_entry}", &lean_map_bytes_per_entry().to_string())
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
