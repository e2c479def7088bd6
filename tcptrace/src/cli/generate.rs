//! What tcptrace prints about itself, with no root and nothing loaded: the
//! version (naming the git commit it was built from), and the release
//! artefacts of the hidden `--generate` (`cargo xtask dist` packages them):
//! the man page and the shell completions, all from [`Cli::command`].

use std::{ffi::OsString, io};

use clap::{ArgGroup, Command, CommandFactory as _, Id, ValueEnum};
use clap_complete::Shell;

use super::Cli;

/// `--version`'s text: the package version and the commit
/// (`git rev-parse --short=12 HEAD`, `-dirty` when the tree had changes;
/// `unknown` outside a git checkout), from tcptrace's build script.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TCPTRACE_GIT_COMMIT"),
    ")"
);

/// The man page's section: tcptrace is an administrator's command.
pub const MAN_SECTION: &str = "8";

/// An artefact `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Artefact {
    /// The man page (roff), section 8.
    Man,
    CompleteBash,
    CompleteZsh,
    CompleteFish,
}

/// Write `what` to `out`.
pub fn generate(what: Artefact, out: &mut dyn io::Write) -> io::Result<()> {
    let cmd = Cli::command();
    let shell = match what {
        Artefact::Man => {
            return clap_mangen::Man::new(cmd).section(MAN_SECTION).render(out);
        }
        Artefact::CompleteBash => Shell::Bash,
        Artefact::CompleteZsh => Shell::Zsh,
        Artefact::CompleteFish => Shell::Fish,
    };
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut visible(&cmd), name, out);
    Ok(())
}

/// `cmd` without its hidden flags, which `clap_complete` would offer too
/// (clap has no way to remove a flag: the command is rebuilt, and its
/// groups without them; tcptrace's groups have no settings but these).
fn visible(cmd: &Command) -> Command {
    let hidden: Vec<&Id> = cmd
        .get_arguments()
        .filter(|a| a.is_hide_set())
        .map(clap::Arg::get_id)
        .collect();
    Command::new("tcptrace")
        .version(VERSION)
        .about(cmd.get_about().cloned().unwrap_or_default())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .groups(cmd.get_groups().map(|g| {
            // `is_multiple` takes `&mut self`.
            let mut g = g.clone();
            ArgGroup::new(g.get_id())
                .args(g.get_args().filter(|id| !hidden.contains(id)))
                .multiple(g.is_multiple())
                .required(g.is_required_set())
        }))
}

/// Whether `args` (without the program name) ask for `--version -v`: the
/// version, then what the running kernel offers. clap prints the version
/// and exits on `--version` before it counts `-v`, so `main` asks this
/// first. `-V`, `-v`, `-vv` and clusters of both (`-vV`) count; so does
/// `--verbose`.
#[must_use]
pub fn verbose_version(args: &[OsString]) -> bool {
    let (mut version, mut verbose) = (false, false);
    for arg in args.iter().map(|a| a.to_str().unwrap_or("")) {
        if arg == "--" {
            break;
        }
        match arg {
            "--version" => version = true,
            "--verbose" => verbose = true,
            _ => {
                if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.starts_with('-'))
                    && !cluster.is_empty()
                    && cluster.chars().all(|c| c == 'v' || c == 'V')
                {
                    version |= cluster.contains('V');
                    verbose |= cluster.contains('v');
                }
            }
        }
    }
    version && verbose
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(what: Artefact) -> String {
        let mut out = Vec::new();
        generate(what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Every long flag a user sees (`--help`, not the hidden ones).
    fn visible_long_flags() -> Vec<String> {
        let flags: Vec<String> = Cli::command()
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        assert!(flags.len() > 20, "{flags:?}");
        flags
    }

    #[test]
    fn man_page_has_name_synopsis_and_every_flag() {
        let man = text(Artefact::Man);
        assert!(man.contains(".TH tcptrace 8"), "{man}");
        assert!(man.contains(".SH NAME"), "{man}");
        assert!(man.contains(".SH SYNOPSIS"), "{man}");
        // roff escapes each `-` of a flag as `\-`.
        let man = man.replace("\\-", "-");
        for flag in visible_long_flags() {
            assert!(man.contains(&flag), "the man page lacks {flag}");
        }
        assert!(
            !man.contains("--generate"),
            "the hidden flag is not documented"
        );
        assert!(man.contains(VERSION), "the man page names the version");
    }

    #[test]
    fn every_completion_knows_the_flags_and_not_the_hidden_one() {
        for what in [
            Artefact::CompleteBash,
            Artefact::CompleteZsh,
            Artefact::CompleteFish,
        ] {
            let script = text(what);
            // fish writes long flags without their dashes (`-l closewait-leaks`).
            assert!(script.contains("closewait-leaks"), "{what:?}: {script}");
            if what != Artefact::CompleteFish {
                assert!(script.contains("--closewait-leaks"), "{what:?}: {script}");
            }
            for flag in visible_long_flags() {
                let name = flag.trim_start_matches('-');
                assert!(script.contains(name), "{what:?} lacks {flag}");
            }
            assert!(!script.contains("generate"), "{what:?}: {script}");
        }
    }

    #[test]
    fn the_hidden_flag_is_absent_from_help() {
        for help in [
            Cli::command().render_help().to_string(),
            Cli::command().render_long_help().to_string(),
        ] {
            assert!(!help.contains("--generate"), "{help}");
        }
    }

    #[test]
    fn the_version_names_a_commit() {
        let commit = env!("TCPTRACE_GIT_COMMIT");
        assert!(!commit.is_empty());
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(VERSION.contains(commit), "{VERSION}");
    }

    #[test]
    fn verbose_version_needs_both_flags() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        for yes in [
            &["--version", "-v"][..],
            &["-v", "-V"],
            &["-vV"],
            &["-Vvv"],
            &["--verbose", "--version"],
        ] {
            assert!(verbose_version(&args(yes)), "{yes:?}");
        }
        for no in [
            &["--version"][..],
            &["-V"],
            &["-v"],
            &["-vv", "--hist"],
            &["-V", "--", "-v"],
            &["-Vx", "-v"],
        ] {
            assert!(!verbose_version(&args(no)), "{no:?}");
        }
    }
}
