//! `tcptrace` binary: the exit-code contract (ripgrep's). Success and a closed
//! stdout exit 0; errors print `tcptrace: <error>` on stderr and exit 1; bad
//! flags are clap's (exit 2). Run with `worker::ARG` first, it is the leak
//! reports' symbolizer process instead (`host::symbolize`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use env_logger::fmt::{ConfigurableFormat, Formatter};
use tcptrace::{
    cli::{Cli, generate},
    host::{netns::Namespaces, symbolize::worker, uname},
    kernel::{
        features,
        load::{self, LoadOptions},
        settings::kernel_config,
    },
    model::plan::Plan,
    report::{text::escape, version},
    runtime,
};

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(worker::ARG)) {
        return worker::main();
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if generate::verbose_version(&args) {
        return print_stdout(&verbose_version());
    }
    let cli = Cli::parse();
    if let Some(what) = cli.generate {
        let mut out = Vec::new();
        return match generate::generate(what, &mut out) {
            Ok(()) => print_stdout(&String::from_utf8_lossy(&out)),
            Err(e) => fail(&anyhow::Error::new(e).context("--generate")),
        };
    }
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
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("tcptrace: {}", escape(&format!("{err:#}")));
    ExitCode::FAILURE
}

/// Write `text` to stdout; a closed stdout is a success, like the stream's.
fn print_stdout(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// `--version -v`: the version line as clap prints it, then what the
/// running kernel offers.
fn verbose_version() -> String {
    use clap::CommandFactory as _;
    let mut text = Cli::command().render_version();
    version::kernel_features(&mut text, &features::probe(uname::kernel_release()));
    text
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
