//! `hyperkit-obs`: the command line of hyperkit-obs.
//!
//! This file reads the command line: it finds the command, parses its
//! options as the command's [`Spec`] declares them (see `args`), prints
//! help, and turns a [`Failure`] into one line on stderr and an exit code:
//! 2 when the command
//! line is wrong, 1 when the command failed. The usage text is printed only
//! when asked for (`--help`, `-h`, `help`: stdout, exit 0) and after an
//! unknown command (stderr, exit 2). Each command lives in its own module
//! (`check`, `logs`, `mlflow`, `compare`), which calls the library and prints.

mod args;
mod check;
mod compare;
mod logs;
mod mlflow;

use std::process::ExitCode;

use args::{Args, Spec};
use hyperkit_obs::__private::shown;

/// Said after the list of commands in the overview.
const OVERVIEW_NOTES: &str = "\
The configuration comes from the environment (HYPERKIT_*, SENTRY_*, MLFLOW_*,
ELASTICSEARCH_*, RUST_LOG) and the TOML file named by HYPERKIT_CONFIG.
`hyperkit-obs <command> --help` prints a command's help.

Exit status: 0 done; 1 the command failed (store unreadable, server unreachable,
bad configuration); 2 the command line is wrong.";

/// A command and what runs it.
struct Command {
    spec: &'static Spec,
    run: fn(&Args) -> Result<(), Failure>,
}

/// Every command, in the order the overview lists them.
const COMMANDS: &[Command] = &[
    Command {
        spec: &check::CHECK,
        run: check::check,
    },
    Command {
        spec: &logs::SEARCH,
        run: logs::search,
    },
    Command {
        spec: &logs::TAIL,
        run: logs::tail,
    },
    Command {
        spec: &mlflow::ACCEPTANCE,
        run: mlflow::acceptance,
    },
    Command {
        spec: &compare::COMPARE,
        run: compare::compare,
    },
    Command {
        spec: &mlflow::PUSH,
        run: mlflow::push,
    },
];

/// The groups of commands (`logs search`, `logs tail`).
const GROUPS: &[&str] = &["logs", "mlflow"];

fn main() -> ExitCode {
    let result = words().and_then(|words| run(&words));
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

/// The arguments, each checked to be UTF-8.
fn words() -> Result<Vec<String>, Failure> {
    std::env::args_os()
        .skip(1)
        .enumerate()
        .map(|(i, word)| {
            word.into_string().map_err(|word| {
                Failure::Usage(format!(
                    "argument {} ({}) is not UTF-8",
                    i + 1,
                    shown(&word.to_string_lossy())
                ))
            })
        })
        .collect()
}

/// Finds the command `words` name and runs it.
fn run(words: &[String]) -> Result<(), Failure> {
    let Some((first, rest)) = words.split_first() else {
        return Err(unknown("which command?", &overview()));
    };
    match first.as_str() {
        "help" => help(rest),
        "--help" | "-h" => {
            print!("{}", overview());
            Ok(())
        }
        "--version" | "-V" => {
            println!("hyperkit-obs {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        group if GROUPS.contains(&group) => {
            let Some((sub, rest)) = rest.split_first() else {
                return Err(unknown(
                    &format!("`{group}` needs a command ({})", group_commands(group)),
                    &group_usage(group),
                ));
            };
            if matches!(sub.as_str(), "--help" | "-h" | "help") {
                print!("{}", group_usage(group));
                return Ok(());
            }
            match find(&format!("{group} {sub}")) {
                Some(command) => leaf(command, rest),
                None => Err(unknown(
                    &format!(
                        "unknown {group} command `{}` ({})",
                        shown(sub),
                        group_commands(group)
                    ),
                    &group_usage(group),
                )),
            }
        }
        name => match find(name) {
            Some(command) => leaf(command, rest),
            None => Err(unknown(
                &format!("unknown command `{}`", shown(name)),
                &overview(),
            )),
        },
    }
}

/// Runs `command` with the words after its name, or prints its help when
/// they ask for it (before a `--`).
fn leaf(command: &Command, words: &[String]) -> Result<(), Failure> {
    let asks_help = words
        .iter()
        .take_while(|w| *w != "--")
        .any(|w| w == "--help" || w == "-h");
    if asks_help {
        print!("{}", command.spec.help());
        return Ok(());
    }
    let args = command.spec.parse(words)?;
    (command.run)(&args)
}

/// `help [command]`.
fn help(words: &[String]) -> Result<(), Failure> {
    let name = words.join(" ");
    if name.is_empty() {
        print!("{}", overview());
    } else if GROUPS.contains(&name.as_str()) {
        print!("{}", group_usage(&name));
    } else if let Some(command) = find(&name) {
        print!("{}", command.spec.help());
    } else {
        return Err(unknown(
            &format!("no command `{}` to help with", shown(&name)),
            &overview(),
        ));
    }
    Ok(())
}

fn find(words: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.spec.words == words)
}

/// `search, tail`.
fn group_commands(group: &str) -> String {
    let names: Vec<&str> = COMMANDS
        .iter()
        .filter_map(|c| c.spec.words.strip_prefix(group)?.strip_prefix(' '))
        .collect();
    names.join(", ")
}

/// The commands whose words start with `prefix`, one synopsis and its line
/// each.
fn listing(prefix: &str) -> String {
    let mut text = String::from("commands:\n");
    for command in COMMANDS.iter().filter(|c| c.spec.words.starts_with(prefix)) {
        text.push_str(&format!(
            "  {}\n      {}\n",
            command.spec.synopsis(),
            command.spec.about
        ));
    }
    text
}

/// The usage text of every command.
fn overview() -> String {
    format!(
        "usage: hyperkit-obs <command>\n\nThe command line of hyperkit-obs.\n\n{}  help [COMMAND]\n      print this help, or a command's\n\n{OVERVIEW_NOTES}\n",
        listing("")
    )
}

/// The usage text of a group's commands.
fn group_usage(group: &str) -> String {
    format!(
        "usage: hyperkit-obs {group} <command>\n\n{}\n`hyperkit-obs {group} <command> --help` prints a command's help.\n",
        listing(&format!("{group} "))
    )
}

fn unknown(problem: &str, usage: &str) -> Failure {
    Failure::UnknownCommand {
        problem: problem.to_owned(),
        usage: usage.to_owned(),
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
