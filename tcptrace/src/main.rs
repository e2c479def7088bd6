//! `tcptrace` binary: the exit-code contract (ripgrep's). Success and a closed
//! stdout exit 0; errors print `tcptrace: <error>` on stderr and exit 1; bad
//! flags are clap's (exit 2). Run with `worker::ARG` first, it is the leak
//! reports' symbolizer process instead (`host::symbolize`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tcptrace::{
    cli::Cli,
    host::symbolize::worker,
    kernel::{
        load::{self, LoadOptions},
        settings::kernel_config,
    },
    model::plan::Plan,
    runtime,
};

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(worker::ARG)) {
        return worker::main();
    }
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
    let plan = cli.plan().unwrap_or_else(|e| e.exit());
    match run(&plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcptrace: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(plan: &Plan) -> anyhow::Result<()> {
    let tracer = load::load(LoadOptions {
        config: kernel_config(plan),
        ringbuf_bytes: plan.sizes.ringbuf_bytes,
        max_sockets: plan.sizes.max_sockets,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(runtime::run(plan, tracer))?;
    Ok(())
}
