//! Network namespaces: the inode of a socket's namespace
//! (`sk->__sk_common.skc_net.net->ns.inum`) and of the current task's
//! (`task->nsproxy->net_ns->ns.inum`), at the offsets userspace found in
//! the kernel's BTF (`CONFIG.netns`), and the `--netns` filter.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task};

/// The inode of the namespace whose `struct net` is at `net`; 0 if
/// unreadable.
#[inline(always)]
fn net_inum(net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    let at = net + u64::from(config!(netns.net_inum));
    // SAFETY: a kernel read through a helper that faults safely.
    unsafe { bpf_probe_read_kernel(at as *const u32) }.unwrap_or(0)
}

/// The namespace of the socket at `sk`; 0 when unknown (no offsets, no
/// socket, or unreadable). A BPF subprogram: the generic
/// `inet_sock_set_state` program has no stack to spare for its reads.
#[inline(never)]
pub(crate) fn sock_netns(sk: u64) -> u32 {
    let off = config!(netns.sk_net);
    if off == 0 || sk == 0 {
        return 0;
    }
    // SAFETY: as in `net_inum`.
    let net = unsafe { bpf_probe_read_kernel((sk + u64::from(off)) as *const u64) }.unwrap_or(0);
    net_inum(net)
}

/// The current task's namespace, for records made in process context
/// without a socket (failed `bind()` and `connect()` calls); 0 when
/// unknown.
#[inline(always)]
pub(crate) fn task_netns() -> u32 {
    let nsproxy_off = config!(netns.task_nsproxy);
    if nsproxy_off == 0 {
        return 0;
    }
    // SAFETY: no preconditions; the task is read through the helper below.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: kernel reads through a helper that faults safely.
    let nsproxy = unsafe { bpf_probe_read_kernel((task + u64::from(nsproxy_off)) as *const u64) }
        .unwrap_or(0);
    if nsproxy == 0 {
        // An exiting task has dropped its namespaces.
        return 0;
    }
    let at = nsproxy + u64::from(config!(netns.nsproxy_net));
    // SAFETY: as above.
    let net = unsafe { bpf_probe_read_kernel(at as *const u64) }.unwrap_or(0);
    net_inum(net)
}

/// `--netns`: whether namespace `ns` is traced. Without the filter,
/// every one is, and nothing is read.
#[inline(always)]
pub(crate) fn netns_filtered_out(ns: impl FnOnce() -> u32) -> bool {
    let want = config!(netns_filter);
    want != 0 && ns() != want
}
