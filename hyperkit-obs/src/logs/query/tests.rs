//! The parser's specification: what parses to what, and where and why
//! what does not parse is refused.

use std::ops::Bound;

use super::parse::too_deep;
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
        ("attempt:[3 TO", 8, "a range reads [FROM TO TO]"),
        ("attempt:[3 5]", 8, "a range reads [FROM TO TO]"),
        ("event.duration:>", 15, "a comparison needs a value"),
        ("@timestamp:2026*", 11, "use --since and --until"),
        ("@timestamp:>2026", 11, "use --since and --until"),
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
    let value = format!("\\\n{}", "-".repeat(10_000));
    let e = Query::parse(&value).unwrap_err();
    assert!(e.message.starts_with("`\\n---"), "{e}");
    assert!(e.message.contains("has no letters or digits"), "{e}");
    assert!(e.message.len() < 200, "{e}");
}

fn wildcard(field: Option<&str>, pattern: &str) -> Query {
    Query::Wildcard(Term {
        field: field.map(str::to_owned),
        value: pattern.to_owned(),
    })
}

fn range(field: &str, lower: Bound<&str>, upper: Bound<&str>) -> Query {
    Query::Range(Range {
        field: field.to_owned(),
        lower: lower.map(str::to_owned),
        upper: upper.map(str::to_owned),
    })
}

#[test]
fn unquoted_stars_and_question_marks_make_wildcards_and_quoted_or_escaped_ones_do_not() {
    assert_eq!(
        Query::parse("chain:eth*").unwrap(),
        wildcard(Some("chain"), "eth*")
    );
    assert_eq!(
        Query::parse("req-00?1").unwrap(),
        wildcard(None, "req-00?1")
    );
    assert_eq!(Query::parse(r"a\*b*").unwrap(), wildcard(None, r"a\*b*"));
    assert_eq!(Query::parse(r"req\*1").unwrap(), term(None, "req*1"));
    assert_eq!(Query::parse(r#""eth*""#).unwrap(), term(None, "eth*"));
    assert_eq!(
        Query::parse("chain:eth* -model:gpt?").unwrap(),
        Query::And(vec![
            wildcard(Some("chain"), "eth*"),
            Query::Not(Box::new(wildcard(Some("model"), "gpt?"))),
        ])
    );
}

#[test]
fn ranges_and_comparisons_parse_to_their_bounds() {
    use Bound::{Excluded, Included, Unbounded};
    let cases = [
        (
            "attempt:[3 TO 5]",
            range("attempt", Included("3"), Included("5")),
        ),
        (
            "attempt:{3 TO 5]",
            range("attempt", Excluded("3"), Included("5")),
        ),
        (
            "attempt:[* TO 5}",
            range("attempt", Unbounded, Excluded("5")),
        ),
        (
            "attempt:[ 3  TO * ]",
            range("attempt", Included("3"), Unbounded),
        ),
        (
            "event.duration:>1000000000",
            range("event.duration", Excluded("1000000000"), Unbounded),
        ),
        (
            "event.duration:>=7",
            range("event.duration", Included("7"), Unbounded),
        ),
        (
            "event.duration:<7",
            range("event.duration", Unbounded, Excluded("7")),
        ),
        (
            "event.duration:<=7",
            range("event.duration", Unbounded, Included("7")),
        ),
        (
            r#"id:["a b" TO "*"]"#,
            range("id", Included("a b"), Included("*")),
        ),
        (
            r"id:[a\]b TO c]",
            range("id", Included("a]b"), Included("c")),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(Query::parse(input).unwrap(), want, "{input}");
    }
    // Only right after the colon: elsewhere a bracket is a word's.
    assert_eq!(Query::parse("[3").unwrap(), term(None, "[3"));
}

#[test]
fn wildcards_and_ranges_print_as_text_that_parses_back() {
    for input in [
        "chain:eth*",
        r"a\*b\?c\\d*",
        r"msg:\-x*",
        r"chain:\[x*",
        r#"f:a\ b\(c\)\:d\"e*"#,
        "attempt:{3 TO *]",
        r#"id:["a \"b\"" TO c}"#,
        "x:<=\"two words\"",
    ] {
        let q = Query::parse(input).unwrap();
        assert_eq!(Query::parse(&q.to_string()).unwrap(), q, "{input} → {q}");
    }
}

#[test]
fn wildcard_patterns_match_whole_values_like_lucene() {
    let cases = [
        ("eth*", "ethereum", true),
        ("eth*", "eth", true),
        ("eth*", "xeth", false),
        ("*eum", "ethereum", true),
        ("e?h*", "ethereum", true),
        ("?", "", false),
        ("*", "", true),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXcYYb", false),
        (r"a\*", "a*", true),
        (r"a\*", "ab", false),
        (r"\\*", "\\x", true),
        ("日*", "日本", true),
        ("??", "日本", true),
    ];
    for (pattern, text, want) in cases {
        assert_eq!(wildcard_matches(pattern, text), want, "{pattern} ~ {text}");
    }
    assert_eq!(wildcard_prefix(r"req-\*0*x"), "req-*0");
}
