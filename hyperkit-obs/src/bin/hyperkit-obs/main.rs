//! `hyperkit-obs`: the command line of hyperkit-obs.
//!
//! This file reads the command line: it finds the command, parses its
//! options as the command's [`Spec`] declares them, prints help, and turns a
//! [`Failure`] into one line on stderr and an exit code: 2 when the command
//! line is wrong, 1 when the command failed. The usage text is printed only
//! when asked for (`--help`, `-h`, `help`: stdout, exit 0) and after an
//! unknown command (stderr, exit 2). Each command lives in its own module
//! (`check`, `logs`, `mlflow`), which calls the library and prints.

mod check;
mod logs;
mod mlflow;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ArgMatches, Command};

/// Said after the list of commands in the overview.
const OVERVIEW_NOTES: &str = "\
The configuration comes from the environment (HYPERKIT_*, SENTRY_*, MLFLOW_*,
ELASTICSEARCH_*, RUST_LOG) and the TOML file named by HYPERKIT_CONFIG.

Exit status: 0 done; 1 the command failed (store unreadable, server unreachable,
bad configuration); 2 the command line is wrong.";

/// Every command.
fn command() -> Command {
    Command::new("hyperkit-obs")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The command line of hyperkit-obs.")
        .after_help(OVERVIEW_NOTES)
        .subcommand_required(true)
        .subcommand(check::command())
        .subcommand(
            Command::new("logs")
                .about("search or follow the local log store")
                .subcommand_required(true)
                .subcommand(logs::search_command())
                .subcommand(logs::tail_command()),
        )
        .subcommand(
            Command::new("mlflow")
                .about("read acceptance rates from MLflow, push a file store to a server")
                .subcommand_required(true)
                .subcommand(mlflow::acceptance_command())
                .subcommand(mlflow::push_command()),
        )
}

fn main() -> ExitCode {
    let mut cli = command();
    let result = match cli.try_get_matches_from_mut(std::env::args_os()) {
        Ok(matches) => dispatch(&matches),
        Err(e) => usage_failure(&mut cli, &e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(problem)) => {
            eprintln!("hyperkit-obs: {}", one_line(&problem));
            ExitCode::from(2)
        }
        Err(Failure::UnknownCommand { problem, usage }) => {
            eprintln!("hyperkit-obs: {}\n\n{usage}", one_line(&problem));
            ExitCode::from(2)
        }
        Err(Failure::Failed(problem)) => {
            eprintln!("hyperkit-obs: {}", one_line(&problem));
            ExitCode::from(1)
        }
    }
}

fn dispatch(matches: &ArgMatches) -> Result<(), Failure> {
    match matches.subcommand() {
        Some(("check", m)) => check::check(&Args(m)),
        Some(("logs", m)) => match m.subcommand() {
            Some(("search", m)) => logs::search(&Args(m)),
            Some(("tail", m)) => logs::tail(&Args(m)),
            _ => Ok(()),
        },
        Some(("mlflow", m)) => match m.subcommand() {
            Some(("acceptance", m)) => mlflow::acceptance(&Args(m)),
            Some(("push", m)) => mlflow::push(&Args(m)),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// What clap's error `e` means for the user: help printed, the usage text
/// after an unknown command, or one line.
fn usage_failure(cli: &mut Command, e: &clap::Error) -> Result<(), Failure> {
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            print!("{text}");
            Ok(())
        }
        ErrorKind::InvalidSubcommand
        | ErrorKind::MissingSubcommand
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // The level of the command tree where the command is unknown.
            let mut level = cli.clone();
            for word in std::env::args().skip(1) {
                match level.find_subcommand(&word) {
                    Some(sub) => level = sub.clone(),
                    None => break,
                }
            }
            Err(Failure::UnknownCommand {
                problem: text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .replace("error: ", ""),
                usage: level.render_help().to_string(),
            })
        }
        _ => {
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            Err(Failure::Usage(lines.join(" ").replacen("error: ", "", 1)))
        }
    }
}

/// Why a command did not succeed.
#[derive(Debug)]
enum Failure {
    /// The command line is wrong: the problem and what to write instead.
    Usage(String),
    /// No such command: the problem, then the commands there are.
    UnknownCommand {
        /// What was written.
        problem: String,
        /// The usage text of the commands at that level.
        usage: String,
    },
    /// The command ran and failed.
    Failed(String),
}

/// A command's arguments, by the names its options have on the command
/// line.
struct Args<'a>(&'a ArgMatches);

impl Args<'_> {
    /// The value of option `name` (`--since`), if given.
    fn value(&self, name: &str) -> Option<&str> {
        let id = name.trim_start_matches("--");
        self.0
            .try_get_one::<String>(id)
            .ok()
            .flatten()
            .map(String::as_str)
    }

    /// The value of a required option.
    fn required(&self, name: &str) -> &str {
        self.value(name).unwrap_or_default()
    }

    /// Whether switch `name` was given.
    fn switch(&self, name: &str) -> bool {
        self.0
            .try_get_one::<bool>(name.trim_start_matches("--"))
            .ok()
            .flatten()
            .copied()
            .unwrap_or(false)
    }

    /// The operands.
    fn operands(&self) -> Vec<String> {
        let id = self
            .0
            .ids()
            .find(|id| id.as_str() == "QUERY" || id.as_str() == "DIR");
        id.and_then(|id| self.0.get_many::<String>(id.as_str()))
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    }
}

/// `problem` on one line: a message from a server or a library may hold
/// line breaks.
fn one_line(problem: &str) -> String {
    let lines: Vec<&str> = problem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

/// An argument as a message quotes it: at most 40 characters, control
/// characters escaped, so that a 40 KB argument is not echoed back.
fn shown(text: &str) -> String {
    const LONGEST: usize = 40;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LONGEST {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `future` to completion on a current-thread runtime.
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))?
        .block_on(future)
}

/// A configuration that cannot be read.
fn config_error(e: impl std::fmt::Display) -> Failure {
    Failure::Failed(format!("configuration error: {e}"))
}
