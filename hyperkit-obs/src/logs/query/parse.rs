//! Lexing and parsing the query language into a [`Query`], and the limits
//! that bound both: linear time in the input, at most [`Query::MAX_DEPTH`]
//! levels and [`Query::MAX_TERMS`] terms. It never panics and never
//! recurses deeper than the depth limit, whatever the input: every error
//! is a [`ParseError`] with the byte offset of the problem.

use std::iter::Peekable;
use std::ops::Bound;
use std::str::CharIndices;

use super::{FieldKind, ParseError, Query, Range, Term};
use crate::util::shown;

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
    /// An unquoted word: its text with escapes resolved, and, when it holds
    /// an unescaped `*` or `?`, the wildcard pattern (escapes of `*`, `?`
    /// and `\\` kept).
    Word(String, Option<String>),
    Phrase(String),
    /// `[a TO b]`, `{a TO b}`, `>a`, `<=b`… right after a `field:`.
    Range(Bound<String>, Bound<String>),
}

type Chars<'a> = Peekable<CharIndices<'a>>;

fn range_error<T>(position: usize) -> Result<T, ParseError> {
    Err(ParseError {
        position,
        message: "a range reads [FROM TO TO] or {FROM TO TO} (`*` for an open end), as in attempt:[3 TO 5]"
            .to_owned(),
    })
}

/// One bound inside `[…]`: a quoted value, or a bare one up to whitespace or
/// the closing bracket (`*` alone is an open end). Returns the text and
/// whether it was the open end.
fn range_word(chars: &mut Chars<'_>, open: usize) -> Result<(String, bool), ParseError> {
    while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    let mut word = String::new();
    if chars.next_if(|(_, c)| *c == '"').is_some() {
        loop {
            match chars.next() {
                Some((_, '"')) => return Ok((word, false)),
                Some((_, '\\')) => {
                    if let Some((_, e)) = chars.next() {
                        word.push(e);
                    }
                }
                Some((_, c)) => word.push(c),
                None => return range_error(open),
            }
        }
    }
    let mut escaped = false;
    while let Some(&(_, c)) = chars.peek() {
        if c.is_whitespace() || c == ']' || c == '}' {
            break;
        }
        chars.next();
        if c == '\\' {
            escaped = true;
            if let Some((_, e)) = chars.next() {
                word.push(e);
            }
        } else {
            word.push(c);
        }
    }
    if word.is_empty() {
        return range_error(open);
    }
    let open_end = word == "*" && !escaped;
    Ok((word, open_end))
}

/// The range right after `field:` at `open` (`[` or `{`).
fn lex_range(chars: &mut Chars<'_>, open: usize) -> Result<Tok, ParseError> {
    let inclusive_low = chars.next().is_some_and(|(_, c)| c == '[');
    let (low, low_open) = range_word(chars, open)?;
    let (to, _) = range_word(chars, open)?;
    if to != "TO" {
        return range_error(open);
    }
    let (high, high_open) = range_word(chars, open)?;
    while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    let inclusive_high = match chars.next() {
        Some((_, ']')) => true,
        Some((_, '}')) => false,
        _ => return range_error(open),
    };
    let bound = |v: String, open_end: bool, inclusive: bool| match (open_end, inclusive) {
        (true, _) => Bound::Unbounded,
        (false, true) => Bound::Included(v),
        (false, false) => Bound::Excluded(v),
    };
    Ok(Tok::Range(
        bound(low, low_open, inclusive_low),
        bound(high, high_open, inclusive_high),
    ))
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
                let mut pattern = String::new();
                let mut wild = false;
                let mut field = None;
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        if let Some((_, e)) = chars.next() {
                            word.push(e);
                            if matches!(e, '*' | '?' | '\\') {
                                pattern.push('\\');
                            }
                            pattern.push(e);
                        }
                    } else if c == ':' && field.is_none() {
                        field = Some(std::mem::take(&mut word));
                        break;
                    } else {
                        wild |= matches!(c, '*' | '?');
                        word.push(c);
                        pattern.push(c);
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
                    Some(f) => {
                        toks.push((pos, Tok::Field(f)));
                        // Range syntax counts only right after the colon.
                        if let Some(&(at, c)) = chars.peek() {
                            match c {
                                '[' | '{' => toks.push((at, lex_range(&mut chars, at)?)),
                                '>' | '<' => toks.push((at, lex_compare(&mut chars, at)?)),
                                _ => {}
                            }
                        }
                    }
                    None => toks.push((
                        pos,
                        match word.as_str() {
                            "AND" | "&&" => Tok::And,
                            "OR" | "||" => Tok::Or,
                            "NOT" | "!" => Tok::Not,
                            _ => Tok::Word(word, wild.then_some(pattern)),
                        },
                    )),
                }
            }
        }
    }
    Ok(toks)
}

/// `>v`, `>=v`, `<v`, `<=v` right after a `field:`, at `at`.
fn lex_compare(chars: &mut Chars<'_>, at: usize) -> Result<Tok, ParseError> {
    let greater = chars.next().is_some_and(|(_, c)| c == '>');
    let inclusive = chars.next_if(|(_, c)| *c == '=').is_some();
    let mut value = String::new();
    if chars.next_if(|(_, c)| *c == '"').is_some() {
        loop {
            match chars.next() {
                Some((_, '"')) => break,
                Some((_, '\\')) => {
                    if let Some((_, e)) = chars.next() {
                        value.push(e);
                    }
                }
                Some((_, c)) => value.push(c),
                None => return compare_error(at),
            }
        }
    } else {
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
                break;
            }
            chars.next();
            if c == '\\' {
                if let Some((_, e)) = chars.next() {
                    value.push(e);
                }
            } else {
                value.push(c);
            }
        }
    }
    if value.is_empty() {
        return compare_error(at);
    }
    let bound = if inclusive {
        Bound::Included(value)
    } else {
        Bound::Excluded(value)
    };
    Ok(if greater {
        Tok::Range(bound, Bound::Unbounded)
    } else {
        Tok::Range(Bound::Unbounded, bound)
    })
}

fn compare_error<T>(position: usize) -> Result<T, ParseError> {
    Err(ParseError {
        position,
        message: "a comparison needs a value, as in event.duration:>1000000000".to_owned(),
    })
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
    fn term(query: Query, start: usize) -> Parsed {
        Parsed {
            query,
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

pub(super) fn too_deep(position: usize) -> ParseError {
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
            Some(Tok::Word(value, _) | Tok::Phrase(value)) => {
                let value = value.clone();
                self.term(start, None, value)
            }
            Some(Tok::Range(..)) => self.error("a range needs a field, as in attempt:[3 TO 5]"),
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
            Some(Tok::Range(lower, upper)) => {
                let range = Range {
                    field,
                    lower: lower.clone(),
                    upper: upper.clone(),
                };
                return self.range(start, range);
            }
            Some(Tok::Word(w, _) | Tok::Phrase(w)) => w.clone(),
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
        if let Some(Tok::Word(_, Some(pattern))) = self.peek() {
            let term = Term {
                field,
                value: pattern.clone(),
            };
            return self.wildcard(start, term);
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
        self.count_term(start)?;
        Ok(Parsed::term(Query::Term(term), start))
    }

    /// The wildcard term starting at `start`, whose pattern is the current
    /// token.
    fn wildcard(&mut self, start: usize, term: Term) -> Result<Parsed, ParseError> {
        if term.field.as_deref() == Some("@timestamp") {
            return self.error("wildcards do not apply to @timestamp: use --since and --until");
        }
        self.count_term(start)?;
        Ok(Parsed::term(Query::Wildcard(term), start))
    }

    /// The range term starting at `start`, whose bounds are the current
    /// token.
    fn range(&mut self, start: usize, range: Range) -> Result<Parsed, ParseError> {
        if range.field == "@timestamp" {
            return self.error("ranges do not apply to @timestamp: use --since and --until");
        }
        self.count_term(start)?;
        Ok(Parsed::term(Query::Range(range), start))
    }

    /// Counts the term at the current token, starting at `start`, against
    /// [`Query::MAX_TERMS`], and steps over it.
    fn count_term(&mut self, start: usize) -> Result<(), ParseError> {
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
        Ok(())
    }
}

impl Query {
    /// How deep a query may nest. Each `(…)` and each `NOT` (or `-`, `!`)
    /// around a term counts one level as written; and each
    /// [`And`](Query::And), [`Or`](Query::Or) and [`Not`](Query::Not) around
    /// it counts one level in the parsed query, which is how
    /// [`Display`](std::fmt::Display) writes it (it parenthesises every
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
