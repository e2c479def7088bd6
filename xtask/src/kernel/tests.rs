use std::cmp::Ordering;

use super::{
    provision::{natural_cmp, releases},
    results::{Outcome, listed, parse_features, parse_tests},
};

const RUN: &str = "\
running 4 tests
test a_passes ... ok
test b_refused ... FAILED
test c_fails ... some stray output FAILED
test d_ignored ... ignored, needs java

failures:

---- b_refused stdout ----

thread 'b_refused' (122) panicked at tests/src/process.rs:152:9:
tcptrace [\"--json\"] did not start: it exited before tracing; status Ok(1); stderr:
[INFO  tcptrace::kernel::load] recv/send hooks: fexit (this kernel has no sock:sock_recv_length, Linux 6.3+)
tcptrace: this kernel has no tracepoint tcp:tcp_destroy_sock (missing); tcptrace needs it

---- c_fails stdout ----

thread 'c_fails' (130) panicked at tests/tests/x.rs:10:5:
assertion `left == right` failed
  left: 1

failures:
    b_refused
    c_fails

test result: FAILED. 1 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out
";

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn outcomes_are_read_and_a_refusal_is_unsupported_with_its_reason() {
    let all = names(&["a_passes", "b_refused", "c_fails", "d_ignored", "e_never"]);
    let got = parse_tests(&all, RUN, false);
    assert_eq!(got["a_passes"], Outcome::Ok);
    assert_eq!(
        got["b_refused"],
        Outcome::Unsupported(
            "this kernel has no tracepoint tcp:tcp_destroy_sock (missing); tcptrace needs it"
                .to_owned()
        )
    );
    assert_eq!(
        got["c_fails"],
        Outcome::Failed("assertion `left == right` failed".to_owned())
    );
    assert_eq!(got["d_ignored"], Outcome::Ignored);
    assert_eq!(got["e_never"], Outcome::NotRun);
}

#[test]
fn a_log_line_naming_a_replaced_tracepoint_is_not_a_refusal() {
    let out = "test t ... FAILED\n\nfailures:\n\n---- t stdout ----\n\
               [INFO  tcptrace::kernel::load] x (this kernel has no sock:sock_recv_length)\n\
               no ready line\n\nfailures:\n    t\n";
    let got = parse_tests(&names(&["t"]), out, false);
    assert!(matches!(got["t"], Outcome::Failed(_)), "{got:?}");
}

#[test]
fn a_refusal_quoted_in_a_debug_string_ends_at_its_line() {
    let out = "test t ... FAILED\n\nfailures:\n\n---- t stdout ----\n\
               stderr: \"tcptrace: this kernel has no tracepoint a:b\\nmore\"\n\nfailures:\n";
    let got = parse_tests(&names(&["t"]), out, false);
    assert_eq!(
        got["t"],
        Outcome::Unsupported("this kernel has no tracepoint a:b".to_owned())
    );
}

#[test]
fn a_test_that_says_the_kernel_lacks_what_it_needs_is_unsupported() {
    let out = "test t ... FAILED\n\nfailures:\n\n---- t stdout ----\n\
               thread 't' (9) panicked at tests/tests/lifecycle.rs:3:9:\n\
               unsupported on this kernel: no reset without a socket before 6.10\n\nfailures:\n";
    let got = parse_tests(&names(&["t"]), out, false);
    assert_eq!(
        got["t"],
        Outcome::Unsupported("no reset without a socket before 6.10".to_owned())
    );
}

#[test]
fn the_test_running_when_its_file_timed_out_is_marked() {
    let out = "running 2 tests\ntest slow ... ";
    let got = parse_tests(&names(&["slow", "next"]), out, true);
    assert_eq!(got["slow"], Outcome::Timeout);
    assert_eq!(got["next"], Outcome::NotRun);
}

#[test]
fn list_output_names_the_tests() {
    let out = "a: test\nb::c: test\n\n2 tests, 0 benchmarks\n";
    assert_eq!(listed(out), names(&["a", "b::c"]));
}

#[test]
fn features_come_from_version_v_and_the_probes() {
    let text = "tcptrace 0.1.0 (commit 1)\nkernel:     6.1.0-57-amd64\n\
                BTF:        yes (/sys/kernel/btf/vmlinux)\ntracepoints:\n\
                \x20 sock:inet_sock_set_state   yes\n\
                \x20 sock:sock_recv_length     no (Linux 6.3+): fexit instead\n\
                probe ringbuf: yes\n";
    let f = parse_features(text);
    assert_eq!(f["kernel"], "6.1.0-57-amd64");
    assert_eq!(f["BTF"], "yes (/sys/kernel/btf/vmlinux)");
    assert_eq!(f["sock:inet_sock_set_state"], "yes");
    assert_eq!(f["sock:sock_recv_length"], "no (Linux 6.3+): fexit instead");
    assert_eq!(f["ringbuf"], "yes");
    assert!(!f.contains_key("tracepoints"));
}

#[test]
fn the_generic_amd64_releases_of_a_version_sort_by_number() {
    let search = "linux-image-6.1.0-9-amd64-unsigned - Linux 6.1\n\
                  linux-image-6.1.0-57-amd64-unsigned - Linux 6.1\n\
                  linux-image-6.1.0-57-cloud-amd64-unsigned - cloud\n\
                  linux-image-6.1.0-57-rt-amd64-unsigned - rt\n\
                  linux-image-6.12.118+deb12-amd64-unsigned - Linux 6.12\n";
    let mut r = releases("6.1", search);
    r.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(r, names(&["6.1.0-9-amd64", "6.1.0-57-amd64"]));
    assert_eq!(releases("6.12", search), names(&["6.12.118+deb12-amd64"]));
    assert_eq!(natural_cmp("6.12.9", "6.12.10"), Ordering::Less);
}
