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

use std::fmt::{self, Write as _};

use crate::util::shown;

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

/// A sub-query as the parser returns it, with how deep its operators nest.
struct Parsed {
    query: Query,
    shape: Shape,
}

#[derive(Clone, Copy)]
struct Shape {
    /// The `And`, `Or` and `Not` nodes on the longest path to a term.
    height: usize,
    /// Where the innermost of those nodes starts: where the query is too deep
    /// when `height` passes the limit.
    innermost: usize,
}

impl Parsed {
    fn term(term: Term, start: usize) -> Parsed {
        Parsed {
            query: Query::Term(term),
            shape: Shape {
                height: 0,
                innermost: start,
            },
        }
    }

    /// The node `query`, starting at `start`, over a child (its deepest
    /// child, for `And` and `Or`) shaped `child`; refused when that is past
    /// [`Query::MAX_DEPTH`].
    fn node(query: Query, start: usize, child: Shape) -> Result<Parsed, ParseError> {
        let shape = Shape {
            height: child.height + 1,
            innermost: if child.height == 0 {
                start
            } else {
                child.innermost
            },
        };
        if shape.height > Query::MAX_DEPTH {
            return Err(too_deep(shape.innermost));
        }
        Ok(Parsed { query, shape })
    }

    /// `parts`, starting at `start`, joined by `make` (`Query::And`,
    /// `Query::Or`); a single part stands for itself.
    fn combine(
        start: usize,
        mut parts: Vec<Parsed>,
        make: fn(Vec<Query>) -> Query,
    ) -> Result<Parsed, ParseError> {
        if parts.len() == 1 {
            return Ok(parts.swap_remove(0));
        }
        let mut deepest = parts[0].shape;
        for p in &parts[1..] {
            if p.shape.height > deepest.height {
                deepest = p.shape;
            }
        }
        let query = make(parts.into_iter().map(|p| p.query).collect());
        Parsed::node(query, start, deepest)
    }
}

fn too_deep(position: usize) -> ParseError {
    ParseError {
        position,
        message: format!(
            "query nests deeper than {} levels: use fewer nested parentheses and `NOT`s",
            Query::MAX_DEPTH
        ),
    }
}

/// A recursive-descent parser whose recursion is bounded: every `(` and
/// `NOT` is counted against [`Query::MAX_DEPTH`] before the parser descends
/// into it, so the input cannot decide how deep the call stack grows.
struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    /// `(` groups and `NOT`s open around the current token.
    depth: usize,
    /// Terms parsed so far.
    terms: usize,
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

    /// Steps over the `(` or `NOT` at the current token into the level it
    /// opens, unless that level is past the limit.
    fn open(&mut self) -> Result<(), ParseError> {
        if self.depth == Query::MAX_DEPTH {
            return Err(too_deep(self.pos()));
        }
        self.depth += 1;
        self.at += 1;
        Ok(())
    }

    fn or(&mut self) -> Result<Parsed, ParseError> {
        let start = self.pos();
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            parts.push(self.and()?);
        }
        Parsed::combine(start, parts, Query::Or)
    }

    fn and(&mut self) -> Result<Parsed, ParseError> {
        let start = self.pos();
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
        Parsed::combine(start, parts, Query::And)
    }

    fn unary(&mut self) -> Result<Parsed, ParseError> {
        if !matches!(self.peek(), Some(Tok::Not | Tok::Minus)) {
            return self.primary();
        }
        let start = self.pos();
        self.open()?;
        let inner = self.unary()?;
        self.depth -= 1;
        Parsed::node(Query::Not(Box::new(inner.query)), start, inner.shape)
    }

    // `primary`, `group`, `or`, `and` and `unary` are the frames each level
    // of nesting puts on the stack: they keep their locals few, and messages
    // are formatted in the functions they call.
    fn primary(&mut self) -> Result<Parsed, ParseError> {
        let start = self.pos();
        match self.peek() {
            Some(Tok::LParen) => self.group(),
            Some(Tok::Field(field)) => {
                let field = field.clone();
                self.at += 1;
                self.field_term(start, field)
            }
            Some(Tok::Word(value) | Tok::Phrase(value)) => {
                let value = value.clone();
                self.term(start, None, value)
            }
            Some(Tok::RParen) => self.error("unexpected `)`: it closes no `(`"),
            Some(Tok::And | Tok::Or) => {
                self.error("an operator needs a term on each side, as in `a AND b`")
            }
            Some(Tok::Not | Tok::Minus) => self.error("`NOT` needs a term after it"),
            None => self.error("the query ends where a term was expected"),
        }
    }

    /// The `(…)` group at the current token.
    fn group(&mut self) -> Result<Parsed, ParseError> {
        let start = self.pos();
        self.open()?;
        if self.peek() == Some(&Tok::RParen) {
            return self.error("empty parentheses: put a term inside");
        }
        let inner = self.or()?;
        if self.peek() != Some(&Tok::RParen) {
            return Err(ParseError {
                position: start,
                message: "unclosed `(`: add a `)`".to_owned(),
            });
        }
        self.at += 1;
        self.depth -= 1;
        Ok(inner)
    }

    /// The term starting at `start` with `field:`, whose value is the
    /// current token.
    fn field_term(&mut self, start: usize, field: String) -> Result<Parsed, ParseError> {
        let value = match self.peek() {
            Some(Tok::Word(w) | Tok::Phrase(w)) => w.clone(),
            Some(Tok::And | Tok::Or | Tok::Not) => {
                let field = shown(&field);
                return self.error(format!(
                    "`{field}:` is followed by an operator; quote the value to search for it, as in {field}:\"OR\""
                ));
            }
            _ => {
                let field = shown(&field);
                return self.error(format!(
                    "`{field}:` needs a value, as in {field}:ethereum or {field}:\"two words\""
                ));
            }
        };
        self.term(start, Some(field), value)
    }

    /// The term starting at `start` whose value is the current token.
    fn term(
        &mut self,
        start: usize,
        field: Option<String>,
        value: String,
    ) -> Result<Parsed, ParseError> {
        // A quoted `*` or `?` is searched for as written.
        if matches!(self.peek(), Some(Tok::Word(w)) if w.contains(['*', '?'])) {
            return self.error(format!(
                "wildcards are not supported in `{}`: search for whole words (quote the value to match a literal `*` or `?`)",
                shown(&value)
            ));
        }
        let term = Term { field, value };
        // `words` finds a word exactly where there is a letter or digit.
        if matches!(term.kind(), FieldKind::Text(_))
            && !term.value.chars().any(char::is_alphanumeric)
        {
            return self.error(format!(
                "`{}` has no letters or digits to search for",
                shown(&term.value)
            ));
        }
        if term.value.is_empty() {
            return self.error("an empty value matches nothing; write a value");
        }
        if self.terms == Query::MAX_TERMS {
            return Err(ParseError {
                position: start,
                message: format!(
                    "query has more than {} terms: split it into several searches",
                    Query::MAX_TERMS
                ),
            });
        }
        self.terms += 1;
        self.at += 1;
        Ok(Parsed::term(term, start))
    }
}

impl Query {
    /// How deep a query may nest. Each `(…)` and each `NOT` (or `-`, `!`)
    /// around a term counts one level as written; and each
    /// [`And`](Query::And), [`Or`](Query::Or) and [`Not`](Query::Not) around
    /// it counts one level in the parsed query, which is how
    /// [`Display`](fmt::Display) writes it (it parenthesises every
    /// combination), so what it prints parses back. A deeper query is a
    /// [`ParseError`] ("query nests deeper than 64 levels"): the limit keeps
    /// parsing, printing, searching and dropping a query within a small,
    /// fixed stack.
    pub const MAX_DEPTH: usize = 64;

    /// How many terms a query may have; more is a [`ParseError`] ("query has
    /// more than 1024 terms"). 1,024 is Lucene's default limit on the
    /// clauses of a boolean query (Elasticsearch 7's
    /// `indices.query.bool.max_clause_count`), and `logs search` sends the
    /// same text to Elasticsearch when one is configured. It bounds the work
    /// of one parse and one search, whatever the input's length.
    pub const MAX_TERMS: usize = 1024;

    /// Parses `input`; blank input is [`Query::All`].
    ///
    /// Parsing takes time linear in the input, and refuses queries deeper
    /// than [`MAX_DEPTH`](Self::MAX_DEPTH) or with more than
    /// [`MAX_TERMS`](Self::MAX_TERMS) terms.
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
            depth: 0,
            terms: 0,
        };
        let q = parser.or()?;
        if parser.at < parser.toks.len() {
            return parser.error("unexpected `)`: it closes no `(`");
        }
        Ok(q.query)
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

#[cfg(test)]
mod tests {
    //! The parser's specification, then property tests that fuzz it with
    //! arbitrary and hostile input (proptest: cargo-fuzz needs nightly).
    //! Each property runs proptest's default 256 cases, a few seconds for
    //! the lot in a debug build. `PROPTEST_CASES` sets the count of every
    //! property (since proptest 1.2 the environment wins over a test's own
    //! `proptest_config`), so 100 times more, about six minutes, is:
    //!
    //! ```text
    //! PROPTEST_CASES=25600 cargo test -p hyperkit-obs --lib logs::query
    //! ```

    use std::time::{Duration, Instant};

    use proptest::prelude::*;

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

    fn nested_parentheses(levels: usize) -> String {
        format!("{}a{}", "(".repeat(levels), ")".repeat(levels))
    }

    fn joined(terms: usize, op: &str) -> String {
        vec!["a"; terms].join(op)
    }

    #[test]
    fn a_query_nested_past_the_depth_limit_is_refused_where_it_gets_too_deep() {
        assert!(Query::parse(&nested_parentheses(Query::MAX_DEPTH)).is_ok());
        let e = Query::parse(&nested_parentheses(Query::MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "query nests deeper than 64 levels: use fewer nested parentheses and `NOT`s at position 64"
        );
        let e = Query::parse(&nested_parentheses(20_000)).unwrap_err();
        assert_eq!((e.position, e.message), (64, too_deep(0).message));
    }

    #[test]
    fn each_not_counts_a_level() {
        for not in ["NOT ", "-", "! "] {
            let at_limit = format!("{}a", not.repeat(Query::MAX_DEPTH));
            assert!(Query::parse(&at_limit).is_ok(), "{not}");
            let e = Query::parse(&format!("{}a", not.repeat(30_000))).unwrap_err();
            assert_eq!(e.position, Query::MAX_DEPTH * not.len(), "{not}");
            assert!(e.message.starts_with("query nests deeper than 64 levels"));
        }
    }

    #[test]
    fn each_combination_counts_a_level_so_what_display_prints_parses_back() {
        // `x (y (z …))` nests one `(` per level, and one `And` per level plus
        // the outermost one, which `Display` parenthesises too.
        let nested = |levels: usize| format!("{}a b{}", "x (".repeat(levels), ")".repeat(levels));
        let q = Query::parse(&nested(Query::MAX_DEPTH - 1)).unwrap();
        assert_eq!(Query::parse(&q.to_string()).unwrap(), q);
        let input = nested(Query::MAX_DEPTH);
        let e = Query::parse(&input).unwrap_err();
        assert_eq!(e.position, input.find("a b").unwrap(), "{e}");
        assert!(e.message.starts_with("query nests deeper than 64 levels"));
    }

    #[test]
    fn a_query_with_more_terms_than_the_limit_is_refused_at_the_first_one_too_many() {
        assert!(Query::parse(&joined(Query::MAX_TERMS, " OR ")).is_ok());
        for (input, op) in [
            (joined(Query::MAX_TERMS + 1, " OR "), " OR "),
            (joined(20_000, " "), " "),
        ] {
            let e = Query::parse(&input).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "query has more than 1024 terms: split it into several searches at position {}",
                    Query::MAX_TERMS * (1 + op.len())
                )
            );
        }
    }

    #[test]
    fn the_largest_queries_parse_print_and_drop_on_a_small_stack() {
        let largest = [
            nested_parentheses(Query::MAX_DEPTH),
            format!("{}a", "NOT ".repeat(Query::MAX_DEPTH)),
            joined(Query::MAX_TERMS, " OR "),
            format!(
                "{}a b{}",
                "x OR (".repeat(Query::MAX_DEPTH - 1),
                ")".repeat(Query::MAX_DEPTH - 1)
            ),
            nested_parentheses(20_000),
            format!("{}a", "-".repeat(30_000)),
        ];
        // A quarter of a spawned thread's 2 MiB: a debug build takes about
        // 4 KiB per level, so twice what the deepest query needs.
        let parsed = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                largest
                    .iter()
                    .map(|q| Query::parse(q).map(|q| q.to_string().len()).is_ok())
                    .collect::<Vec<_>>()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(parsed, [true, true, true, true, false, false]);
    }

    #[test]
    fn display_escapes_field_names_so_they_parse_back() {
        for input in [
            r"a\ b:x",
            r"a\:b:c",
            r"\-a:x",
            r"\(x\):y",
            r#"a\"b:c"#,
            r"a\\b:c",
        ] {
            let q = Query::parse(input).unwrap();
            assert_eq!(Query::parse(&q.to_string()).unwrap(), q, "{input} → {q}");
        }
    }

    #[test]
    fn errors_quote_values_on_one_short_line() {
        let value = format!("\\\n{}*", "x".repeat(10_000));
        let e = Query::parse(&value).unwrap_err();
        assert!(
            e.message
                .starts_with("wildcards are not supported in `\\nxxx"),
            "{e}"
        );
        assert!(e.message.len() < 200, "{e}");
    }

    // -----------------------------------------------------------------------
    // Property tests.
    // -----------------------------------------------------------------------

    /// The time bound of every parse here. The largest inputs (a few hundred
    /// kilobytes) parse in tens of milliseconds in a debug build, so a loaded
    /// machine has a twentyfold margin, and anything quadratic in 20,000
    /// terms or levels would still take far longer.
    const PARSE_DEADLINE: Duration = Duration::from_secs(1);

    /// Parses `input` and checks what holds for every input: the parse ends
    /// in time; an error points inside the input and is one line of bounded
    /// length (safe to show a user); a query prints as text that parses back
    /// to it. Returns the result for further checks.
    fn parse_checked(input: &str) -> Result<Result<Query, ParseError>, TestCaseError> {
        let started = Instant::now();
        let parsed = Query::parse(input);
        let took = started.elapsed();
        prop_assert!(took < PARSE_DEADLINE, "{took:?} for {} bytes", input.len());
        match &parsed {
            Ok(Query::All) => prop_assert!(input.trim().is_empty()),
            Ok(q) => {
                let printed = q.to_string();
                let reparsed = Query::parse(&printed);
                prop_assert_eq!(reparsed.as_ref(), Ok(q), "printed as {}", printed);
            }
            Err(e) => {
                prop_assert!(input.is_char_boundary(e.position), "{e:?}");
                prop_assert!(!e.message.is_empty() && e.message.len() <= 1024, "{e:?}");
                prop_assert!(!e.message.chars().any(char::is_control), "{e:?}");
            }
        }
        Ok(parsed)
    }

    /// Pieces that mean something to the lexer or parser, so that joining
    /// them at random reaches every path: operators, quotes, escapes,
    /// colons, control characters, wildcards, text and field names.
    const PIECES: &[&str] = &[
        "(",
        ")",
        "\"",
        "\\",
        ":",
        "-",
        "!",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\0",
        "\u{1b}",
        "\u{7f}",
        "\u{85}",
        "\u{a0}",
        "\u{2028}",
        "AND",
        "OR",
        "NOT",
        "&&",
        "||",
        "and",
        "*",
        "?",
        "a",
        "Gas",
        "é",
        "日本",
        "0x1f",
        "--",
        "level",
        "log.level",
        "chain",
        "trace.id",
        "x:y:z",
        "::",
        "\"\"",
        "\\:",
        "\\\"",
        "🦀",
    ];

    fn pieces() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..48).prop_map(|p| p.concat())
    }

    fn lossy_bytes() -> impl Strategy<Value = String> {
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Terms `Query::parse` could have produced, with arbitrary field names
    /// and values, combined into small trees.
    fn valid_queries() -> impl Strategy<Value = Query> {
        let text = prop_oneof![any::<String>(), pieces()];
        let field = prop::option::of(prop_oneof![
            text.clone(),
            prop::sample::select(&["level", "chain", "trace.id", "error.message"][..])
                .prop_map(str::to_owned),
        ]);
        let leaf = (field, text)
            .prop_map(|(field, value)| Term { field, value })
            .prop_filter("a term the parser accepts", |t| {
                !t.value.is_empty()
                    && t.field.as_ref().is_none_or(|f| !f.is_empty())
                    && (!matches!(t.kind(), FieldKind::Text(_))
                        || t.value.chars().any(char::is_alphanumeric))
            })
            .prop_map(Query::Term);
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..5).prop_map(Query::And),
                prop::collection::vec(inner.clone(), 2..5).prop_map(Query::Or),
                inner.prop_map(|q| Query::Not(Box::new(q))),
            ]
        })
    }

    /// One level of nesting as written: text before, text after, the levels
    /// it opens as the parser counts them (`(` and `NOT`), and the operators
    /// it adds to the parsed query.
    const OPENERS: &[(&str, &str, usize, usize)] = &[
        ("(", ")", 1, 0),
        ("x OR (", ")", 1, 1),
        ("x AND (", ") y", 1, 1),
        ("x (", ")", 1, 1),
        ("NOT (", ")", 2, 1),
        ("-(", ")", 2, 1),
        ("x OR y (", ")", 1, 2),
    ];

    fn openers() -> impl Strategy<Value = Vec<(&'static str, &'static str, usize, usize)>> {
        let levels = prop_oneof![
            3 => Query::MAX_DEPTH / 2 - 2..Query::MAX_DEPTH + 3,
            1 => 0..2_000usize,
        ];
        levels.prop_flat_map(|n| prop::collection::vec(prop::sample::select(OPENERS), n))
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_with_a_positioned_error(input in any::<String>()) {
            let _ = parse_checked(&input)?;
        }

        #[test]
        fn arbitrary_bytes_parse_or_fail_with_a_positioned_error(input in lossy_bytes()) {
            let _ = parse_checked(&input)?;
        }

        #[test]
        fn query_syntax_pieces_in_any_order_parse_or_fail_with_a_positioned_error(
            input in pieces(),
        ) {
            let _ = parse_checked(&input)?;
        }


        #[test]
        fn any_query_prints_as_text_that_parses_back_to_it(query in valid_queries()) {
            let printed = query.to_string();
            let parsed = parse_checked(&printed)?;
            prop_assert_eq!(parsed, Ok(query), "printed as {}", printed);
        }

        #[test]
        fn nesting_parses_up_to_the_depth_limit_and_fails_past_it(levels in openers()) {
            let mut input = String::new();
            let (mut open, mut operators) = (0, 0);
            let mut first_too_deep = None;
            for (before, _, opens, adds) in &levels {
                // The level past the limit, where the parser refuses it: a
                // `NOT (` opens two, at the `NOT` and at the `(`.
                if open <= Query::MAX_DEPTH && open + opens > Query::MAX_DEPTH {
                    let token = if open + 1 > Query::MAX_DEPTH && *opens == 2 {
                        0
                    } else {
                        before.len() - 1
                    };
                    first_too_deep = Some(input.len() + token);
                }
                input.push_str(before);
                open += opens;
                operators += adds;
            }
            input.push('a');
            for (_, after, _, _) in levels.iter().rev() {
                input.push_str(after);
            }
            let parsed = parse_checked(&input)?;
            if open <= Query::MAX_DEPTH && operators <= Query::MAX_DEPTH {
                prop_assert!(parsed.is_ok(), "{:?}", parsed);
            } else {
                let e = parsed.unwrap_err();
                prop_assert_eq!(&e.message, &too_deep(0).message);
                if let Some(at) = first_too_deep {
                    prop_assert_eq!(e.position, at);
                }
            }
        }

        #[test]
        fn chains_parse_up_to_the_term_limit_and_fail_past_it(
            n in prop_oneof![
                1 => Query::MAX_TERMS - 2..Query::MAX_TERMS + 3,
                1 => 1..100usize,
                1 => Query::MAX_TERMS..5_000usize,
            ],
            ops in prop::collection::vec(
                prop::sample::select(&[" OR ", " AND ", " ", " || ", " && ", " -", " OR NOT "][..]),
                1..4,
            ),
            terms in prop::collection::vec(
                prop::sample::select(&["a", "level:error", "chain:\"eth\"", "trace.id:00ab", "\"two words\""][..]),
                1..4,
            ),
        ) {
            let mut input = String::new();
            let mut too_many_at = None;
            for i in 0..n {
                if i > 0 {
                    input.push_str(ops[i % ops.len()]);
                }
                if i == Query::MAX_TERMS {
                    too_many_at = Some(input.len());
                }
                input.push_str(terms[i % terms.len()]);
            }
            let parsed = parse_checked(&input)?;
            match too_many_at {
                None => prop_assert!(parsed.is_ok(), "{:?}", parsed),
                Some(at) => {
                    let e = parsed.unwrap_err();
                    prop_assert!(e.message.starts_with("query has more than 1024 terms"), "{}", e);
                    prop_assert_eq!(e.position, at);
                }
            }
        }

        #[test]
        fn huge_terms_and_phrases_parse(
            len in 0..32_768usize,
            c in prop_oneof![Just('a'), Just('é'), Just('\u{0}'), Just(' '), any::<char>()],
            field in prop::option::of(prop::sample::select(&["message", "trace.id", "level"][..])),
            quoted in any::<bool>(),
        ) {
            let value: String = std::iter::repeat_n(c, len / c.len_utf8()).collect();
            let mut input = field.map(|f| format!("{f}:")).unwrap_or_default();
            if quoted {
                input.push('"');
                input.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
                input.push('"');
            } else {
                input.push_str(&value);
            }
            let _ = parse_checked(&input)?;
        }
    }
}
