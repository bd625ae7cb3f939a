//! The command line as each command declares it: a [`Spec`] names the
//! command's options and operands, [`Spec::parse`] reads the words after the
//! command's name into [`Args`], and [`Spec::help`] renders its help. Every
//! mistake is a [`Failure::Usage`] of one line: the problem and what to
//! write instead.
//!
//! Hand-written rather than `clap`: five commands with a handful of options
//! each, messages that say what to write (`` `--since` needs a value, as in
//! `--since 1h` ``), options anywhere among a query's words, and `-term` read
//! as a query's NOT without quoting. With clap every one of its messages had
//! to be caught and rewritten, its help reformatted, and its trailing
//! variable argument swallowed the options written after a query; what was
//! left of it was the loop below.

use std::collections::HashMap;

use crate::{Failure, shown};

/// One `--name` option of a command.
pub(crate) struct Opt {
    /// The name after `--`.
    pub(crate) name: &'static str,
    /// The value's placeholder in the help (`T`), `None` for a switch.
    pub(crate) value: Option<&'static str>,
    /// A value to show in messages (`1h`).
    pub(crate) example: &'static str,
    /// Whether the command needs it.
    pub(crate) required: bool,
    /// What it does, for the help.
    pub(crate) help: &'static str,
}

/// The operands a command takes.
pub(crate) enum Operands {
    /// None.
    None,
    /// A query of any number of words; `-term` is a word of it.
    Query {
        /// Whether one word at least is needed.
        required: bool,
    },
    /// At most one directory.
    Dir,
}

/// A command: its words, options, operands and help.
pub(crate) struct Spec {
    /// The words that name it (`logs search`).
    pub(crate) words: &'static str,
    /// One line on what it does.
    pub(crate) about: &'static str,
    /// Its operands.
    pub(crate) operands: Operands,
    /// Its options.
    pub(crate) options: &'static [Opt],
    /// The help's text after the options.
    pub(crate) notes: &'static str,
}

impl Spec {
    /// `logs search QUERY... [--since T] [--until T] [--limit N] [--json]`.
    pub(crate) fn synopsis(&self) -> String {
        let mut line = self.words.to_owned();
        match self.operands {
            Operands::None => {}
            Operands::Query { required: true } => line.push_str(" QUERY..."),
            Operands::Query { required: false } => line.push_str(" [QUERY...]"),
            Operands::Dir => line.push_str(" [DIR]"),
        }
        for opt in self.options {
            let written = opt.written();
            if opt.required {
                line.push_str(&format!(" {written}"));
            } else {
                line.push_str(&format!(" [{written}]"));
            }
        }
        line
    }

    /// The command's help: its usage, what it does, its options, its notes.
    pub(crate) fn help(&self) -> String {
        let mut help = format!(
            "usage: hyperkit-obs {}\n\n{}\n\noptions:\n",
            self.synopsis(),
            self.about
        );
        let width = self
            .options
            .iter()
            .map(|o| o.written().len())
            .chain([10])
            .max()
            .unwrap_or(10);
        for opt in self.options {
            help.push_str(&format!("  {:<width$}  {}\n", opt.written(), opt.help));
        }
        help.push_str(&format!("  {:<width$}  print this help\n", "-h, --help"));
        if !self.notes.is_empty() {
            help.push_str(&format!("\n{}\n", self.notes));
        }
        help
    }

    /// Reads `words`, the arguments after the command's name.
    pub(crate) fn parse(&self, words: &[String]) -> Result<Args, Failure> {
        let mut args = Args::default();
        let mut words = words.iter();
        let mut only_operands = false;
        while let Some(word) = words.next() {
            if only_operands {
                self.operand(&mut args, word)?;
                continue;
            }
            if word == "--" {
                only_operands = true;
                continue;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (long, None),
                };
                let Some(opt) = self.options.iter().find(|o| o.name == name) else {
                    return Err(self.unknown_option(word));
                };
                if args.given(opt.name) {
                    return Err(Failure::Usage(format!(
                        "`--{}` is given twice: give it once",
                        opt.name
                    )));
                }
                match (opt.value, inline) {
                    (None, Some(_)) => {
                        return Err(Failure::Usage(format!(
                            "`--{0}` takes no value: write `--{0}` alone",
                            opt.name
                        )));
                    }
                    (None, None) => args.switches.push(opt.name),
                    (Some(_), Some(value)) => {
                        args.values.insert(opt.name, value.to_owned());
                    }
                    (Some(_), None) => match words.as_slice().first() {
                        Some(next) if !next.starts_with("--") => {
                            args.values.insert(opt.name, next.clone());
                            words.next();
                        }
                        _ => {
                            return Err(Failure::Usage(format!(
                                "`--{0}` needs a value, as in `--{0} {1}`",
                                opt.name, opt.example
                            )));
                        }
                    },
                }
                continue;
            }
            let query = matches!(self.operands, Operands::Query { .. });
            if word.len() > 1 && word.starts_with('-') && !query {
                return Err(self.unknown_option(word));
            }
            self.operand(&mut args, word)?;
        }
        if let Some(opt) = self
            .options
            .iter()
            .find(|o| o.required && !args.given(o.name))
        {
            return Err(Failure::Usage(format!(
                "`--{}` is required: write `{}`, as in `--{} {}`",
                opt.name,
                opt.written(),
                opt.name,
                opt.example
            )));
        }
        Ok(args)
    }

    fn operand(&self, args: &mut Args, word: &str) -> Result<(), Failure> {
        match self.operands {
            Operands::Query { .. } => {}
            Operands::None => {
                return Err(Failure::Usage(format!(
                    "unexpected argument `{}`: `{}` takes no arguments",
                    shown(word),
                    self.words
                )));
            }
            Operands::Dir if !args.operands.is_empty() => {
                return Err(Failure::Usage(format!(
                    "unexpected argument `{}`: `{}` takes one DIR",
                    shown(word),
                    self.words
                )));
            }
            Operands::Dir => {}
        }
        args.operands.push(word.to_owned());
        Ok(())
    }

    fn unknown_option(&self, word: &str) -> Failure {
        let word = word.split_once('=').map_or(word, |(name, _)| name);
        let takes = if self.options.is_empty() {
            "takes no options".to_owned()
        } else {
            let written: Vec<String> = self.options.iter().map(Opt::written).collect();
            format!("takes {}", written.join(", "))
        };
        Failure::Usage(format!(
            "unknown option `{}`: `{}` {takes}; see `hyperkit-obs {} --help`",
            shown(word),
            self.words,
            self.words
        ))
    }
}

impl Opt {
    /// `--since T`, or `--json` for a switch.
    fn written(&self) -> String {
        match self.value {
            Some(v) => format!("--{} {v}", self.name),
            None => format!("--{}", self.name),
        }
    }
}

/// What a command was given.
#[derive(Debug, Default)]
pub(crate) struct Args {
    values: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
    operands: Vec<String>,
}

impl Args {
    fn given(&self, name: &str) -> bool {
        self.values.contains_key(name) || self.switches.contains(&name)
    }

    /// The value of option `name` (`--since`), if given.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name.trim_start_matches("--"))
            .map(String::as_str)
    }

    /// The value of a required option (checked by [`Spec::parse`]).
    pub(crate) fn required(&self, name: &str) -> &str {
        self.value(name).unwrap_or_default()
    }

    /// Whether switch `name` was given.
    pub(crate) fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name.trim_start_matches("--"))
    }

    /// The operands, in order.
    pub(crate) fn operands(&self) -> &[String] {
        &self.operands
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec {
        words: "logs search",
        about: "search",
        operands: Operands::Query { required: true },
        options: &[
            Opt {
                name: "since",
                value: Some("T"),
                example: "1h",
                required: false,
                help: "since",
            },
            Opt {
                name: "json",
                value: None,
                example: "",
                required: false,
                help: "json",
            },
        ],
        notes: "",
    };

    fn parse(words: &[&str]) -> Result<Args, String> {
        let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        SPEC.parse(&words).map_err(|e| match e {
            Failure::Usage(m) => m,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn options_go_anywhere_and_dashed_words_are_query_words() {
        let args = parse(&["a", "--since", "1h", "-b", "--json", "c"]).unwrap();
        assert_eq!(args.operands(), ["a", "-b", "c"]);
        assert_eq!(args.value("--since"), Some("1h"));
        assert!(args.switch("--json"));
        let args = parse(&["--since=2d", "--", "--json"]).unwrap();
        assert_eq!(args.value("--since"), Some("2d"));
        assert_eq!(args.operands(), ["--json"]);
        assert!(!args.switch("--json"));
    }

    #[test]
    fn each_mistake_says_what_to_write() {
        for (words, message) in [
            (
                &["--since"][..],
                "`--since` needs a value, as in `--since 1h`",
            ),
            (&["--since", "--json"], "`--since` needs a value"),
            (
                &["--json", "--json"],
                "`--json` is given twice: give it once",
            ),
            (
                &["--json=1"],
                "`--json` takes no value: write `--json` alone",
            ),
            (
                &["--x=1"],
                "unknown option `--x`: `logs search` takes --since T, --json",
            ),
        ] {
            let error = parse(words).unwrap_err();
            assert!(error.contains(message), "{words:?}: {error}");
        }
    }

    #[test]
    fn the_help_lists_the_options_with_their_values() {
        let help = SPEC.help();
        assert!(
            help.starts_with("usage: hyperkit-obs logs search QUERY... [--since T] [--json]\n")
        );
        assert!(help.contains("  --since T   since\n"), "{help}");
    }
}
