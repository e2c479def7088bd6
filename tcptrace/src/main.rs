//! `tcptrace` binary: the exit-code contract (ripgrep's). Success and a closed
//! stdout exit 0; errors print `tcptrace: <error>` on stderr and exit 1; bad
//! flags are clap's (exit 2).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use tcptrace::{
    cli::Cli,
    histmode::{self, HistOptions},
    leakmode::{self, LeakOptions},
    loader::{self, LoadOptions},
    stream::{self, End},
    twmode::{self, TimewaitOptions},
};
use tcptrace_common::HistBy;

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
    let tracer = loader::load(LoadOptions {
        config: cli.kernel_config(),
        ringbuf_bytes: cli.ringbuf_kib * 1024,
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
