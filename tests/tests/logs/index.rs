//! The log store's index against its specification, for what the tantivy
//! store added: wildcards, ranges and comparisons (each against a
//! brute-force matcher of the same events, as property tests), time ranges
//! with limits (newest first, never missing a newer match), the `tail`
//! cursor, and stores larger than one segment.

use std::collections::BTreeSet;
use std::ops::Bound;

use hyperkit_obs::logs::store::StoreEntry;
use hyperkit_obs::logs::{
    FieldKind, FieldValue, LogRecord, LogStore, Query, Range, SearchOptions, TEXT_FIELDS, Term,
    wildcard_matches, words,
};
use proptest::prelude::*;
use serde_json::Value;
use test_support::TempDir;

pub(super) fn entry(record: LogRecord) -> StoreEntry {
    StoreEntry::new(&record, "svc")
}

const T0: i64 = 1_795_757_293_123;
const DAY: i64 = 86_400_000;
const VOCAB: &[&str] = &[
    "out", "of", "gas", "build", "Failed", "eth", "ethereum", "retry", "ok",
];
const LEVELS: &[&str] = &["error", "warn", "info", "debug"];
const CHAINS: &[&str] = &["ethereum", "solana", "eth", "Eth-2"];
const IDS: &[&str] = &["req-001", "req-002", "req-010", "job-7", "REQ-001"];

// ---------------------------------------------------------------------------
// The brute-force matcher: the query semantics, written out directly
// against the JSON documents.
// ---------------------------------------------------------------------------

fn text_of(doc: &Value, key: &str) -> Option<String> {
    match doc.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text_keys(term_key: Option<&str>) -> Vec<&str> {
    match term_key {
        Some(key) => vec![key],
        None => TEXT_FIELDS.iter().map(|(_, key)| *key).collect(),
    }
}

fn contains_phrase(haystack: &str, phrase: &[String]) -> bool {
    let hay: Vec<String> = words(haystack).collect();
    !phrase.is_empty() && hay.windows(phrase.len()).any(|w| w == phrase)
}

fn term_matches(term: &Term, doc: &Value) -> bool {
    match term.kind() {
        FieldKind::Level => text_of(doc, "log.level") == Some(term.value.to_lowercase()),
        FieldKind::Exact => text_of(doc, term.document_key().unwrap()) == Some(term.value.clone()),
        FieldKind::Text(_) => {
            let phrase: Vec<String> = words(&term.value).collect();
            text_keys(term.document_key())
                .iter()
                .any(|k| text_of(doc, k).is_some_and(|t| contains_phrase(&t, &phrase)))
        }
    }
}

fn wildcard_term_matches(term: &Term, doc: &Value) -> bool {
    match term.kind() {
        FieldKind::Level => text_of(doc, "log.level")
            .is_some_and(|l| wildcard_matches(&term.value.to_lowercase(), &l)),
        FieldKind::Exact => text_of(doc, term.document_key().unwrap())
            .is_some_and(|v| wildcard_matches(&term.value, &v)),
        FieldKind::Text(_) => {
            let pattern = term.value.to_lowercase();
            text_keys(term.document_key()).iter().any(|k| {
                text_of(doc, k).is_some_and(|t| words(&t).any(|w| wildcard_matches(&pattern, &w)))
            })
        }
    }
}

fn within<T: PartialOrd>(v: &T, lower: Bound<&T>, upper: Bound<&T>) -> bool {
    let above = match lower {
        Bound::Included(l) => v >= l,
        Bound::Excluded(l) => v > l,
        Bound::Unbounded => true,
    };
    let below = match upper {
        Bound::Included(u) => v <= u,
        Bound::Excluded(u) => v < u,
        Bound::Unbounded => true,
    };
    above && below
}

fn lower(b: &Bound<String>) -> Bound<String> {
    match b {
        Bound::Included(s) => Bound::Included(s.to_lowercase()),
        Bound::Excluded(s) => Bound::Excluded(s.to_lowercase()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn range_matches(r: &Range, doc: &Value) -> bool {
    let key = r.document_key();
    let value = doc.get(key);
    if matches!((&r.lower, &r.upper), (Bound::Unbounded, Bound::Unbounded)) {
        // `[* TO *]`: the field has a value (a word, for a text field).
        return match r.kind() {
            FieldKind::Text(_) => text_of(doc, key).is_some_and(|t| words(&t).next().is_some()),
            _ => text_of(doc, key).is_some(),
        };
    }
    if let Some((lo, hi)) = r.numeric() {
        return match value {
            Some(Value::Number(n)) if r.kind() != FieldKind::Level => {
                within(&n.as_f64().unwrap(), lo.as_ref(), hi.as_ref())
            }
            _ => false,
        };
    }
    match r.kind() {
        FieldKind::Level => {
            let (lo, hi) = (lower(&r.lower), lower(&r.upper));
            text_of(doc, key).is_some_and(|l| within(&l, lo.as_ref(), hi.as_ref()))
        }
        FieldKind::Text(_) => {
            let (lo, hi) = (lower(&r.lower), lower(&r.upper));
            text_of(doc, key)
                .is_some_and(|t| words(&t).any(|w| within(&w, lo.as_ref(), hi.as_ref())))
        }
        FieldKind::Exact => match value {
            Some(Value::String(_) | Value::Bool(_)) => {
                text_of(doc, key).is_some_and(|v| within(&v, r.lower.as_ref(), r.upper.as_ref()))
            }
            _ => false,
        },
    }
}

pub(super) fn brute_force(query: &Query, doc: &Value) -> bool {
    match query {
        Query::All => true,
        Query::Term(t) => term_matches(t, doc),
        Query::Wildcard(t) => wildcard_term_matches(t, doc),
        Query::Range(r) => range_matches(r, doc),
        Query::And(parts) => parts.iter().all(|p| brute_force(p, doc)),
        Query::Or(parts) => parts.iter().any(|p| brute_force(p, doc)),
        Query::Not(q) => !brute_force(q, doc),
    }
}

// ---------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------

fn sentence() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 1..6).prop_map(|w| w.join(" "))
}

fn event(seq: usize) -> impl Strategy<Value = LogRecord> {
    (
        0i64..3 * DAY,
        prop::sample::select(LEVELS),
        sentence(),
        prop::option::of(prop::sample::select(CHAINS)),
        prop::sample::select(IDS),
        -3i64..12,
        prop::option::of(prop_oneof![Just(0.5f64), Just(2.0), Just(-1.5), Just(7.25)]),
        any::<bool>(),
    )
        .prop_map(
            move |(offset, level, message, chain, id, attempt, ratio, cached)| {
                let mut r = LogRecord::new(T0 - offset, level, "app::build", message);
                r.fields.push(("seq", FieldValue::U64(seq as u64)));
                r.fields.push(("attempt", FieldValue::I64(attempt)));
                r.fields.push(("request_id", FieldValue::Str(id.into())));
                r.fields.push(("cached", FieldValue::Bool(cached)));
                if let Some(ratio) = ratio {
                    r.fields.push(("ratio", FieldValue::F64(ratio)));
                }
                if let Some(c) = chain {
                    r.span_fields.push(("chain", FieldValue::Str(c.into())));
                }
                r
            },
        )
}

fn events() -> impl Strategy<Value = Vec<LogRecord>> {
    (1usize..150).prop_flat_map(|n| (0..n).map(event).collect::<Vec<_>>())
}

fn field() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(
            &[
                "chain",
                "message",
                "level",
                "request_id",
                "attempt",
                "ratio",
                "cached",
                "ecs.version",
                "service.name",
            ][..],
        )
        .prop_map(str::to_owned),
    )
}

fn pattern() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("*".to_owned()),
        Just("?".to_owned()),
        prop::sample::select(
            &[
                "e", "eth", "req-0", "0", "1", "1?", "ga", "-", "E", "8.", "tr"
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 1..4)
        .prop_map(|p| p.concat())
        .prop_filter("a wildcard", |p| p.contains(['*', '?']))
}

fn bound() -> impl Strategy<Value = Bound<String>> {
    let value = prop_oneof![
        (-4i64..14).prop_map(|n| n.to_string()),
        Just("1.5".to_owned()),
        prop::sample::select(&["a", "eth", "f", "req-002", "solana", "warn", "z", "8"][..])
            .prop_map(str::to_owned),
    ];
    prop_oneof![
        1 => Just(Bound::Unbounded),
        3 => value.clone().prop_map(Bound::Included),
        3 => value.prop_map(Bound::Excluded),
    ]
}

fn leaf() -> impl Strategy<Value = Query> {
    prop_oneof![
        (field(), pattern()).prop_map(|(field, value)| Query::Wildcard(Term { field, value })),
        (field(), bound(), bound()).prop_map(|(field, lower, upper)| {
            Query::Range(Range {
                field: field.unwrap_or_else(|| "attempt".to_owned()),
                lower,
                upper,
            })
        }),
        prop::sample::select(VOCAB).prop_map(|w| Query::Term(Term {
            field: None,
            value: w.to_owned()
        })),
        (-3i64..12).prop_map(|n| Query::Term(Term {
            field: Some("attempt".to_owned()),
            value: n.to_string()
        })),
    ]
}

fn query() -> impl Strategy<Value = Query> {
    leaf().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Query::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Query::Or),
            inner.prop_map(|q| Query::Not(Box::new(q))),
        ]
    })
}

fn seqs(found: &[hyperkit_obs::logs::StoredLog]) -> BTreeSet<u64> {
    found
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(&l.document).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Inserted in several commits, so that most days hold several
    /// segments.
    #[test]
    fn wildcards_and_ranges_find_what_a_brute_force_scan_finds(
        records in events(),
        queries in prop::collection::vec(query(), 1..8),
        commits in 1usize..5,
    ) {
        let dir = TempDir::new("logs-index-prop");
        let mut store = LogStore::open(&dir).unwrap();
        let entries: Vec<StoreEntry> = records.into_iter().map(entry).collect();
        for chunk in entries.chunks(entries.len().div_ceil(commits)) {
            store.insert(chunk).unwrap();
        }
        let docs: Vec<Value> = entries
            .iter()
            .map(|e| serde_json::from_slice(&e.document).unwrap())
            .collect();
        for q in queries {
            let parsed = Query::parse(&q.to_string()).unwrap();
            prop_assert_eq!(&parsed, &q, "printed as {}", q);
            let options = SearchOptions { limit: 10_000, ..SearchOptions::default() };
            let found = store.search(&parsed, &options).unwrap();
            let want: BTreeSet<u64> = docs
                .iter()
                .filter(|d| brute_force(&q, d))
                .map(|d| d["seq"].as_u64().unwrap())
                .collect();
            prop_assert_eq!(seqs(&found), want, "query {}", q);
        }
    }

    /// A limit and a time range return the newest matches in the range,
    /// newest first: never an older match in place of a newer one.
    #[test]
    fn a_limited_search_in_a_time_range_returns_the_newest_matches(
        records in events(),
        q in query(),
        since in 0i64..3 * DAY,
        width in 1i64..3 * DAY,
        limit in 1usize..20,
        commits in 1usize..6,
    ) {
        let dir = TempDir::new("logs-index-limit");
        let mut store = LogStore::open(&dir).unwrap();
        let entries: Vec<StoreEntry> = records.into_iter().map(entry).collect();
        for chunk in entries.chunks(entries.len().div_ceil(commits)) {
            store.insert(chunk).unwrap();
        }
        let (since_ms, until_ms) = (T0 - since, T0 - since + width);
        let options = SearchOptions {
            since_ms: Some(since_ms),
            until_ms: Some(until_ms),
            limit,
            ..SearchOptions::default()
        };
        let found = store.search(&q, &options).unwrap();
        let mut want: Vec<(i64, u64)> = entries
            .iter()
            .map(|e| serde_json::from_slice::<Value>(&e.document).unwrap())
            .zip(&entries)
            .filter(|(d, e)| {
                let ts = e.timestamp_ms;
                ts >= since_ms && ts < until_ms && brute_force(&q, d)
            })
            .map(|(d, e)| (e.timestamp_ms, d["seq"].as_u64().unwrap()))
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        let times: Vec<i64> = found.iter().map(|l| l.timestamp_ms).collect();
        let wanted: Vec<i64> = want.iter().take(limit).map(|w| w.0).collect();
        // Equal timestamps may come in either order; the times may not.
        prop_assert_eq!(times, wanted, "query {}", q);
    }
}

#[test]
fn tail_returns_what_was_stored_after_its_cursor_in_the_order_it_was_stored() {
    let dir = TempDir::new("logs-index-tail");
    let mut store = LogStore::open(&dir).unwrap();
    let at = |ts: i64, m: &str| entry(LogRecord::new(ts, "info", "t", m));
    store
        .insert(&[at(T0, "first"), at(T0 - DAY, "older day")])
        .unwrap();
    let now = store.cursor().unwrap();
    // Stored later, though older: `tail` prints what arrives, as it arrives.
    store
        .insert(&[at(T0 - 2 * DAY, "late"), at(T0 + 5, "next")])
        .unwrap();
    store.insert(&[at(T0 + 6, "last")]).unwrap();
    let after = SearchOptions {
        after: Some(now),
        limit: 2,
        ..SearchOptions::default()
    };
    let found = store.search(&Query::All, &after).unwrap();
    let messages: Vec<String> = found
        .iter()
        .map(|l| serde_json::from_str::<Value>(&l.document).unwrap()["message"].to_string())
        .collect();
    assert_eq!(messages, ["\"late\"", "\"next\""]);
}

#[test]
fn a_search_reads_the_commits_of_another_open_store_as_they_land() {
    let dir = TempDir::new("logs-index-reload");
    let mut writer = LogStore::open(&dir).unwrap();
    let reader = LogStore::open(&dir).unwrap();
    let q = Query::parse("chain:eth*").unwrap();
    for i in 0..5u64 {
        let mut r = LogRecord::new(T0 + i as i64, "info", "t", format!("event {i}"));
        r.span_fields
            .push(("chain", FieldValue::Str("ethereum".into())));
        writer.insert(&[entry(r)]).unwrap();
        let found = reader.search(&q, &SearchOptions::default()).unwrap();
        assert_eq!(found.len() as u64, i + 1);
    }
    assert_eq!(reader.count().unwrap(), 5);
}
