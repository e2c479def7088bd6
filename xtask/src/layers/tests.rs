//! The layer lint on small source trees held in memory: a clean tree passes,
//! and each rule catches its violations (in `use` lines, nested `use` trees,
//! inline paths and macro bodies).

use super::*;

/// The crates of the fixtures' package, as tcptrace's manifest lists them.
const MANIFEST: &str = r#"
[package]
name = "tcptrace"
version.workspace = true

[dependencies]
tcptrace-common = { path = "../tcptrace-common", features = ["user"] }
aya = { workspace = true }
aya-log = { workspace = true }
blazesym = { workspace = true }
clap = { workspace = true }
log = { workspace = true }
netlink-sys = { workspace = true }
nix = { workspace = true }
procfs = { workspace = true }
prometheus-client = { workspace = true }
serde = { workspace = true }
serde_json = { workspace = true }
thiserror = { workspace = true }
tokio = { workspace = true }

[dev-dependencies]
tempfile = "3"

[build-dependencies]
aya-build = { workspace = true }
"#;

fn check(files: &[(&str, &str)]) -> Vec<Violation> {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), (*s).to_owned()))
        .collect();
    check_tree(&files, &Crates::from_manifest(MANIFEST))
}

/// `(file, line, rule)` of each violation, for comparing.
fn found(v: &[Violation]) -> Vec<(String, usize, Rule)> {
    v.iter()
        .map(|v| (v.file.display().to_string(), v.line, v.rule))
        .collect()
}

fn at(file: &str, line: usize, rule: Rule) -> (String, usize, Rule) {
    (file.to_owned(), line, rule)
}

/// A small tree laid out as the rules want, touching every allowed edge.
const CLEAN: &[(&str, &str)] = &[
    (
        "main.rs",
        "use clap::Parser as _;\n\
         use tcptrace::{cli::Cli, runtime};\n\
         fn main() { let cli = Cli::parse(); runtime::run(cli.json); }\n",
    ),
    (
        "lib.rs",
        "pub mod analyses;\npub mod cli;\npub mod host;\npub mod kernel;\n\
         pub mod model;\npub mod report;\npub mod runtime;\n",
    ),
    (
        "cli.rs",
        "#[derive(clap::Parser)]\npub struct Cli { pub json: bool }\n",
    ),
    (
        "model/mod.rs",
        "pub mod event;\npub use event::Event;\nuse self::event::parse;\n\
         pub(super) fn f() {}\npub(in crate::model) fn g() {}\n",
    ),
    (
        "model/event.rs",
        "//! Reads nothing: /proc is host's.\n\
         use serde::Serialize;\n\
         use tcptrace_common::Record;\n\
         /// From /proc/net/tcp's numbering.\n\
         #[derive(Serialize, thiserror::Error, Debug)]\n\
         #[error(\"event {0}\")]\n\
         pub struct Event(u32);\n\
         pub fn parse(r: &Record) -> Event { Event(core::convert::identity(r.0)) }\n\
         pub fn name(e: &Event) -> String { std::format!(\"{}\", e.0) }\n\
         pub(crate) fn id(e: &Event) -> u32 { e.0 }\n\
         macro_rules! wrap { ($n:ident) => { pub(crate) struct $n(pub(super) u32); }; }\n\
         #[cfg(test)]\n\
         mod tests {\n\
             use super::*;\n\
             #[test]\n\
             fn reads() {\n\
                 let _ = std::fs::read_to_string(\"/proc/self/stat\");\n\
                 let _ = tempfile::tempdir();\n\
                 assert_eq!(crate::model::event::name(&Event(1)), \"1\");\n\
             }\n\
         }\n",
    ),
    (
        "kernel/mod.rs",
        "pub mod maps;\nuse crate::model::Event;\n\
         pub fn load() -> aya::Ebpf { todo!() }\n",
    ),
    (
        "kernel/maps.rs",
        "use aya::maps::RingBuf;\nuse super::load;\n",
    ),
    (
        "host/sockdiag.rs",
        "use netlink_sys::Socket;\nuse crate::model;\n\
         pub fn read() { let _ = std::fs::read(\"/proc/net/tcp\"); }\n",
    ),
    (
        "report/text.rs",
        "use crate::model::Event;\nuse prometheus_client::registry::Registry;\n\
         pub fn render(e: &Event) -> String { format!(\"{}\", crate::model::event::name(e)) }\n",
    ),
    (
        "analyses/mod.rs",
        "pub mod hist;\npub mod stream;\npub trait Analysis {}\n\
         pub use hist::Hist;\npub use crate::analyses::stream::Stream;\n",
    ),
    (
        "analyses/stream.rs",
        "use super::Analysis;\nuse crate::analyses::Analysis as A;\n\
         use crate::{report::text, kernel::maps, host::sockdiag, model::Event};\n\
         pub struct Stream;\n",
    ),
    (
        "analyses/hist/mod.rs",
        "mod buckets;\nuse buckets::Buckets;\nuse super::Analysis;\npub struct Hist;\n",
    ),
    (
        "analyses/hist/buckets.rs",
        "use super::super::Analysis;\nuse crate::analyses::hist::Hist;\n\
         use super::Hist as H;\npub struct Buckets;\n",
    ),
    (
        "runtime/mod.rs",
        "use crate::{analyses::stream, host, kernel, report};\n\
         pub fn run(json: bool) { tokio::task::yield_now(); log::info!(\"{}\", crate::model::event::name); }\n",
    ),
    (
        "cli/help.rs",
        "use crate::cli::Cli;\nuse super::Cli as C;\n",
    ),
];

#[test]
fn a_clean_tree_passes() {
    let v = check(CLEAN);
    assert!(v.is_empty(), "{v:#?}");
}

fn with(extra: &[(&'static str, &'static str)]) -> Vec<Violation> {
    let mut files: Vec<(&str, &str)> = CLEAN
        .iter()
        .filter(|(p, _)| !extra.iter().any(|(q, _)| q == p))
        .copied()
        .collect();
    files.extend_from_slice(extra);
    check(&files)
}

#[test]
fn rule_1_model_names_only_model_std_and_its_crates() {
    let src = "use crate::kernel::maps::Ring;\n\
               use crate::{model::event::Event, report::text};\n\
               use procfs::process::Process;\n\
               use crate::host::sockdiag as diag;\n\
               pub fn f() -> crate::host::Socks { todo!() }\n\
               pub fn g() { let _ = ::aya::Ebpf::load(&[]); }\n\
               pub fn h() { log::warn!(\"{}\", crate::analyses::hist::Hist); }\n\
               pub fn i() { let _ = format!(\"{:?}\", tokio::time::Instant::now()); }\n\
               use serde::Serialize;\n\
               pub fn j() -> std::time::Duration { let _ = tempfile::tempdir(); todo!() }\n\
               #[cfg(test)]\n\
               mod tests {\n\
                   use tokio::runtime::Runtime;\n\
                   fn t() { let _ = tempfile::tempdir(); }\n\
               }\n";
    let v = with(&[("model/flow.rs", src)]);
    let f = "model/flow.rs";
    assert_eq!(
        found(&v),
        [
            at(f, 1, Rule::ModelPure),  // use crate::kernel…
            at(f, 2, Rule::ModelPure),  // nested: report::text
            at(f, 3, Rule::ModelPure),  // procfs
            at(f, 4, Rule::ModelPure),  // renamed use
            at(f, 5, Rule::ModelPure),  // inline, in a type
            at(f, 6, Rule::ModelPure),  // inline ::aya
            at(f, 7, Rule::ModelPure),  // log::warn!
            at(f, 7, Rule::ModelPure),  // crate::analyses in the macro body
            at(f, 8, Rule::ModelPure),  // tokio in format!'s body
            at(f, 10, Rule::ModelPure), // a dev crate outside tests
            at(f, 13, Rule::ModelPure), // tokio in tests: not a dev crate
        ]
    );
    assert!(v[1].what.contains("crate::report::text"), "{}", v[1]);
    assert!(v[6].what.contains("log"), "{}", v[6]);
}

#[test]
fn rule_1_model_reads_no_system_paths_outside_tests() {
    let src = "/// Parses /proc/net/tcp lines.\n\
               const TCP: &str = \"/proc/net/tcp\";\n\
               pub fn f(p: u32) -> String { format!(\"/sys/class/net/{p}\") }\n\
               pub fn g() -> &'static [u8] { b\"/proc/self\" }\n\
               const OK: &str = \"proc/not-a-path\";\n\
               #[cfg(test)]\n\
               mod tests {\n\
                   #[test]\n\
                   fn t() { let _ = std::fs::read(\"/proc/self/stat\"); }\n\
               }\n\
               #[cfg(test)]\n\
               mod more;\n";
    let test_file = "#[test]\nfn u() { let _ = std::fs::read(\"/sys/kernel\"); }\n\
                     use crate::host::sockdiag;\n";
    let v = with(&[("model/parse.rs", src), ("model/parse/more.rs", test_file)]);
    assert_eq!(
        found(&v),
        [
            // A test-only file may read /proc, but keeps to the layers.
            at("model/parse/more.rs", 3, Rule::ModelPure),
            at("model/parse.rs", 2, Rule::ModelPure),
            at("model/parse.rs", 3, Rule::ModelPure),
            at("model/parse.rs", 4, Rule::ModelPure),
        ]
    );
    assert!(v[1].what.contains("/proc/net/tcp"), "{}", v[1]);
}

#[test]
fn rule_2_report_reads_nothing() {
    let src = "use crate::host::sysctl;\n\
               use crate::{model::Event, runtime::Loop};\n\
               pub fn f(m: &tokio::sync::Mutex<u8>) {}\n\
               pub fn g(k: u8) -> bool { matches!(k, crate::analyses::KIND) }\n\
               use crate::kernel;\n\
               pub fn h() { let _ = aya_log::EbpfLogger::init; }\n\
               use netlink_sys::Socket;\n\
               use procfs::net;\n\
               use blazesym::symbolize;\n\
               use prometheus_client::encoding::EncodeMetric;\n\
               use nix::unistd::Pid;\n";
    let v = with(&[("report/prom.rs", src)]);
    let f = "report/prom.rs";
    assert_eq!(
        found(&v),
        [
            at(f, 1, Rule::ReportApart),
            at(f, 2, Rule::ReportApart), // nested: runtime::Loop
            at(f, 3, Rule::ReportApart), // inline tokio type
            at(f, 4, Rule::ReportApart), // in matches!
            at(f, 5, Rule::ReportApart),
            at(f, 6, Rule::ReportApart),
            at(f, 7, Rule::ReportApart),
            at(f, 8, Rule::ReportApart),
            at(f, 9, Rule::ReportApart),
        ]
    );
}

#[test]
fn rule_3_kernel_and_host_stay_below_and_apart() {
    let kernel = "use crate::host::procs;\n\
                  use crate::report;\n\
                  pub fn f() { log::debug!(\"{}\", crate::runtime::NAME); }\n\
                  use crate::model::Event;\n";
    let host = "pub fn g() { crate::kernel::maps::SOCKS.get(); }\n\
                use crate::{model::Event, analyses::hist};\n\
                use super::super::kernel::load;\n";
    let v = with(&[("kernel/loader.rs", kernel), ("host/procs.rs", host)]);
    assert_eq!(
        found(&v),
        [
            at("host/procs.rs", 1, Rule::KernelHostBelow), // inline
            at("host/procs.rs", 2, Rule::KernelHostBelow), // nested
            at("host/procs.rs", 3, Rule::KernelHostBelow), // super::super
            at("kernel/loader.rs", 1, Rule::KernelHostBelow),
            at("kernel/loader.rs", 2, Rule::KernelHostBelow),
            at("kernel/loader.rs", 3, Rule::KernelHostBelow), // macro body
        ]
    );
}

#[test]
fn rule_4_no_analysis_uses_another() {
    let stream = "use crate::analyses::hist::Buckets;\n\
                  use super::timewait;\n\
                  use super::{Analysis, closewait::Leak};\n\
                  use crate::analyses::Analysis as A;\n\
                  pub fn f() { log::info!(\"{}\", crate::analyses::closewait::NAME); }\n\
                  pub fn g() -> crate::analyses::timewait::Tw { todo!() }\n";
    let render = "use super::super::stream::Stream;\n\
                  use super::Hist;\n\
                  use crate::analyses::hist::Hist as H;\n";
    let v = with(&[
        ("analyses/stream.rs", stream),
        ("analyses/hist/render.rs", render),
        ("analyses/timewait.rs", "pub struct Tw;\n"),
        ("analyses/closewait/mod.rs", "pub struct Leak;\n"),
    ]);
    assert_eq!(
        found(&v),
        [
            at("analyses/hist/render.rs", 1, Rule::AnalysesApart),
            at("analyses/stream.rs", 1, Rule::AnalysesApart),
            at("analyses/stream.rs", 2, Rule::AnalysesApart), // super::<b>
            at("analyses/stream.rs", 3, Rule::AnalysesApart), // nested
            at("analyses/stream.rs", 5, Rule::AnalysesApart), // macro body
            at("analyses/stream.rs", 6, Rule::AnalysesApart), // inline
        ]
    );
}

#[test]
fn rule_5_only_main_and_cli_use_the_cli() {
    let runtime = "use crate::cli::Cli;\n\
                   pub fn run(cli: &Cli) {}\n\
                   pub fn f(x: u8) -> bool { matches!(x, Cli { .. }) }\n\
                   use crate::{model::Event, cli::Format};\n\
                   use tcptrace::cli;\n";
    let v = with(&[
        ("runtime/mod.rs", runtime),
        (
            "lib.rs",
            "pub mod cli;\npub mod model;\npub use cli::Cli;\n",
        ),
        ("report/text.rs", "use crate::cli::Format as F;\n"),
        ("model/opts.rs", "use crate::model::Options as Cli;\n"),
        ("main.rs", "use tcptrace::cli::Cli;\nfn main() {}\n"),
        ("cli/format.rs", "use crate::cli::Cli;\n"),
    ]);
    assert_eq!(
        found(&v),
        [
            at("lib.rs", 3, Rule::CliAtTop),
            at("model/opts.rs", 1, Rule::CliAtTop), // renamed to Cli
            at("report/text.rs", 1, Rule::CliAtTop),
            at("runtime/mod.rs", 1, Rule::CliAtTop),
            at("runtime/mod.rs", 2, Rule::CliAtTop), // the type
            at("runtime/mod.rs", 3, Rule::CliAtTop), // in matches!
            at("runtime/mod.rs", 4, Rule::CliAtTop), // nested
            at("runtime/mod.rs", 5, Rule::CliAtTop), // through the library's name
        ]
    );
}

#[test]
fn rule_6_every_file_in_a_layer() {
    let v = with(&[
        ("stats.rs", "pub fn f() {}\n"),
        ("model.rs", "pub mod event;\n"),
        ("util/strings.rs", "pub fn f() {}\n"),
        ("analyses/stream.rs", "pub struct Stream;\n"),
    ]);
    assert_eq!(
        found(&v),
        [
            at("model.rs", 1, Rule::Placement),
            at("stats.rs", 1, Rule::Placement),
            at("util/strings.rs", 1, Rule::Placement),
        ]
    );
}

#[test]
fn rule_7_file_size() {
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    let limit = "fn f() {}\n".repeat(MAX_LINES);
    let files = vec![
        (PathBuf::from("model/long.rs"), long.clone()),
        (PathBuf::from("model/limit.rs"), limit),
    ];
    let v = check_tree(&files, &Crates::default());
    assert_eq!(found(&v), [at("model/long.rs", MAX_LINES + 1, Rule::Size)]);
    assert!(v[0].what.starts_with("401 lines"), "{}", v[0]);

    let ebpf = vec![
        (PathBuf::from("main.rs"), "x\n".repeat(EBPF_MAX_LINES + 1)),
        (PathBuf::from("lib.rs"), "x\n".repeat(EBPF_MAX_LINES)),
    ];
    assert_eq!(
        found(&check_sizes(&ebpf, EBPF_MAX_LINES)),
        [at("main.rs", EBPF_MAX_LINES + 1, Rule::Size)]
    );
}

#[test]
fn unreadable_rust_is_reported() {
    let v = with(&[("model/broken.rs", "fn f( {\n")]);
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].rule, Rule::Parse);
}

#[test]
fn violations_read_as_file_line_rule_what() {
    let v = with(&[("report/x.rs", "\nuse crate::host::sysctl;\n")]);
    assert_eq!(
        v[0].to_string(),
        "report/x.rs:2: rule 2 (report/ renders, reads nothing): \
         `crate::host::sysctl`: report/ may not name crate::host"
    );
}

#[test]
fn reads_the_manifest() {
    let c = Crates::from_manifest(MANIFEST);
    assert_eq!(c.lib, "tcptrace");
    assert!(c.knows("tcptrace_common") && c.knows("prometheus_client"));
    assert!(c.dev_only.contains("tempfile"));
    assert!(
        !c.normal.contains("aya_build") && !c.dev_only.contains("aya_build"),
        "build-dependencies are not for src/"
    );
    let lib = Crates::from_manifest("[package]\nname = \"a-b\"\n[lib]\nname = \"ab\"\n");
    assert_eq!(lib.lib, "ab");
}

/// Every file of the workspace's own trees parses (the rules themselves
/// wait for the userspace reorganisation).
#[test]
fn reads_the_workspace_sources() {
    let roots = Roots::default();
    for root in [&roots.src, &roots.ebpf_src] {
        let files = read_tree(root).expect("read the tree");
        assert!(!files.is_empty(), "{}", root.display());
        let v = check_tree(&files, &Crates::default());
        let parse: Vec<_> = v.iter().filter(|v| v.rule == Rule::Parse).collect();
        assert!(parse.is_empty(), "{parse:#?}");
    }
}
