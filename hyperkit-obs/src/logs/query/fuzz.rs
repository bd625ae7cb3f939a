//! Property tests that fuzz the parser with arbitrary and hostile input
//! (proptest: cargo-fuzz needs nightly). Each property runs proptest's
//! default 256 cases, a few seconds for the lot in a debug build.
//! `PROPTEST_CASES` sets the count of every property (since proptest 1.2
//! the environment wins over a test's own `proptest_config`), so 100 times
//! more, about six minutes, is:
//!
//! ```text
//! PROPTEST_CASES=25600 cargo test -p hyperkit-obs --lib logs::query
//! ```

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::parse::too_deep;
use super::*;

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
    let leaf = (field, text.clone())
        .prop_map(|(field, value)| Term { field, value })
        .prop_filter("a term the parser accepts", |t| {
            !t.value.is_empty()
                && t.field.as_ref().is_none_or(|f| !f.is_empty())
                && (!matches!(t.kind(), FieldKind::Text(_))
                    || t.value.chars().any(char::is_alphanumeric))
        })
        .prop_map(Query::Term);
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('*', "\\*")
            .replace('?', "\\?")
    };
    let wild = (
        prop::option::of(prop_oneof![
            text.clone(),
            prop::sample::select(&["chain", "request_id", "level"][..]).prop_map(str::to_owned),
        ]),
        text.clone(),
        prop::sample::select(&["*", "?"][..]),
        text.clone(),
    )
        .prop_filter("a field the parser accepts", |(f, ..)| {
            f.as_ref()
                .is_none_or(|f| !f.is_empty() && f != "@timestamp")
        })
        .prop_map(move |(field, a, w, b)| {
            Query::Wildcard(Term {
                field,
                value: format!("{}{w}{}", escape(&a), escape(&b)),
            })
        });
    let bound = prop_oneof![
        Just(std::ops::Bound::Unbounded),
        text.clone().prop_map(std::ops::Bound::Included),
        text.clone().prop_map(std::ops::Bound::Excluded),
    ];
    let range = (text.clone(), bound.clone(), bound)
        .prop_filter("a field the parser accepts", |(f, ..)| {
            !f.is_empty() && f != "@timestamp"
        })
        .prop_map(|(field, lower, upper)| {
            Query::Range(Range {
                field,
                lower,
                upper,
            })
        });
    let leaf = prop_oneof![3 => leaf, 1 => wild, 1 => range];
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
