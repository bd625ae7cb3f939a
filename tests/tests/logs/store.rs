//! The local log store against its specification: search results equal a
//! brute-force scan of the same events (property test), a writer killed
//! mid-batch leaves every committed event readable, searching while the
//! writer writes works, and tracked calls arrive with their labels.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyperkit_obs::logs::store::{self, StoreEntry, WriterOptions};
use hyperkit_obs::logs::{FieldValue, LogRecord, LogStore, Query, SearchOptions, Term};
use proptest::prelude::*;
use serde_json::Value;
use test_support::TempDir;
use test_support::process::test_name;

// The brute-force matcher of the query semantics is the index tests' (it
// also knows the wildcards and ranges generated there).
use super::index::{brute_force, entry};

const T0: i64 = 1_795_757_293_123;
const VOCAB: &[&str] = &["out", "of", "gas", "build", "Failed", "eth", "retry", "ok"];
const LEVELS: &[&str] = &["error", "warn", "info", "debug"];
const CHAINS: &[&str] = &["ethereum", "solana", "eth"];
const MODELS: &[&str] = &["gpt", "claude-3", "gas"];

// ---------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------

fn sentence() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 1..6).prop_map(|w| w.join(" "))
}

fn event(seq: usize) -> impl Strategy<Value = LogRecord> {
    (
        0i64..3 * 86_400_000,
        prop::sample::select(LEVELS),
        sentence(),
        prop::option::of(prop::sample::select(CHAINS)),
        prop::option::of(prop::sample::select(MODELS)),
        prop::option::of(sentence()),
        0u64..3,
        any::<bool>(),
    )
        .prop_map(
            move |(offset, level, message, chain, model, error, attempt, cached)| {
                let mut r = LogRecord::new(T0 - offset, level, "app::build", message);
                r.fields.push(("seq", FieldValue::U64(seq as u64)));
                r.fields.push(("attempt", FieldValue::U64(attempt)));
                r.fields.push(("cached", FieldValue::Bool(cached)));
                if let Some(e) = error {
                    r.fields.push(("error.message", FieldValue::Str(e)));
                    r.fields.push(("status", FieldValue::Str("failure".into())));
                } else {
                    r.fields.push(("status", FieldValue::Str("success".into())));
                }
                if let Some(c) = chain {
                    r.span_fields.push(("chain", FieldValue::Str(c.into())));
                }
                if let Some(m) = model {
                    r.span_fields.push(("model", FieldValue::Str(m.into())));
                }
                r
            },
        )
}

fn events() -> impl Strategy<Value = Vec<LogRecord>> {
    (1usize..120).prop_flat_map(|n| (0..n).map(event).collect::<Vec<_>>())
}

fn term(field: Option<&str>, value: impl Into<String>) -> Query {
    Query::Term(Term {
        field: field.map(str::to_owned),
        value: value.into(),
    })
}

fn leaf() -> impl Strategy<Value = Query> {
    prop_oneof![
        prop::sample::select(VOCAB).prop_map(|w| term(None, w)),
        (prop::sample::select(VOCAB), prop::sample::select(VOCAB))
            .prop_map(|(a, b)| term(None, format!("{a} {b}"))),
        prop::sample::select(LEVELS).prop_map(|l| term(Some("level"), l.to_uppercase())),
        prop::sample::select(CHAINS).prop_map(|c| term(Some("chain"), c)),
        prop::sample::select(MODELS).prop_map(|m| term(Some("model"), m)),
        prop::sample::select(&["success", "failure"][..]).prop_map(|s| term(Some("status"), s)),
        sentence().prop_map(|s| term(Some("message"), s)),
        prop::sample::select(VOCAB).prop_map(|w| term(Some("error.message"), w)),
        (0u64..4).prop_map(|n| term(Some("attempt"), n.to_string())),
        any::<bool>().prop_map(|b| term(Some("cached"), b.to_string())),
        prop::sample::select(&["svc", "other"][..]).prop_map(|s| term(Some("service.name"), s)),
    ]
}

fn query() -> impl Strategy<Value = Query> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Query::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Query::Or),
            inner.prop_map(|q| Query::Not(Box::new(q))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn search_results_equal_a_brute_force_scan(
        records in events(),
        queries in prop::collection::vec(query(), 1..8),
        since in prop::option::of(0i64..3 * 86_400_000),
    ) {
        let dir = TempDir::new("logs-prop");
        let mut store = LogStore::open(&dir).unwrap();
        let entries: Vec<StoreEntry> = records.into_iter().map(entry).collect();
        store.insert(&entries).unwrap();
        let docs: Vec<(i64, Value)> = entries
            .iter()
            .map(|e| (e.timestamp_ms, serde_json::from_slice(&e.document).unwrap()))
            .collect();
        let since_ms = since.map(|s| T0 - s);
        for q in queries {
            // The generated AST goes through the text form users type.
            let parsed = Query::parse(&q.to_string()).unwrap();
            prop_assert_eq!(&parsed, &q);
            let options = SearchOptions { since_ms, limit: 10_000, ..SearchOptions::default() };
            let found = store.search(&parsed, &options).unwrap();
            let times: Vec<i64> = found.iter().map(|l| l.timestamp_ms).collect();
            prop_assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {:?}", times);
            let got: BTreeSet<u64> = found
                .iter()
                .map(|l| serde_json::from_str::<Value>(&l.document).unwrap()["seq"].as_u64().unwrap())
                .collect();
            let want: BTreeSet<u64> = docs
                .iter()
                .filter(|(ts, d)| since_ms.is_none_or(|s| *ts >= s) && brute_force(&q, d))
                .map(|(_, d)| d["seq"].as_u64().unwrap())
                .collect();
            prop_assert_eq!(got, want, "query {}", q);
        }
    }
}

// ---------------------------------------------------------------------------
// Crash safety.
// ---------------------------------------------------------------------------

const CRASH_DIR: &str = "HYPERKIT_LOGS_CRASH_CHILD_DIR";
const BATCH: usize = 500;

/// The child side of the crash test: writes batches until killed, reporting
/// each commit on stdout. Does nothing unless started by the parent.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let mut store = LogStore::open(PathBuf::from(dir)).unwrap();
    let mut out = std::io::stdout();
    for batch in 0.. {
        let entries: Vec<StoreEntry> = (0..BATCH)
            .map(|i| {
                let seq = batch * BATCH + i;
                let mut r = LogRecord::new(
                    T0 + seq as i64,
                    "info",
                    "crash",
                    format!("event {seq} of a batch"),
                );
                r.fields.push(("seq", FieldValue::U64(seq as u64)));
                entry(r)
            })
            .collect();
        store.insert(&entries).unwrap();
        writeln!(out, "committed {}", (batch + 1) * BATCH).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_writer_killed_mid_batch_leaves_every_committed_event() {
    let dir = TempDir::new("logs-crash");
    let child_test = test_name(module_path!(), "crash_child_writer");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &child_test, "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut committed = 0;
    while committed < 20 * BATCH {
        assert!(
            Instant::now() < deadline,
            "the child committed only {committed} events"
        );
        let line = lines.next().expect("the child exited early").unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush.
    child.wait().unwrap();

    let store = LogStore::open(&dir).unwrap();
    let count = store.count().unwrap() as usize;
    assert!(
        count >= committed,
        "{count} events kept, {committed} were committed"
    );
    assert_eq!(count % BATCH, 0, "a batch is stored whole or not at all");
    let newest = store
        .search(
            &Query::parse("message:\"of a batch\"").unwrap(),
            &SearchOptions {
                limit: 1,
                ..SearchOptions::default()
            },
        )
        .unwrap();
    let doc: Value = serde_json::from_str(&newest[0].document).unwrap();
    assert_eq!(
        doc["seq"].as_u64(),
        Some(count as u64 - 1),
        "no event is missing"
    );
}

// ---------------------------------------------------------------------------
// Concurrency and the layer end to end.
// ---------------------------------------------------------------------------

#[test]
fn searching_while_the_writer_writes_works() {
    let dir = TempDir::new("logs-concurrent");
    let (sink, guard) = store::start(&dir, WriterOptions::default()).unwrap();
    let reader = LogStore::open(&dir).unwrap();
    let query = Query::parse("level:info AND chain:ethereum").unwrap();
    const TOTAL: usize = 20_000;
    let writer = std::thread::spawn(move || {
        for i in 0..TOTAL {
            let mut r = LogRecord::new(T0 + i as i64, "info", "w", format!("event {i}"));
            r.span_fields
                .push(("chain", FieldValue::Str("ethereum".into())));
            while !sink.send(entry(r.clone())) {
                std::thread::yield_now();
            }
        }
    });
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut searches = 0;
    while seen < TOTAL {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {TOTAL} events became searchable"
        );
        // Counted first: a batch committed between the two reads only adds.
        let n = reader.count().unwrap() as usize;
        let found = reader
            .search(
                &query,
                &SearchOptions {
                    limit: 1,
                    ..SearchOptions::default()
                },
            )
            .expect("a search while writing succeeds");
        assert!(n >= seen, "the count went back from {seen} to {n}");
        assert!(n == 0 || !found.is_empty(), "{n} stored, none found");
        seen = n;
        searches += 1;
    }
    writer.join().unwrap();
    assert!(guard.flush(Duration::from_secs(10)));
    assert!(searches > 1);
    drop(guard);
}

#[derive(Debug)]
struct OutOfGas;

impl std::fmt::Display for OutOfGas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("out of gas")
    }
}

#[hyperkit_obs::track_build(chain)]
fn deploy(chain: &str) -> Result<(), OutOfGas> {
    let _ = chain;
    Err(OutOfGas)
}

#[test]
fn a_tracked_failure_is_stored_with_its_labels_and_found_by_query() {
    use tracing_subscriber::layer::SubscriberExt;
    let dir = TempDir::new("logs-layer");
    let (sink, guard) = store::start(&dir, WriterOptions::default()).unwrap();
    let subscriber = tracing_subscriber::registry().with(
        hyperkit_obs::logs::layer("agent")
            .without_writer()
            .with_store(sink),
    );
    tracing::subscriber::with_default(subscriber, || {
        let _ = deploy("ethereum");
        let _ = deploy("solana");
    });
    assert!(guard.flush(Duration::from_secs(10)));
    let store = LogStore::open(&dir).unwrap();
    let found = store
        .search(
            &Query::parse(r#"level:error AND chain:ethereum AND "out of gas""#).unwrap(),
            &SearchOptions::default(),
        )
        .unwrap();
    assert_eq!(found.len(), 1);
    let doc: Value = serde_json::from_str(&found[0].document).unwrap();
    assert_eq!(doc["error.message"], "out of gas");
    assert_eq!(doc["status"], "failure");
    assert_eq!(doc["log.origin.function"], "deploy");
    assert!(doc["event.duration"].as_u64().is_some());
    assert_eq!(doc["service.name"], "agent");
    drop(guard);
}
