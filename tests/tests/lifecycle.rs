//! Whole TCP lifecycles traced end to end: exact transition sequences, owner
//! pids and resets, with real sockets in a fresh network namespace per test.
//!
//! Needs root, and the tests share kernel state (tracepoints are global):
//! run with `--test-threads=1`, e.g. `sudo cargo xtask test`, or
//! `cargo build -p tcptrace && cargo test -p integration-tests -- --test-threads=1`.

use integration_tests::{
    Tracer, kernel, lab,
    scenario::{
        ActiveClose, CLOSE_DELAY, DWELL_CEILING, active_close_done, assert_active_close, local_port,
    },
};

/// Test 1: the client closes first. Both sockets go through every state with
/// the right owner: the client from `connect()`, the server child from its
/// first `recv()`, never the task that happened to be on the CPU.
#[test]
fn active_close_by_client_ipv4() {
    let lab = lab!();
    let sc = ActiveClose::new(&lab, "127.0.0.1:29101");
    let tracer = Tracer::start(&["--port", "29101"]);
    let conn = sc.run();
    tracer.wait_for(|evs| active_close_done(&conn, evs));
    let t = tracer.stop();
    t.assert_clean_exit();
    assert_active_close(&t, &conn, "ipv4", "127.0.0.1");
}

/// Test 1b: the same lifecycle through each way of reading tracepoint
/// records. This kernel has the standard layouts, read straight from the
/// context; `TCPTRACE_COPY_RECORDS=1` forces the copy at tracefs offsets that
/// kernels with other layouts get. Both must trace the same thing.
#[test]
fn active_close_through_direct_loads_and_through_the_record_copy() {
    // Before Linux 6.3 recv and send are traced by fexit, which reads
    // arguments, not records: the line leaves them out.
    let io = kernel::has_tracepoint("sock", "sock_recv_length");
    let access = |how: &str| {
        if io {
            format!(
                "inet_sock_set_state {how}, sock_recv_length/sock_send_length {how}, \
                 tcp_destroy_sock {how}"
            )
        } else {
            format!("inet_sock_set_state {how}, tcp_destroy_sock {how}")
        }
    };
    for (copy, port, access) in [
        ("0", 29107, access("direct")),
        ("1", 29108, access("copied")),
    ] {
        let lab = lab!();
        let addr = format!("127.0.0.1:{port}");
        let sc = ActiveClose::new(&lab, &addr);
        let p = port.to_string();
        let tracer = Tracer::start_env(&[("TCPTRACE_COPY_RECORDS", copy)], &["--port", &p, "-v"]);
        let conn = sc.run();
        tracer.wait_for(|evs| active_close_done(&conn, evs));
        let t = tracer.stop();
        assert!(
            t.stderr.contains(&format!("record access: {access}")),
            "TCPTRACE_COPY_RECORDS={copy}: expected `{access}` in:\n{}",
            t.stderr
        );
        t.assert_clean_exit();
        assert_active_close(&t, &conn, "ipv4", "127.0.0.1");
    }
}

/// Test 2: the server closes first. Now the server child is the active closer
/// (`FIN_WAIT1`, `FIN_WAIT2`) and the client waits in `CLOSE_WAIT`.
#[test]
fn passive_close_server_closes_first() {
    let lab = lab!();
    let tracer = Tracer::start(&["--port", "29102"]);
    let addr = "127.0.0.1:29102";
    let delay = CLOSE_DELAY.as_millis().to_string();
    let server = lab.server(&["--addr", addr, "--read-request", "--reply"]);
    let mut client = lab.client(&[
        "--addr",
        addr,
        "--send",
        "--read-reply",
        "--wait-peer-close",
        "--close-delay-ms",
        &delay,
    ]);
    let cport = local_port(&client.wait_line("connected "));
    let (s, c) = (Some(server.pid()), Some(client.pid()));
    server.wait_success();
    let lines = client.wait_success();
    assert!(
        lines.iter().any(|l| l == "peer-closed"),
        "client: {lines:?}"
    );
    tracer.wait_for(|evs| {
        evs.iter()
            .any(|e| e.sport() == cport && e.transition() == ("LAST_ACK", "CLOSE"))
            && evs
                .iter()
                .any(|e| e.sport() == 29102 && e.transition() == ("FIN_WAIT2", "CLOSE"))
    });
    let t = tracer.stop();
    t.assert_clean_exit();

    let child = t.socket("server child", |k| k.has_ports(29102, cport));
    child.assert_transitions(
        "server child",
        &[
            ("LISTEN", "SYN_RECV"),
            ("SYN_RECV", "ESTABLISHED"),
            ("ESTABLISHED", "FIN_WAIT1"),
            ("FIN_WAIT1", "FIN_WAIT2"),
            ("FIN_WAIT2", "CLOSE"),
        ],
    );
    // FIN_WAIT1 -> FIN_WAIT2 and FIN_WAIT2 -> CLOSE run in the client's
    // context on loopback: they must still name the server.
    child.assert_pids("server child", &[None, None, s, s, s]);

    let client = t.socket("client", |k| k.has_ports(cport, 29102));
    client.assert_transitions(
        "client",
        &[
            ("CLOSE", "SYN_SENT"),
            ("SYN_SENT", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE_WAIT"),
            ("CLOSE_WAIT", "LAST_ACK"),
            ("LAST_ACK", "CLOSE"),
        ],
    );
    // ESTABLISHED -> CLOSE_WAIT runs in the server's context here.
    client.assert_pids("client", &[c; 5]);
    let dwell = client
        .event("CLOSE_WAIT", "LAST_ACK")
        .dwell()
        .expect("a known dwell");
    assert!(
        dwell >= CLOSE_DELAY && dwell < DWELL_CEILING,
        "the client's CLOSE_WAIT lasted {dwell:?}, it closed {CLOSE_DELAY:?} after EOF:\n{client}"
    );

    let listener = t.socket("listener", |k| k.is_listener_on(29102));
    listener.assert_transitions("listener", &[("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")]);
    listener.assert_pids("listener", &[s, s]);
    assert_eq!(t.resets().count(), 0, "{t}");
}

/// Test 3a: `close()` with `SO_LINGER` {1, 0} aborts: the client sends a RST
/// (reason `TCP_STATE`), the server's socket receives it, and both sockets go
/// ESTABLISHED -> CLOSE directly.
#[test]
fn linger0_close_sends_reset_tcp_state() {
    let lab = lab!();
    let tracer = Tracer::start(&["--port", "29103"]);
    let addr = "127.0.0.1:29103";
    let server = lab.server(&[
        "--addr",
        addr,
        "--read-request",
        "--reply",
        "--wait-peer-close",
    ]);
    let mut client = lab.client(&["--addr", addr, "--send", "--read-reply", "--linger0"]);
    let cport = local_port(&client.wait_line("connected "));
    let (s, c) = (Some(server.pid()), Some(client.pid()));
    client.wait_success();
    let lines = server.wait_success();
    assert!(lines.iter().any(|l| l == "peer-reset"), "server: {lines:?}");
    tracer.wait_for(|evs| {
        evs.iter().filter(|e| e.is_reset()).count() >= 2
            && evs
                .iter()
                .any(|e| e.sport() == 29103 && e.transition() == ("LISTEN", "CLOSE"))
    });
    let t = tracer.stop();
    t.assert_clean_exit();

    let sent = t.reset("sent", |e| e.direction() == "sent");
    assert_eq!(
        (sent.sport(), sent.dport()),
        (cport, 29103),
        "sent by the client: {sent}"
    );
    assert_eq!(
        sent.reason(),
        kernel::sent_reset_reason("TCP_STATE"),
        "{sent}"
    );
    assert!(
        sent.reset_state().is_some(),
        "the RST came from a socket: {sent}"
    );

    let received = t.reset("received", |e| e.direction() == "received");
    assert_eq!(
        (received.sport(), received.dport()),
        (29103, cport),
        "{received}"
    );
    assert_eq!(received.reset_state(), Some("ESTABLISHED"), "{received}");
    assert_eq!(
        received.reason(),
        None,
        "received resets carry no reason: {received}"
    );
    assert_eq!(
        received.pid(),
        s,
        "the server's socket received it: {received}"
    );

    let client = t.socket("client", |k| k.has_ports(cport, 29103));
    client.assert_transitions(
        "client",
        &[
            ("CLOSE", "SYN_SENT"),
            ("SYN_SENT", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE"),
        ],
    );
    client.assert_pids("client", &[c; 3]);
    let child = t.socket("server child", |k| k.has_ports(29103, cport));
    child.assert_transitions(
        "server child",
        &[
            ("LISTEN", "SYN_RECV"),
            ("SYN_RECV", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE"),
        ],
    );
    child.assert_pids("server child", &[None, None, s]);

    // Last, so that everything else is checked first: the kernel sends this
    // RST just after the socket's ESTABLISHED -> CLOSE.
    assert_eq!(sent.pid(), c, "the client's close() sent it: {sent}\n{t}");
}

/// Test 3b: `close()` with unread data aborts with `TCP_ABORT_ON_CLOSE`. The
/// server peeks at the request (a recv: it becomes the owner) and closes
/// without reading it.
#[test]
fn close_with_unread_data_sends_reset_abort_on_close() {
    let lab = lab!();
    let tracer = Tracer::start(&["--port", "29104"]);
    let addr = "127.0.0.1:29104";
    let server = lab.server(&["--addr", addr, "--leave-unread"]);
    let mut client = lab.client(&["--addr", addr, "--send", "--wait-peer-close"]);
    let cport = local_port(&client.wait_line("connected "));
    let (s, c) = (Some(server.pid()), Some(client.pid()));
    server.wait_success();
    let lines = client.wait_success();
    assert!(lines.iter().any(|l| l == "peer-reset"), "client: {lines:?}");
    tracer.wait_for(|evs| {
        evs.iter().filter(|e| e.is_reset()).count() >= 2
            && evs
                .iter()
                .any(|e| e.sport() == 29104 && e.transition() == ("LISTEN", "CLOSE"))
    });
    let t = tracer.stop();
    t.assert_clean_exit();

    let sent = t.reset("sent", |e| e.direction() == "sent");
    assert_eq!(
        (sent.sport(), sent.dport()),
        (29104, cport),
        "sent by the server: {sent}"
    );
    assert_eq!(
        sent.reason(),
        kernel::sent_reset_reason("TCP_ABORT_ON_CLOSE"),
        "{sent}"
    );

    let received = t.reset("received", |e| e.direction() == "received");
    assert_eq!(
        (received.sport(), received.dport()),
        (cport, 29104),
        "{received}"
    );
    assert_eq!(received.reset_state(), Some("ESTABLISHED"), "{received}");
    assert_eq!(received.pid(), c, "{received}");

    let child = t.socket("server child", |k| k.has_ports(29104, cport));
    child.assert_transitions(
        "server child",
        &[
            ("LISTEN", "SYN_RECV"),
            ("SYN_RECV", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE"),
        ],
    );
    child.assert_pids("server child", &[None, None, s]);
    let client = t.socket("client", |k| k.has_ports(cport, 29104));
    client.assert_transitions(
        "client",
        &[
            ("CLOSE", "SYN_SENT"),
            ("SYN_SENT", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE"),
        ],
    );
    client.assert_pids("client", &[c; 3]);

    // Last, so that everything else is checked first: the kernel sends this
    // RST just after the socket's ESTABLISHED -> CLOSE.
    assert_eq!(sent.pid(), s, "the server's close() sent it: {sent}\n{t}");
}

/// Test 4: a SYN to a port nobody listens on. The kernel answers with a RST
/// that has no socket (`NO_SOCKET`: no state, no owner); the client's socket
/// receives it and goes `SYN_SENT` -> CLOSE.
#[test]
fn connect_to_closed_port_is_reset_no_socket() {
    if !kernel::send_reset_has_reason() {
        kernel::unsupported(
            "tcp:tcp_send_reset fires for a reset sent without a socket from Linux 6.10",
        );
    }
    let lab = lab!();
    let tracer = Tracer::start(&["--port", "29105"]);
    let client = lab.client(&["--addr", "127.0.0.1:29105", "--expect-refused"]);
    let c = Some(client.pid());
    let lines = client.wait_success();
    assert!(lines.iter().any(|l| l == "refused"), "client: {lines:?}");
    tracer.wait_for(|evs| {
        evs.iter().filter(|e| e.is_reset()).count() >= 2
            && evs.iter().any(|e| e.transition() == ("SYN_SENT", "CLOSE"))
    });
    let t = tracer.stop();
    t.assert_clean_exit();

    let client = t.socket("client", |k| k.events.iter().all(|e| e.dport() == 29105));
    client.assert_transitions("client", &[("CLOSE", "SYN_SENT"), ("SYN_SENT", "CLOSE")]);
    client.assert_pids("client", &[c, c]);
    let cport = client.events[1].sport();
    assert_ne!(
        cport, 0,
        "the port is known by SYN_SENT -> CLOSE:\n{client}"
    );

    let sent = t.reset("sent", |e| e.direction() == "sent");
    assert_eq!(
        (sent.sport(), sent.dport()),
        (29105, cport),
        "sent for the closed port: {sent}"
    );
    assert_eq!(sent.reason(), Some("NO_SOCKET"), "{sent}");
    assert_eq!(sent.reset_state(), None, "no socket, no state: {sent}");
    assert_eq!(sent.pid(), None, "no socket, no owner: {sent}");
    assert_eq!(sent.skaddr(), "0x0", "{sent}");

    let received = t.reset("received", |e| e.direction() == "received");
    assert_eq!(
        (received.sport(), received.dport()),
        (cport, 29105),
        "{received}"
    );
    assert_eq!(
        received.skaddr(),
        client.skaddr,
        "the client's socket: {received}"
    );
    assert_eq!(received.reset_state(), Some("SYN_SENT"), "{received}");
    assert_eq!(received.pid(), c, "{received}");
    assert_eq!(t.sockets().len(), 1, "{t}");
}

/// Test 5: the same lifecycle as test 1 over IPv6 on `::1`; a second tracer
/// running at the same time with `-4` sees none of it.
#[test]
fn active_close_ipv6_and_ipv4_filter() {
    let lab = lab!();
    let sc = ActiveClose::new(&lab, "[::1]:29106");
    let tracer = Tracer::start(&["--port", "29106"]);
    let v4only = Tracer::start(&["-4", "--port", "29106"]);
    let conn = sc.run();
    tracer.wait_for(|evs| active_close_done(&conn, evs));
    let t = tracer.stop();
    let t4 = v4only.stop();
    t.assert_clean_exit();
    assert_active_close(&t, &conn, "ipv6", "::1");

    t4.assert_clean_exit();
    assert!(t4.events.is_empty(), "-4 printed IPv6 events:\n{t4}");
    assert!(
        t4.stderr.contains("tcptrace: 0 events (0 state, 0 reset)"),
        "-4 filters in the kernel, so nothing reaches userspace:\n{}",
        t4.stderr
    );
}
