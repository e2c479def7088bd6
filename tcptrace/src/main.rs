//! `tcptrace` binary: the exit-code contract (ripgrep's). Success and a closed
//! stdout exit 0; errors print `tcptrace: <error>` on stderr and exit 1; bad
//! flags are clap's (exit 2).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use tcptrace::{
    cli::Cli,
    filter,
    histmode::{self, HistOptions},
    leakmode::{self, LeakOptions},
    loader::{self, LoadOptions},
    stream::{self, End},
    twmode::{self, TimewaitOptions},
};
use tcptrace_common::{Config, HistBy, TcpState, config::ALL_STATES};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_default_env()
        .target(env_logger::Target::Stderr)
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcptrace: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let mut config = if cli.hist {
        // Dwell is counted in the kernel and TIME_WAIT followed through
        // sock_diag; only resets stream.
        Config {
            hist_by: cli.by.unwrap_or(HistBy::State) as u32,
            timed_states: ALL_STATES,
            // Only dwell and the closer's pid are needed: the lean socket
            // map, unless histograms are split by comm.
            lean_socks: u8::from(cli.by != Some(HistBy::Comm)),
            emit_resets: 1,
            ..Config::default()
        }
    } else if cli.timewait {
        // Entries into TIME_WAIT (out of FIN_WAIT2 or CLOSING, with who
        // closed first), connects (to see tcp_tw_reuse kill a TIME_WAIT),
        // and failed bind()/connect() calls.
        Config {
            // State, entry time and the closer's pid and tid per socket;
            // the closer's comm is noted per thread and joined to the
            // TIME_WAIT entry's record in the kernel. Connects need only
            // their endpoints.
            lean_socks: 1,
            named_old_states: (1 << (TcpState::FinWait2 as u32))
                | (1 << (TcpState::Closing as u32)),
            noted_new_states: 1 << (TcpState::FinWait1 as u32),
            // No dwell: the census times TIME_WAIT from its entry record
            // and the kernel's timers.
            timed_states: 0,
            emit_failures: 1,
            emit_old_states: (1 << (TcpState::FinWait2 as u32))
                | (1 << (TcpState::Closing as u32))
                | (1 << (TcpState::SynSent as u32)),
            ..Config::default()
        }
    } else if cli.closewait_leaks {
        // Reports come from the socket store; nothing streams.
        Config {
            // State and entry time of every socket in the lean store;
            // owner, stacks, EOF and endpoints only for sockets that their
            // owner reads or writes, or that enter CLOSE_WAIT.
            lean_socks: 1,
            sock_details: 1,
            capture_stacks: 1,
            // Reports need the CLOSE_WAIT dwell only.
            timed_states: 1 << (TcpState::CloseWait as u32),
            // No record: the summary of CLOSE_WAIT sockets closed during
            // the run comes from the kernel's histogram of that dwell (the
            // only one timed) and its count of those past --min-age.
            hist_by: HistBy::State as u32,
            long_dwell_ns: u64::try_from(cli.min_age.as_nanos()).unwrap_or(u64::MAX),
            ..Config::default()
        }
    } else {
        Config {
            emit_resets: 1,
            emit_old_states: ALL_STATES,
            timed_states: ALL_STATES,
            ..Config::default()
        }
    };
    filter::apply_kernel_filters(cli, &mut config);
    // Histograms by state, port or address and the TIME_WAIT census need
    // owners only from close() (process context, no recv/send hook); --by
    // comm, the stream and leak reports need the owners of accepted sockets
    // from their first recv/send, and leak mode their EOF.
    let io_hooks = !(cli.timewait || (cli.hist && cli.by != Some(HistBy::Comm)));
    let tracer = loader::load(LoadOptions {
        config,
        ringbuf_bytes: cli.ringbuf_kib * 1024,
        io_hooks,
        max_sockets: cli.max_sockets,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    if cli.hist {
        let opts = HistOptions {
            interval: cli.interval.unwrap_or(Duration::from_secs(10)),
            by: cli.by.unwrap_or(HistBy::State),
        };
        rt.block_on(histmode::run(cli, tracer, opts))?;
        return Ok(());
    }
    if cli.timewait {
        let opts = TimewaitOptions {
            interval: cli.interval.unwrap_or(Duration::from_secs(10)),
            sysctl_root: twmode::default_sysctl_root(),
        };
        rt.block_on(twmode::run(cli, tracer, opts))?;
        return Ok(());
    }
    if cli.closewait_leaks {
        let opts = LeakOptions {
            min_age: cli.min_age,
            interval: cli.interval.unwrap_or(Duration::from_secs(10)),
        };
        rt.block_on(leakmode::run(cli, tracer, opts))?;
        return Ok(());
    }
    let (end, summary) = rt.block_on(stream::run(cli, tracer))?;
    if end == End::Stopped {
        eprintln!("{summary}");
    }
    Ok(())
}
