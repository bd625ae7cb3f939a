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
//! Parsing never panics; errors carry the byte offset of the problem.

use std::fmt;

/// A parsed query.
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

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Minus,
    /// `field:` (the value follows as the next token).
    Field(String),
    Word(String),
    Phrase(String),
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let mut toks = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                toks.push((pos, Tok::LParen));
            }
            ')' => {
                chars.next();
                toks.push((pos, Tok::RParen));
            }
            '-' => {
                chars.next();
                toks.push((pos, Tok::Minus));
            }
            '"' => {
                chars.next();
                let mut phrase = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                phrase.push(e);
                            }
                        }
                        c => phrase.push(c),
                    }
                }
                if !closed {
                    return Err(ParseError {
                        position: pos,
                        message: "unclosed quote: end the phrase with `\"`".to_owned(),
                    });
                }
                toks.push((pos, Tok::Phrase(phrase)));
            }
            _ => {
                let mut word = String::new();
                let mut field = None;
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        if let Some((_, e)) = chars.next() {
                            word.push(e);
                        }
                    } else if c == ':' && field.is_none() {
                        field = Some(std::mem::take(&mut word));
                        break;
                    } else {
                        word.push(c);
                    }
                }
                match field {
                    Some(f) if f.is_empty() => {
                        return Err(ParseError {
                            position: pos,
                            message: "`:` needs a field name before it, as in `level:error`"
                                .to_owned(),
                        });
                    }
                    Some(f) => toks.push((pos, Tok::Field(f))),
                    None => toks.push((
                        pos,
                        match word.as_str() {
                            "AND" | "&&" => Tok::And,
                            "OR" | "||" => Tok::Or,
                            "NOT" | "!" => Tok::Not,
                            _ => Tok::Word(word),
                        },
                    )),
                }
            }
        }
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            position: self.pos(),
            message: message.into(),
        })
    }

    fn or(&mut self) -> Result<Query, ParseError> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Query, ParseError> {
        let mut parts = vec![self.unary()?];
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.at += 1;
                    parts.push(self.unary()?);
                }
                None | Some(Tok::Or | Tok::RParen) => break,
                Some(_) => parts.push(self.unary()?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Query, ParseError> {
        match self.peek() {
            Some(Tok::Not | Tok::Minus) => {
                self.at += 1;
                Ok(Query::Not(Box::new(self.unary()?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Query, ParseError> {
        let Some(tok) = self.peek().cloned() else {
            return self.error("the query ends where a term was expected");
        };
        match tok {
            Tok::LParen => {
                let open = self.pos();
                self.at += 1;
                if self.peek() == Some(&Tok::RParen) {
                    return self.error("empty parentheses: put a term inside");
                }
                let inner = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(ParseError {
                        position: open,
                        message: "unclosed `(`: add a `)`".to_owned(),
                    });
                }
                self.at += 1;
                Ok(inner)
            }
            Tok::Field(field) => {
                self.at += 1;
                let value = match self.peek().cloned() {
                    Some(Tok::Word(w) | Tok::Phrase(w)) => w,
                    Some(Tok::And | Tok::Or | Tok::Not) => {
                        return self.error(format!(
                            "`{field}:` is followed by an operator; quote the value to search for it, as in {field}:\"OR\""
                        ));
                    }
                    _ => {
                        return self.error(format!(
                            "`{field}:` needs a value, as in {field}:ethereum or {field}:\"two words\""
                        ));
                    }
                };
                self.term(Some(field), value)
            }
            Tok::Word(w) | Tok::Phrase(w) => self.term(None, w),
            Tok::RParen => self.error("unexpected `)`: it closes no `(`"),
            Tok::And | Tok::Or => {
                self.error("an operator needs a term on each side, as in `a AND b`")
            }
            Tok::Not | Tok::Minus => self.error("`NOT` needs a term after it"),
        }
    }

    fn term(&mut self, field: Option<String>, value: String) -> Result<Query, ParseError> {
        // A quoted `*` or `?` is searched for as written.
        if matches!(self.peek(), Some(Tok::Word(w)) if w.contains(['*', '?'])) {
            return self.error(format!(
                "wildcards are not supported in `{value}`: search for whole words (quote the value to match a literal `*` or `?`)"
            ));
        }
        let term = Term { field, value };
        if matches!(term.kind(), FieldKind::Text(_)) && words(&term.value).next().is_none() {
            return self.error(format!(
                "`{}` has no letters or digits to search for",
                term.value
            ));
        }
        if term.value.is_empty() {
            return self.error("an empty value matches nothing; write a value");
        }
        self.at += 1;
        Ok(Query::Term(term))
    }
}

impl Query {
    /// Parses `input`; blank input is [`Query::All`].
    ///
    /// ```
    /// use hyperkit_obs::logs::Query;
    ///
    /// let q = Query::parse(r#"level:error AND chain:ethereum AND "out of gas""#).unwrap();
    /// assert_eq!(q.to_string(), r#"(level:"error" AND chain:"ethereum" AND "out of gas")"#);
    /// let e = Query::parse("level:error AND (chain:ethereum").unwrap_err();
    /// assert_eq!(e.to_string(), "unclosed `(`: add a `)` at position 16");
    /// ```
    pub fn parse(input: &str) -> Result<Query, ParseError> {
        let toks = lex(input)?;
        if toks.is_empty() {
            return Ok(Query::All);
        }
        let mut parser = Parser {
            toks,
            at: 0,
            end: input.len(),
        };
        let q = parser.or()?;
        if parser.at < parser.toks.len() {
            return parser.error("unexpected `)`: it closes no `(`");
        }
        Ok(q)
    }
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
                    write!(f, "{field}:")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn term(field: Option<&str>, value: &str) -> Query {
        Query::Term(Term {
            field: field.map(str::to_owned),
            value: value.to_owned(),
        })
    }

    #[test]
    fn field_terms_phrases_and_implicit_and_parse() {
        assert_eq!(
            Query::parse(r#"level:error chain:ethereum "out of gas""#).unwrap(),
            Query::And(vec![
                term(Some("level"), "error"),
                term(Some("chain"), "ethereum"),
                term(None, "out of gas"),
            ])
        );
        assert_eq!(
            Query::parse(r#"message:"out of gas""#).unwrap(),
            term(Some("message"), "out of gas")
        );
        assert_eq!(Query::parse("  ").unwrap(), Query::All);
    }

    #[test]
    fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
        assert_eq!(
            Query::parse("a OR b AND NOT c -d").unwrap(),
            Query::Or(vec![
                term(None, "a"),
                Query::And(vec![
                    term(None, "b"),
                    Query::Not(Box::new(term(None, "c"))),
                    Query::Not(Box::new(term(None, "d"))),
                ]),
            ])
        );
        assert_eq!(
            Query::parse("(a OR b) c").unwrap(),
            Query::And(vec![
                Query::Or(vec![term(None, "a"), term(None, "b")]),
                term(None, "c")
            ])
        );
        assert_eq!(
            Query::parse("and or").unwrap(),
            Query::And(vec![term(None, "and"), term(None, "or")])
        );
    }

    #[test]
    fn errors_name_the_position_and_the_fix() {
        let cases = [
            ("level:", 6, "needs a value"),
            ("a AND", 5, "ends where a term was expected"),
            ("(a OR b", 0, "unclosed `(`"),
            ("a) b", 1, "closes no `(`"),
            ("x \"out of", 2, "unclosed quote"),
            (":x", 0, "needs a field name"),
            ("OR a", 0, "a term on each side"),
            ("message:\"--\"", 8, "no letters or digits"),
            ("chain:OR", 6, "quote the value"),
            ("a eth*", 2, "wildcards are not supported"),
        ];
        for (input, position, fragment) in cases {
            let e = Query::parse(input).unwrap_err();
            assert_eq!(e.position, position, "{input}: {e}");
            assert!(e.message.contains(fragment), "{input}: {e}");
        }
    }

    #[test]
    fn fields_map_to_index_columns_or_exact_comparison() {
        let kind = |q: &str| match Query::parse(q).unwrap() {
            Query::Term(t) => t.kind(),
            other => panic!("{other:?}"),
        };
        assert_eq!(kind("log.level:ERROR"), FieldKind::Level);
        assert_eq!(kind("error.message:gas"), FieldKind::Text("error"));
        assert_eq!(kind("chain:eth"), FieldKind::Text("chain"));
        assert_eq!(kind("gas"), FieldKind::Text(""));
        assert_eq!(kind("trace.id:00ab"), FieldKind::Exact);
        assert_eq!(kind("error.type:Timeout"), FieldKind::Exact);
    }

    #[test]
    fn words_follow_the_index_tokenizer() {
        let w: Vec<_> = words("Out-of-GAS: demo::build_2").collect();
        assert_eq!(w, ["out", "of", "gas", "demo", "build", "2"]);
    }
}
