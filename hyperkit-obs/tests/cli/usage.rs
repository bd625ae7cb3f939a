//! The command line itself, for every command: `--help` prints the
//! command's own usage on stdout and exits 0; a mistake is one line on
//! stderr (the problem and what to write instead) and exits 2; only an
//! unknown command is followed by the usage text.

use crate::support::{Output, assert_usage_error, cli};
use test_support::TempDir;

/// Every command, with an option its help lists (`check` has none).
const COMMANDS: [(&[&str], &str); 5] = [
    (&["check"], ""),
    (&["logs", "search"], "--since T"),
    (&["logs", "tail"], "--json"),
    (&["mlflow", "acceptance"], "--model M"),
    (&["mlflow", "push"], "--to URL"),
];

/// Runs the binary in an empty directory with none of the developer's
/// configuration.
fn run(args: &[&str]) -> Output {
    let dir = TempDir::new("cli-usage");
    cli(dir.path(), args, &[])
}

#[test]
fn each_command_has_its_own_help_on_stdout_and_exits_0() {
    for (words, option) in COMMANDS {
        let name = words.join(" ");
        let asked = [
            [words, &["--help"]].concat(),
            [words, &["-h"]].concat(),
            [&["help"], words].concat(),
        ];
        for args in asked {
            let out = run(&args);
            assert_eq!(out.code, 0, "{args:?}: {out:?}");
            assert_eq!(out.stderr, "", "{args:?}: {out:?}");
            assert!(
                out.stdout
                    .starts_with(&format!("usage: hyperkit-obs {name}")),
                "{args:?}: {out:?}"
            );
            assert!(out.stdout.contains(option), "{args:?}: {out:?}");
            for (other, _) in COMMANDS.iter().filter(|(w, _)| *w != words) {
                let other = format!("hyperkit-obs {}", other.join(" "));
                assert!(!out.stdout.contains(&other), "{args:?}: {out:?}");
            }
        }
    }
    // Anywhere among the arguments.
    let out = run(&["logs", "search", "level:error", "--limit", "5", "--help"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("usage: hyperkit-obs logs search"));
}

#[test]
fn help_lists_every_command_on_stdout_and_exits_0() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = run(args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert_eq!(out.stderr, "", "{args:?}: {out:?}");
        assert!(out.stdout.starts_with("usage: hyperkit-obs"), "{out:?}");
        for (words, _) in COMMANDS {
            assert!(out.stdout.contains(&words.join(" ")), "{args:?}: {out:?}");
        }
        assert!(out.stdout.contains("Exit status"), "{out:?}");
    }
    // A group's help lists its own commands.
    let out = run(&["logs", "--help"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("logs search") && out.stdout.contains("logs tail"));
    assert!(!out.stdout.contains("mlflow push"), "{out:?}");
}

#[test]
fn an_unknown_command_prints_the_usage_on_stderr_and_exits_2() {
    for (args, problem, usage) in [
        (
            &["deploy"][..],
            "hyperkit-obs: unknown command `deploy`",
            "usage: hyperkit-obs <command>",
        ),
        (
            &["--verbose"],
            "hyperkit-obs: unknown command `--verbose`",
            "usage: hyperkit-obs <command>",
        ),
        (
            &[],
            "hyperkit-obs: which command?",
            "usage: hyperkit-obs <command>",
        ),
        (
            &["logs", "find", "x"],
            "hyperkit-obs: unknown logs command `find` (search, tail)",
            "usage: hyperkit-obs logs <command>",
        ),
        (
            &["help", "deploy"],
            "hyperkit-obs: no command `deploy` to help with",
            "usage: hyperkit-obs <command>",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?}: {out:?}");
        let mut lines = out.stderr.lines();
        assert!(
            lines.next().is_some_and(|l| l.starts_with(problem)),
            "{args:?}: {out:?}"
        );
        assert!(out.stderr.contains(usage), "{args:?}: {out:?}");
    }
}

#[test]
fn an_unknown_option_is_one_line_naming_the_commands_options_and_exits_2() {
    for (words, option) in COMMANDS {
        let name = words.join(" ");
        let out = run(&[words, &["--frobnicate"]].concat());
        assert_usage_error(&out, "unknown option `--frobnicate`");
        assert!(out.stderr.contains(option), "{out:?}");
        assert!(
            out.stderr
                .contains(&format!("see `hyperkit-obs {name} --help`")),
            "{out:?}"
        );
    }
    // A single dash too, except in a query, where `-term` means NOT.
    assert_usage_error(
        &run(&["mlflow", "push", "-x", "--to", "http://127.0.0.1:9"]),
        "unknown option `-x`",
    );
}

#[test]
fn an_option_without_its_value_is_one_line_with_an_example_and_exits_2() {
    for (args, message) in [
        (
            &["logs", "search", "x", "--since"][..],
            "`--since` needs a value, as in `--since 1h`",
        ),
        (
            &["logs", "search", "x", "--limit", "--json"],
            "`--limit` needs a value, as in `--limit 20`",
        ),
        (
            &["mlflow", "acceptance", "--model"],
            "`--model` needs a value, as in `--model small-1`",
        ),
        (
            &["mlflow", "push", "--to"],
            "`--to` needs a value, as in `--to http://127.0.0.1:5000`",
        ),
        (
            &["mlflow", "acceptance"],
            "`--model` is required: write `--model M`, as in `--model small-1`",
        ),
    ] {
        assert_usage_error(&run(args), message);
    }
}

#[test]
fn a_bad_time_or_limit_is_one_line_saying_what_to_write_and_exits_2() {
    for (args, message) in [
        (
            &["logs", "search", "x", "--since", "soon"][..],
            "--since: `soon` is not a time: write a duration before now (30m, 1h, 2d) or an RFC 3339 timestamp",
        ),
        (
            &["logs", "search", "x", "--until=1 fortnight"],
            "--until: `1 fortnight` is not a time",
        ),
        (
            &["logs", "search", "x", "--limit", "0"],
            "`--limit 0`: write a positive whole number, as in `--limit 20`",
        ),
        (
            &["logs", "search", "x", "--limit", "many"],
            "`--limit many`: write a positive whole number",
        ),
    ] {
        assert_usage_error(&run(args), message);
    }
}

#[test]
fn a_query_that_does_not_parse_is_one_line_with_its_position_and_not_the_query() {
    assert_usage_error(
        &run(&["logs", "search", "level:error AND (chain:x"]),
        "invalid query: unclosed `(`: add a `)` at position 16",
    );
    assert_usage_error(&run(&["logs", "tail", "chain:"]), "invalid query: `chain:`");
    let nested = format!("{}a{}", "(".repeat(20_000), ")".repeat(20_000));
    let out = run(&["logs", "search", &nested]);
    assert_usage_error(
        &out,
        "invalid query: query nests deeper than 64 levels: use fewer nested parentheses and `NOT`s at position 64",
    );
    assert!(out.stderr.len() < 200, "the query echoed: {out:?}");
}

#[test]
fn other_command_line_mistakes_are_one_line_and_exit_2() {
    for (args, message) in [
        (
            &["check", "now"][..],
            "unexpected argument `now`: `check` takes no arguments",
        ),
        (
            &["mlflow", "acceptance", "--model", "a", "--model", "b"],
            "`--model` is given twice: give it once",
        ),
        (
            &["mlflow", "acceptance", "--model", "a", "--json=yes"],
            "`--json` takes no value: write `--json` alone",
        ),
        (
            &["logs", "search"],
            "`logs search` needs a QUERY, as in `logs search level:error`",
        ),
    ] {
        assert_usage_error(&run(args), message);
    }
}

#[cfg(unix)]
#[test]
fn an_argument_that_is_not_utf8_is_one_line_and_exits_2() {
    use std::os::unix::ffi::OsStrExt;

    let out = std::process::Command::new(crate::support::BIN)
        .args(["logs", "search"])
        .arg(std::ffi::OsStr::from_bytes(b"level:\xff"))
        .env_clear()
        .output()
        .unwrap();
    let out = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_usage_error(&out, "argument 3 (level:\u{fffd}) is not UTF-8");
}
