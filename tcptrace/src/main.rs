//! `tcptrace` binary: the exit-code contract (ripgrep's). Success and a closed
//! stdout exit 0; errors print `tcptrace: <error>` on stderr and exit 1; bad
//! flags are clap's (exit 2). Run with `worker::ARG` first, it is the leak
//! reports' symbolizer process instead (`host::symbolize`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use env_logger::fmt::{ConfigurableFormat, Formatter};
use tcptrace::{
    cli::Cli,
    host::{netns::Namespaces, symbolize::worker},
    kernel::{
        load::{self, LoadOptions},
        settings::kernel_config,
    },
    model::plan::Plan,
    report::text::escape,
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
        .format(escaped_log_line)
        .init();
    let plan = cli.plan().unwrap_or_else(|e| e.exit());
    match run(&plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcptrace: {}", escape(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `env_logger`'s default line, with the message through [`escape`]: a
/// message may quote what a traced process controls (a module path in a
/// symbolization error), and no log line may put a control character on
/// the operator's terminal.
fn escaped_log_line(buf: &mut Formatter, record: &log::Record<'_>) -> std::io::Result<()> {
    let message = record.args().to_string();
    ConfigurableFormat::default().format(
        buf,
        &log::Record::builder()
            .args(format_args!("{}", escape(&message)))
            .level(record.level())
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build(),
    )
}

/// The host's network namespaces, and the one `--netns` names. Without
/// `--netns` a failure only narrows the run to tcptrace's own namespace.
fn scope(plan: &Plan) -> anyhow::Result<runtime::Scope> {
    let mut namespaces = match Namespaces::new() {
        Ok(n) => Some(n),
        Err(e) if plan.scope.netns.is_none() => {
            eprintln!(
                "tcptrace: warning: {e}: sock_diag, the sysctls and netstat are read in \
                 tcptrace's own network namespace only"
            );
            None
        }
        Err(e) => return Err(e).context("--netns"),
    };
    let only = match (&plan.scope.netns, namespaces.as_mut()) {
        (Some(spec), Some(n)) => Some(n.resolve(spec).with_context(|| format!("--netns {spec}"))?),
        _ => None,
    };
    Ok(runtime::Scope { namespaces, only })
}

fn run(plan: &Plan) -> anyhow::Result<()> {
    let scope = scope(plan)?;
    let mut config = kernel_config(plan);
    config.netns_filter = scope.only.map_or(0, |n| n.0);
    let tracer = load::load(LoadOptions {
        config,
        ringbuf_bytes: plan.sizes.ringbuf_bytes,
        max_sockets: plan.sizes.max_sockets,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(runtime::run(plan, tracer, scope))?;
    Ok(())
}
