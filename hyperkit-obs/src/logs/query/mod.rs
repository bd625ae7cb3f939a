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
//! Parsing never panics and is bounded: it takes time linear in the input,
//! refuses queries nested deeper than [`Query::MAX_DEPTH`] or with more than
//! [`Query::MAX_TERMS`] terms, and never recurses deeper than the depth
//! limit. Errors carry the byte offset of the problem.
//!
//! This module holds the query's types and how a query prints; `parse`
//! lexes and parses text within the limits above.

use std::fmt::{self, Write as _};

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
        let f = self.field.as_deref()?;
        Some(match field_kind(f) {
            FieldKind::Level => "log.level",
            FieldKind::Text(col) => TEXT_FIELDS
                .iter()
                .find(|(c, _)| *c == col)
                .map_or(f, |(_, key)| key),
            FieldKind::Exact => f,
        })
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
                    // Escaped as the lexer reads a field name back.
                    for (i, c) in field.char_indices() {
                        if c.is_whitespace()
                            || matches!(c, '(' | ')' | '"' | '\\' | ':')
                            || (i == 0 && c == '-')
                        {
                            f.write_char('\\')?;
                        }
                        f.write_char(c)?;
                    }
                    f.write_char(':')?;
                }
                write!(
                    f,
                    "\"{}\"",
                    t.value.replace('\\', "\\\\").replace('"', "\\\"")
                )
            }
            Query::And(parts) => join(f, parts, "AND"),
            Query::Or(parts) => join(f, parts, "OR"),
            Query::Not(q) => write!(f, "NOT {q}"),
        }
    }
}
