//! `tcptrace` binary: the exit-code contract (ripgrep's). Success and a closed
//! stdout exit 0; errors print `tcptrace: <error>` on stderr and exit 1; bad
//! flags are clap's (exit 2).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tcptrace::{
    cli::Cli,
    filter,
    loader::{self, LoadOptions},
    stream::{self, End},
};
use tcptrace_common::Config;

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
    let mut config = Config {
        emit_resets: 1,
        emit_old_states: tcptrace_common::config::EMIT_ALL_STATES,
        ..Config::default()
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
    let (end, summary) = rt.block_on(stream::run(cli, tracer))?;
    if end == End::Stopped {
        eprintln!("{summary}");
    }
    Ok(())
}
