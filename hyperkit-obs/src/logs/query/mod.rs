//! The query language of `hyperkit-obs logs search`: the subset of Kibana's
//! Lucene mode that finds log lines.
//!
//! ```text
//! level:error AND chain:ethereum AND "out of gas"
//! message:"out of gas" -status:cancelled
//! (model:gpt OR model:claude) NOT task:codegen
//! ```
//!
//! Terms next to each other are ANDed; `NOT` binds tighter than `AND`, which
//! binds tighter than `OR`; `-term` is `NOT term`. Operators are upper case
//! (a lower-case `and` is a word to find).
//!
//! What a term matches depends on its field ([`FieldKind`]):
//! - text fields (`message`, `error.message`, `chain`, `model`, `task`,
//!   `operation`, `status`, `log.logger`) and terms without a field are
//!   full-text: the value is split into words (runs of letters and digits,
//!   compared case-insensitively) and matches when those words appear
//!   consecutively in the field (in any text field for a term without one);
//! - `level` (`log.level`) matches the level, case-insensitively;
//! - `service.name`, `trace.id`, `span.id` and any other field match when the
//!   document's value, as text, equals the term exactly.
//!
//! An unquoted `*` or `?` makes a term a wildcard ([`Query::Wildcard`]):
//! `chain:eth*`, `request_id:req-00?1`. `*` stands for any run of
//! characters and `?` for one; on a text field the pattern matches one word
//! (compared in lower case), elsewhere the whole value. `\*` is a literal
//! star.
//!
//! Ranges ([`Query::Range`]) follow Kibana: `attempt:[3 TO 5]` (inclusive),
//! `{3 TO 5}` (exclusive), mixed `[3 TO 5}`, `*` for an open end, and
//! `event.duration:>1000000000`, `>=`, `<`, `<=`. When each bound is a
//! number (or open), the range compares the field's numeric values (as
//! 64-bit floats, like JSON numbers); otherwise it compares text, byte by
//! byte: the words of a text field (bounds in lower case), the level, or
//! the whole string value of any other field (numbers there take numeric
//! bounds, as an Elasticsearch numeric field does).
//!
//! Parsing never panics and is bounded: it takes time linear in the input,
//! refuses queries nested deeper than [`Query::MAX_DEPTH`] or with more than
//! [`Query::MAX_TERMS`] terms, and never recurses deeper than the depth
//! limit. Errors carry the byte offset of the problem.
//!
//! This module holds the query's types and how a query prints; `parse`
//! lexes and parses text within the limits above.

use std::fmt::{self, Write as _};
use std::ops::Bound;

#[cfg(test)]
mod fuzz;
mod parse;
#[cfg(test)]
mod tests;

/// A parsed query.
///
/// [`Display`](fmt::Display) writes it back in the query language, and what
/// it writes parses to the same query (except [`Query::All`], written `*`).
/// Printing, searching and dropping a query recurse once per level, which
/// [`Query::parse`] bounds by [`Query::MAX_DEPTH`]; a query built by hand
/// should stay within it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Matches every event (the empty query).
    All,
    /// One term.
    Term(Term),
    /// Every sub-query matches.
    And(Vec<Query>),
    /// At least one sub-query matches.
    Or(Vec<Query>),
    /// The sub-query does not match.
    Not(Box<Query>),
    /// A term whose value is a pattern: `*` any run of characters, `?` one
    /// character, `\\` before either (or before `\\`) for the character
    /// itself.
    Wildcard(Term),
    /// The values of a field between two bounds.
    Range(Range),
}

/// A range term: `field:[lower TO upper]` and its `>`/`<` forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The field, as written.
    pub field: String,
    /// The lower bound (`Unbounded` for `*`).
    pub lower: Bound<String>,
    /// The upper bound (`Unbounded` for `*`).
    pub upper: Bound<String>,
}

impl Range {
    /// How this range's field is searched.
    pub fn kind(&self) -> FieldKind {
        field_kind(&self.field)
    }

    /// The document key this range compares (`log.level` for `level`).
    pub fn document_key(&self) -> &str {
        document_key(&self.field)
    }

    /// The bounds as numbers when each is a number or open, and not both
    /// open: then the range compares numeric values.
    pub fn numeric(&self) -> Option<(Bound<f64>, Bound<f64>)> {
        fn number(b: &Bound<String>) -> Option<Bound<f64>> {
            let parse = |s: &String| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
            Some(match b {
                Bound::Included(s) => Bound::Included(parse(s)?),
                Bound::Excluded(s) => Bound::Excluded(parse(s)?),
                Bound::Unbounded => Bound::Unbounded,
            })
        }
        if matches!(
            (&self.lower, &self.upper),
            (Bound::Unbounded, Bound::Unbounded)
        ) {
            return None;
        }
        Some((number(&self.lower)?, number(&self.upper)?))
    }
}

/// Whether `text` matches the wildcard `pattern` ([`Query::Wildcard`]'s
/// syntax), comparing characters exactly. Linear in the product of the two
/// lengths at worst, never exponential.
pub fn wildcard_matches(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Star,
        One,
        Char(char),
    }
    let mut pat = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pat.push(match c {
            '*' => P::Star,
            '?' => P::One,
            '\\' => P::Char(chars.next().unwrap_or('\\')),
            c => P::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // The classic greedy match with one backtrack point: the last star.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(P::Star) => {
                star = Some((p, t));
                p += 1;
            }
            Some(P::One) => {
                p += 1;
                t += 1;
            }
            Some(P::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|x| *x == P::Star)
}

/// The characters of a wildcard pattern before its first wildcard, with
/// escapes resolved: every match starts with them.
pub fn wildcard_prefix(pattern: &str) -> String {
    let mut prefix = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => break,
            '\\' => prefix.push(chars.next().unwrap_or('\\')),
            c => prefix.push(c),
        }
    }
    prefix
}

/// A field term, free term or phrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// The field, as written (`chain`, `error.message`), or `None` for a
    /// free term.
    pub field: Option<String>,
    /// The value, unquoted.
    pub value: String,
}

/// How a field is searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// The level, compared case-insensitively.
    Level,
    /// A full-text column of the store's index, named here.
    Text(&'static str),
    /// A document key compared exactly (`service.name`, `trace.id`, any
    /// other field).
    Exact,
}

/// The full-text columns of the store, each with the document key it holds.
pub const TEXT_FIELDS: &[(&str, &str)] = &[
    ("message", "message"),
    ("error", "error.message"),
    ("chain", "chain"),
    ("model", "model"),
    ("task", "task"),
    ("operation", "operation"),
    ("status", "status"),
    ("logger", "log.logger"),
];

impl Term {
    /// How this term's field is searched.
    pub fn kind(&self) -> FieldKind {
        match self.field.as_deref() {
            None => FieldKind::Text(""),
            Some(f) => field_kind(f),
        }
    }

    /// The document key this term compares (`log.level` for `level`), or
    /// `None` for a free term.
    pub fn document_key(&self) -> Option<&str> {
        self.field.as_deref().map(document_key)
    }
}

fn document_key(f: &str) -> &str {
    match field_kind(f) {
        FieldKind::Level => "log.level",
        FieldKind::Text(col) => TEXT_FIELDS
            .iter()
            .find(|(c, _)| *c == col)
            .map_or(f, |(_, key)| key),
        FieldKind::Exact => f,
    }
}

pub(crate) fn field_kind(field: &str) -> FieldKind {
    match field {
        "level" | "log.level" => FieldKind::Level,
        "logger" | "log.logger" => FieldKind::Text("logger"),
        "error" | "error.message" => FieldKind::Text("error"),
        f => TEXT_FIELDS
            .iter()
            .find(|(col, _)| *col == f)
            .map_or(FieldKind::Exact, |(col, _)| FieldKind::Text(col)),
    }
}

/// The words of `text` as the full-text index sees them: runs of letters and
/// digits, lower-cased (SQLite FTS5's `unicode61` tokenizer, without
/// diacritic folding).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// A query that cannot be parsed: what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct ParseError {
    /// Byte offset in the query (0-based) where the problem is.
    pub position: usize,
    /// What is wrong, and what to write instead.
    pub message: String,
}

/// Writes a field name as the lexer reads it back.
fn write_field(f: &mut fmt::Formatter<'_>, field: &str) -> fmt::Result {
    for (i, c) in field.char_indices() {
        if c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\\' | ':') || (i == 0 && c == '-') {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char(':')
}

fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    write!(
        f,
        "\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[Query], op: &str| {
            f.write_str("(")?;
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{p}")?;
            }
            f.write_str(")")
        };
        match self {
            Query::All => f.write_str("*"),
            Query::Term(t) => {
                if let Some(field) = &t.field {
                    write_field(f, field)?;
                }
                write_quoted(f, &t.value)
            }
            Query::Wildcard(t) => {
                if let Some(field) = &t.field {
                    write_field(f, field)?;
                }
                // The pattern keeps its own escapes; what else the lexer
                // would read as syntax is escaped here.
                let mut chars = t.value.chars();
                let mut first = true;
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        f.write_char('\\')?;
                        f.write_char(chars.next().unwrap_or('\\'))?;
                    } else {
                        let syntax = c.is_whitespace()
                            || matches!(c, '(' | ')' | '"' | ':')
                            || (first && matches!(c, '-' | '[' | '{' | '>' | '<'));
                        if syntax {
                            f.write_char('\\')?;
                        }
                        f.write_char(c)?;
                    }
                    first = false;
                }
                Ok(())
            }
            Query::Range(r) => {
                write_field(f, &r.field)?;
                let bound = |f: &mut fmt::Formatter<'_>, b: &Bound<String>| match b {
                    Bound::Included(v) | Bound::Excluded(v) => write_quoted(f, v),
                    Bound::Unbounded => f.write_char('*'),
                };
                f.write_char(if matches!(r.lower, Bound::Excluded(_)) {
                    '{'
                } else {
                    '['
                })?;
                bound(f, &r.lower)?;
                f.write_str(" TO ")?;
                bound(f, &r.upper)?;
                f.write_char(if matches!(r.upper, Bound::Excluded(_)) {
                    '}'
                } else {
                    ']'
                })
            }
            Query::And(parts) => join(f, parts, "AND"),
            Query::Or(parts) => join(f, parts, "OR"),
            Query::Not(q) => write!(f, "NOT {q}"),
        }
    }
}
