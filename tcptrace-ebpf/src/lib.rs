//! Empty library target. `tcptrace` names this crate as a build-dependency so
//! that cargo rebuilds the userspace binary (which embeds the eBPF object)
//! whenever the kernel side changes; a build-dependency needs a library.
#![no_std]
