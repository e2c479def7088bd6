//! `tcptrace` binary: the exit-code contract (ripgrep's). Success and a closed
//! stdout exit 0; errors print `tcptrace: <error>` on stderr and exit 1; bad
//! flags are clap's (exit 2).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use tcptrace::{
    cli::Cli,
    filter,
    leakmode::{self, LeakOptions},
    loader::{self, LoadOptions},
    stream::{self, End},
};
use tcptrace_common::{Config, TcpState, config::EMIT_ALL_STATES};

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
    let mut config = if cli.closewait_leaks {
        // Reports come from the socket map; only CLOSE_WAIT exits stream.
        Config {
            capture_stacks: 1,
            emit_old_states: 1 << (TcpState::CloseWait as u32),
            ..Config::default()
        }
    } else {
        Config {
            emit_resets: 1,
            emit_old_states: EMIT_ALL_STATES,
            ..Config::default()
        }
    };
    filter::apply_kernel_filters(cli, &mut config);
    let tracer = loader::load(LoadOptions {
        config,
        ringbuf_bytes: cli.ringbuf_kib * 1024,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
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
