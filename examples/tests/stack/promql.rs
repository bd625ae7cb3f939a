//! A reader of PromQL and of the text exposition, as far as the dashboard
//! test needs: which metrics an expression names with which labels, how it
//! groups and matches; which labels each exported sample carries.

use std::collections::{BTreeMap, BTreeSet};

use crate::dashboard::{parse_label_values, substitute};

/// A lexical token of PromQL, as far as this test needs it.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Open,
    Close,
    /// `{...}`: the label names its matchers use.
    Matchers(Vec<String>),
    /// Anything else: numbers, strings, ranges, operators, commas.
    Other,
}

fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn lex(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            tokens.push(Token::Open);
            i += 1;
        } else if c == ')' {
            tokens.push(Token::Close);
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
            tokens.push(Token::Other);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            tokens.push(Token::Other);
        } else if c == '{' {
            i += 1;
            let mut names = Vec::new();
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    i += 1;
                    break;
                }
                let from = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                assert!(
                    i > from,
                    "unexpected {:?} in the matchers of {expr}",
                    chars[i]
                );
                names.push(chars[from..i].iter().collect());
                while i < chars.len() && chars[i] != '"' && chars[i] != '\'' && chars[i] != '`' {
                    i += 1;
                }
                assert!(i < chars.len(), "a matcher without a value in {expr}");
                i = skip_string(&chars, i);
            }
            tokens.push(Token::Matchers(names));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len()
                && (is_ident_char(chars[i])
                    || chars[i] == '.'
                    || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            tokens.push(Token::Other);
        } else if is_ident_char(c) {
            let from = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[from..i].iter().collect()));
        } else {
            i += 1;
            tokens.push(Token::Other);
        }
    }
    tokens
}

/// What a PromQL expression refers to.
#[derive(Debug, Default)]
pub(crate) struct References {
    /// Each metric selector: its name and the label names of its matchers.
    pub(crate) metrics: Vec<(String, Vec<String>)>,
    /// Each `by (...)`/`without (...)` list with the metrics it groups.
    pub(crate) groupings: Vec<(Vec<String>, Vec<String>)>,
    /// Each `on (...)`/`ignoring (...)`/`group_left|right (...)` list.
    pub(crate) matchings: Vec<Vec<String>>,
}

/// Keywords that are neither functions nor metric names.
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
];
const GROUPING: [&str; 2] = ["by", "without"];
const MATCHING: [&str; 4] = ["on", "ignoring", "group_left", "group_right"];

/// The index of the parenthesis matching the one at `at`: forward from an
/// `Open`, backward from a `Close`.
fn matching(tokens: &[Token], at: usize, forward: bool) -> usize {
    let mut depth = 0i32;
    let mut i = at;
    loop {
        match tokens[i] {
            Token::Open => depth += if forward { 1 } else { -1 },
            Token::Close => depth += if forward { -1 } else { 1 },
            _ => {}
        }
        if depth == 0 {
            return i;
        }
        if forward {
            i += 1;
        } else {
            i -= 1;
        }
    }
}

pub(crate) fn references(expr: &str) -> References {
    let tokens = lex(expr);
    // Metric selectors, by token index.
    let mut metrics: Vec<(usize, String, Vec<String>)> = Vec::new();
    let mut lists: Vec<(String, usize, Vec<String>, usize)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(word)
                if (GROUPING.contains(&word.as_str()) || MATCHING.contains(&word.as_str()))
                    && tokens.get(i + 1) == Some(&Token::Open) =>
            {
                let close = matching(&tokens, i + 1, true);
                let labels = tokens[i + 2..close]
                    .iter()
                    .filter_map(|t| match t {
                        Token::Ident(l) => Some(l.clone()),
                        _ => None,
                    })
                    .collect();
                lists.push((word.clone(), i, labels, close));
                i = close + 1;
            }
            // A function or an aggregation (`sum (…)`, `sum by (…) (…)`).
            Token::Ident(_)
                if matches!(tokens.get(i + 1), Some(Token::Open))
                    || matches!(tokens.get(i + 1), Some(Token::Ident(w)) if GROUPING.contains(&w.as_str())) =>
            {
                i += 1
            }
            Token::Ident(word) if KEYWORDS.contains(&word.as_str()) => i += 1,
            Token::Ident(name) => {
                let labels = match tokens.get(i + 1) {
                    Some(Token::Matchers(labels)) => {
                        i += 1;
                        labels.clone()
                    }
                    _ => Vec::new(),
                };
                metrics.push((i, name.clone(), labels));
                i += 1;
            }
            Token::Matchers(_) => panic!("a selector without a metric name in {expr}"),
            _ => i += 1,
        }
    }
    let mut refs = References {
        metrics: metrics
            .iter()
            .map(|(_, n, l)| (n.clone(), l.clone()))
            .collect(),
        ..References::default()
    };
    for (word, at, labels, close) in lists {
        if MATCHING.contains(&word.as_str()) {
            refs.matchings.push(labels);
            continue;
        }
        // `sum by (l) (arg)` or `sum (arg) by (l)`.
        let scope = if tokens.get(close + 1) == Some(&Token::Open) {
            close + 1..=matching(&tokens, close + 1, true)
        } else if at > 0 && tokens[at - 1] == Token::Close {
            matching(&tokens, at - 1, false)..=at - 1
        } else {
            panic!("cannot tell what `{word}` groups in {expr}")
        };
        let grouped = metrics
            .iter()
            .filter(|(i, ..)| scope.contains(i))
            .map(|(_, n, _)| n.clone())
            .collect();
        refs.groupings.push((labels, grouped));
    }
    refs
}

/// Sample names in a text exposition, each with the label names it carries.
pub(crate) fn exported(exposition: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = into.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            // name="value" pairs; values may hold escaped quotes.
            let chars: Vec<char> = line[end + 1..].chars().collect();
            let mut i = 0;
            while i < chars.len() && chars[i] != '}' {
                let from = i;
                while i < chars.len() && chars[i] != '=' {
                    i += 1;
                }
                labels.insert(
                    chars[from..i]
                        .iter()
                        .collect::<String>()
                        .trim_matches([',', ' '])
                        .to_owned(),
                );
                i = skip_string(&chars, i + 1);
                while i < chars.len() && matches!(chars[i], ',' | ' ') {
                    i += 1;
                }
            }
        }
    }
}

#[test]
fn the_promql_reader_finds_metrics_groupings_and_matchers() {
    let refs = references(
        r#"histogram_quantile(0.95, sum by (chain, le) (rate(hyperkit_build_duration_seconds_bucket{chain=~"$chain", status!="x"}[5m]))) / on() group_left() sum(rate(b_total[1m])) by (job) or vector(1e-9)"#,
    );
    assert_eq!(
        refs.metrics,
        vec![
            (
                "hyperkit_build_duration_seconds_bucket".to_owned(),
                vec!["chain".to_owned(), "status".to_owned()]
            ),
            ("b_total".to_owned(), vec![]),
        ]
    );
    assert_eq!(
        refs.groupings,
        vec![
            (
                vec!["chain".to_owned(), "le".to_owned()],
                vec!["hyperkit_build_duration_seconds_bucket".to_owned()]
            ),
            (vec!["job".to_owned()], vec!["b_total".to_owned()]),
        ]
    );
    assert_eq!(refs.matchings, vec![Vec::<String>::new(), vec![]]);

    let mut exports = BTreeMap::new();
    exported(
        "# TYPE a counter\na_total{x=\"1\",y=\"q\\\"},z\"} 3\nb 1\n",
        &mut exports,
    );
    assert_eq!(
        exports,
        BTreeMap::from([
            (
                "a_total".to_owned(),
                BTreeSet::from(["x".to_owned(), "y".to_owned()])
            ),
            ("b".to_owned(), BTreeSet::new()),
        ])
    );
    let vars = BTreeMap::from([("chain".to_owned(), ".*".to_owned())]);
    assert_eq!(
        substitute("a{c=~\"$chain\",d=~\"${chain}\"}[$__rate_interval]", &vars),
        "a{c=~\".*\",d=~\".*\"}[1m]"
    );
    assert_eq!(
        parse_label_values("label_values(hyperkit_builds_total, chain)"),
        (Some("hyperkit_builds_total".to_owned()), "chain".to_owned())
    );
}
