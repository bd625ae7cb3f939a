//! The store's specification: search, cursors, retention, the writer's
//! memory, the background writer, the previous version's store, and what
//! a damaged or foreign directory does.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::logs::FieldValue;
use crate::logs::document::LogRecord;
use crate::logs::query::Query;
use crate::util::unix_ms as now_millis;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyperkit-logstore-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn record(ts: i64, level: &'static str, message: &str, chain: &str) -> LogRecord {
    let mut record = LogRecord::new(ts, level, "app::build", message);
    record
        .span_fields
        .push(("chain", FieldValue::Str(chain.to_owned())));
    record
}

fn entry(ts: i64, level: &'static str, message: &str, chain: &str) -> StoreEntry {
    StoreEntry::new(&record(ts, level, message, chain), "svc")
}

fn messages(store: &LogStore, query: &str, options: &SearchOptions) -> Vec<String> {
    store
        .search(&Query::parse(query).unwrap(), options)
        .unwrap()
        .into_iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(&l.document).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

const DAY: i64 = 86_400_000;
const T0: i64 = 1_795_757_293_123;

#[test]
fn search_finds_field_terms_and_phrases_newest_first_across_days() {
    let dir = temp_dir("search");
    let mut store = LogStore::open(&dir).unwrap();
    store
        .insert(&[
            entry(T0 - DAY, "error", "build failed: out of gas", "ethereum"),
            entry(T0, "info", "build succeeded", "ethereum"),
            entry(T0 + 1, "error", "build failed: out of gas", "solana"),
            entry(T0 + 2, "error", "gas out of reach", "ethereum"),
        ])
        .unwrap();
    let all = SearchOptions::default();
    assert_eq!(
        messages(
            &store,
            r#"level:error AND chain:ethereum AND "out of gas""#,
            &all
        ),
        ["build failed: out of gas"]
    );
    assert_eq!(
        messages(&store, "gas -chain:solana", &all),
        ["gas out of reach", "build failed: out of gas"]
    );
    assert_eq!(
        messages(&store, "NOT level:error", &all),
        ["build succeeded"]
    );
    assert_eq!(messages(&store, "service.name:svc", &all).len(), 4);
    let since = SearchOptions {
        since_ms: Some(T0),
        limit: 2,
        ..all.clone()
    };
    assert_eq!(
        messages(&store, "", &since),
        ["gas out of reach", "build failed: out of gas"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_search_after_a_cursor_returns_later_events_oldest_first() {
    let dir = temp_dir("tail");
    let mut store = LogStore::open(&dir).unwrap();
    store
        .insert(&[
            entry(T0 - DAY, "info", "one", "a"),
            entry(T0, "info", "two", "a"),
        ])
        .unwrap();
    let first = store
        .search(
            &Query::All,
            &SearchOptions {
                limit: 1,
                ..SearchOptions::default()
            },
        )
        .unwrap();
    store
        .insert(&[entry(T0 + 1, "info", "three", "a")])
        .unwrap();
    let after = SearchOptions {
        after: Some(first[0].cursor),
        ..SearchOptions::default()
    };
    assert_eq!(messages(&store, "", &after), ["three"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn retention_drops_whole_days_by_age_and_by_size() {
    let dir = temp_dir("retention");
    let mut store = LogStore::open(&dir).unwrap();
    for d in 0..5 {
        store
            .insert(&[entry(T0 - d * DAY, "info", "x", "a")])
            .unwrap();
    }
    let keep_all = Retention {
        max_age_days: 30,
        max_bytes: u64::MAX,
    };
    assert!(store.apply_retention(keep_all, T0).unwrap().is_empty());
    let three_days = Retention {
        max_age_days: 3,
        max_bytes: u64::MAX,
    };
    // Nov 24 still holds an event younger than three days.
    assert_eq!(store.apply_retention(three_days, T0).unwrap(), [20261123]);
    let tiny = Retention {
        max_age_days: 30,
        max_bytes: 1,
    };
    assert_eq!(
        store.apply_retention(tiny, T0).unwrap(),
        [20261124, 20261125, 20261126]
    );
    assert_eq!(store.count().unwrap(), 1, "today's events stay");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_writer_memory_stays_within_what_tantivy_accepts() {
    assert_eq!(writer::writer_memory(32 << 20), 32 << 20);
    assert_eq!(writer::writer_memory(1), 15_000_000, "tantivy's floor");
    assert!(writer::writer_memory(u64::MAX) < 4_000_000_000);
}

#[test]
fn the_writer_stores_queued_events_and_flush_waits_for_them() {
    let dir = temp_dir("writer");
    let (sink, guard) = start(&dir, WriterOptions::default()).unwrap();
    for i in 0..1000 {
        assert!(sink.send(entry(now_millis(), "info", &format!("event {i}"), "a")));
    }
    assert!(guard.flush(Duration::from_secs(10)));
    let status = guard.status();
    assert_eq!(
        (status.delivered, status.dropped, status.last_error),
        (1000, 0, None)
    );
    assert_eq!(LogStore::open(&dir).unwrap().count().unwrap(), 1000);
    drop(guard);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dropping_the_guard_returns_while_other_threads_keep_logging() {
    let dir = temp_dir("shutdown");
    let (sink, guard) = start(&dir, WriterOptions::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let logger = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            while !stop.load(Ordering::Relaxed) {
                sink.send(entry(now_millis(), "info", "busy", "a"));
            }
        }
    });
    let started = Instant::now();
    drop(guard);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    logger.join().unwrap();
    assert!(took < FLUSH_DEADLINE + Duration::from_secs(5), "{took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = temp_dir("full");
    let options = WriterOptions {
        queue_capacity: 1,
        batch_size: 1,
        ..WriterOptions::default()
    };
    let (sink, guard) = start(&dir, options).unwrap();
    let started = Instant::now();
    let sent = (0..10_000)
        .filter(|_| sink.send(entry(T0, "info", "x", "a")))
        .count();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(guard.flush(Duration::from_secs(10)));
    let status = guard.status();
    assert_eq!(status.dropped as usize, 10_000 - sent);
    assert!(status.dropped > 0);
    drop(guard);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `first`, then `op` and `other` numbered from 1, to the term limit.
fn terms(first: &str, op: &str, other: &str) -> String {
    let mut q = first.to_owned();
    for i in 1..Query::MAX_TERMS {
        q.push_str(&format!("{op}{other}{i}"));
    }
    q
}

/// `levels` times `open`, then `inner`, then as many `close`.
fn nest(levels: usize, open: &str, inner: &str, close: &str) -> String {
    format!("{}{inner}{}", open.repeat(levels), close.repeat(levels))
}

#[test]
fn the_largest_queries_the_parser_accepts_search_like_small_ones() {
    let dir = temp_dir("largest");
    let mut store = LogStore::open(&dir).unwrap();
    store
        .insert(&[
            entry(T0, "error", "build failed: out of gas", "ethereum"),
            entry(T0 + 1, "info", "build succeeded", "solana"),
        ])
        .unwrap();
    let depth = Query::MAX_DEPTH;
    let cases = [
        // Full-text terms: one MATCH.
        (terms("gas", " OR ", "w"), 1),
        (terms("build", " -", "w"), 2),
        // Levels and exact fields: SQL predicates.
        (terms("level:error", " OR ", "level:l"), 1),
        (terms("build", " -", "level:l"), 2),
        (terms("service.name:svc", " OR ", "service.name:s"), 2),
        (terms("service.name:svc", " AND NOT ", "service.name:s"), 2),
        // As deep as the parser allows, each way.
        (format!("{}level:error", "NOT ".repeat(depth)), 1),
        (format!("{}gas", "NOT ".repeat(depth - 1)), 1),
        (nest(depth - 1, "w OR (", "succeeded", ")"), 1),
        (nest(depth - 1, "level:info OR (", "gas", ")"), 2),
        (nest(depth - 1, "build -nope (", "build", ")"), 2),
        (
            nest(depth - 1, "service.name:svc (", "service.name:svc", ")"),
            2,
        ),
        // 21 levels of an And, a Not and an Or each, true at odd levels.
        (nest(depth / 3, "build -(nope OR (", "w OR nope", "))"), 2),
    ];
    let all = SearchOptions::default();
    for (query, found) in cases {
        let q = Query::parse(&query).unwrap();
        let result = store.search(&q, &all).map(|logs| logs.len());
        assert_eq!(
            result.as_ref().ok(),
            Some(&found),
            "{}…: {result:?}",
            &query[..60.min(query.len())]
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The previous version's layout (SQLite FTS5), as it wrote it.
fn write_legacy_store(dir: &std::path::Path, entries: &[StoreEntry]) {
    std::fs::create_dir_all(dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join(LEGACY_FILE)).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
    for e in entries {
        let day = crate::logs::time::day_of(e.timestamp_ms);
        let doc: serde_json::Value = serde_json::from_slice(&e.document).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS logs_{day} (
                 id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,
                 level TEXT NOT NULL, doc TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS logs_{day}_ts ON logs_{day} (ts);
             CREATE VIRTUAL TABLE IF NOT EXISTS fts_{day} USING fts5(
                 message, error, chain, model, task, operation, status, logger, attrs,
                 content = '', tokenize = 'unicode61 remove_diacritics 0');"
        ))
        .unwrap();
        conn.execute(
            &format!("INSERT INTO logs_{day} (ts, level, doc) VALUES (?, ?, ?)"),
            rusqlite::params![
                e.timestamp_ms,
                doc["log.level"].as_str().unwrap(),
                String::from_utf8_lossy(&e.document)
            ],
        )
        .unwrap();
    }
}

#[test]
fn a_store_of_the_previous_version_is_migrated_by_the_writer_and_searchable_as_before() {
    let dir = temp_dir("legacy");
    let mut old = Vec::new();
    for i in 0..300 {
        let mut r = record(
            T0 - (i % 3) * DAY + i,
            "error",
            &format!("old failure {i}"),
            "ethereum",
        );
        r.fields.push(("attempt", FieldValue::U64(i as u64 % 4)));
        old.push(StoreEntry::new(&r, "svc"));
    }
    write_legacy_store(&dir, &old);
    let (sink, guard) = start(&dir, WriterOptions::default()).unwrap();
    assert!(sink.send(entry(T0 + 1_000, "info", "new event", "solana")));
    let store = LogStore::open(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.count().unwrap() < 301 || store.has_legacy() {
        assert!(
            Instant::now() < deadline,
            "{} events",
            store.count().unwrap()
        );
        guard.flush(Duration::from_millis(100));
    }
    assert!(
        !dir.join(LEGACY_FILE).exists(),
        "the old database is removed"
    );
    let all = SearchOptions {
        limit: 1000,
        ..SearchOptions::default()
    };
    assert_eq!(
        messages(&store, "chain:ethereum AND failure", &all).len(),
        300
    );
    assert_eq!(messages(&store, "attempt:3 AND old", &all).len(), 75);
    assert_eq!(messages(&store, "attempt:[1 TO 2]", &all).len(), 150);
    assert_eq!(
        messages(&store, "", &SearchOptions::default())[0],
        "new event"
    );
    drop(guard);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_migration_stopped_between_days_resumes_without_losing_or_repeating_an_event() {
    let dir = temp_dir("legacy-resume");
    let old: Vec<StoreEntry> = (0..30)
        .map(|i| entry(T0 - (i % 3) * DAY + i, "info", &format!("event {i}"), "a"))
        .collect();
    write_legacy_store(&dir, &old);
    // What a migration stopped after its first day leaves: that day moved
    // (committed, its table dropped), the others still in the database.
    let first_day = crate::logs::time::day_of(T0 - 2 * DAY);
    let mut store = LogStore::open(&dir).unwrap();
    let moved: Vec<StoreEntry> = old
        .iter()
        .filter(|e| crate::logs::time::day_of(e.timestamp_ms) == first_day)
        .cloned()
        .collect();
    store.insert(&moved).unwrap();
    rusqlite::Connection::open(dir.join(LEGACY_FILE))
        .unwrap()
        .execute_batch(&format!(
            "DROP TABLE logs_{first_day}; DROP TABLE fts_{first_day};"
        ))
        .unwrap();
    assert_eq!(store.migrate_legacy().unwrap(), 20);
    assert_eq!(store.count().unwrap(), 30);
    let all = SearchOptions {
        limit: 100,
        ..SearchOptions::default()
    };
    let mut found = messages(&store, "event", &all);
    found.sort();
    found.dedup();
    assert_eq!(found.len(), 30);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_day_is_skipped_and_reported_and_the_other_days_still_answer() {
    let dir = temp_dir("damaged");
    let mut store = LogStore::open(&dir).unwrap();
    store
        .insert(&[
            entry(T0 - DAY, "info", "yesterday", "a"),
            entry(T0, "info", "today", "a"),
        ])
        .unwrap();
    drop(store);
    let yesterday = dir.join(crate::logs::time::day_of(T0 - DAY).to_string());
    let today = dir.join(crate::logs::time::day_of(T0).to_string());
    // Yesterday's metadata is garbage; today's segment files are cut short.
    std::fs::write(yesterday.join("meta.json"), b"{ not json").unwrap();
    for file in std::fs::read_dir(&today).unwrap().flatten() {
        let path = file.path();
        if path.extension().is_some_and(|e| e == "idx" || e == "store") {
            let len = std::fs::metadata(&path).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
    }
    let store = LogStore::open(&dir).unwrap();
    let found = store
        .search(&Query::All, &SearchOptions::default())
        .unwrap();
    assert!(found.len() <= 1, "{found:?}");
    let damaged: Vec<u32> = store.damaged_days().into_iter().map(|(d, _)| d).collect();
    assert!(
        damaged.contains(&crate::logs::time::day_of(T0 - DAY)),
        "{damaged:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_marked_with_another_format_is_refused_with_what_to_do() {
    let dir = temp_dir("format");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(DB_FILE), r#"{"format":"something-else"}"#).unwrap();
    let e = LogStore::open(&dir).unwrap_err();
    assert!(matches!(e, StoreError::Format { .. }), "{e}");
    assert!(
        e.to_string().contains("use the version that wrote it"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wildcards_ranges_and_comparisons_search_the_index() {
    let dir = temp_dir("wildcards");
    let mut store = LogStore::open(&dir).unwrap();
    let mut entries = Vec::new();
    for (i, chain) in ["ethereum", "eth2", "solana", "base"].iter().enumerate() {
        let mut r = record(T0 + i as i64, "warn", &format!("took {i}"), chain);
        r.fields
            .push(("event.duration", FieldValue::U64(500_000_000 * i as u64)));
        r.fields
            .push(("request_id", FieldValue::Str(format!("req-{i:03}"))));
        entries.push(StoreEntry::new(&r, "svc"));
    }
    store.insert(&entries).unwrap();
    let all = SearchOptions::default();
    let count = |q: &str| messages(&store, q, &all).len();
    assert_eq!(count("chain:eth*"), 2);
    assert_eq!(count("chain:?ase"), 1);
    assert_eq!(count("request_id:req-00?"), 4);
    assert_eq!(count("request_id:*2"), 1);
    assert_eq!(count("event.duration:>1000000000"), 1);
    assert_eq!(count("event.duration:>=1000000000"), 2);
    assert_eq!(count("event.duration:[500000000 TO 1000000000}"), 1);
    assert_eq!(count("request_id:[req-001 TO req-002]"), 2);
    assert_eq!(count("chain:{base TO solana}"), 2, "eth2, ethereum");
    assert_eq!(count("level:w*"), 4);
    assert_eq!(count("service.name:s?c"), 4);
    assert_eq!(count("event.duration:5*"), 1, "a number's text");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_index_reads_every_key_from_the_document_as_written() {
    let dir = temp_dir("from-document");
    let mut store = LogStore::open(&dir).unwrap();
    // A message that looks like a key, a service name with a comma, a key
    // and a value with escapes, a float, the previous version's 16-digit
    // trace id, and a line that is not JSON.
    let mut tricky = record(T0, "warn", "a, \"service.name\": \"no\", x", "ethereum");
    tricky.fields.push(("ratio", FieldValue::F64(0.5)));
    tricky
        .fields
        .push(("note", FieldValue::Str("tab\there \"quoted\"".into())));
    tricky.fields.push(("we\"ird", FieldValue::U64(7)));
    tricky.fields.push(("attempt", FieldValue::I64(3)));
    let legacy = br#"{"@timestamp":"2026-11-27T10:08:13.124Z","log.level":"error","message":"old trace","trace.id":"00F067AA0BA902B7","span.id":"00f067aa0ba902b7"}"#;
    store
        .insert(&[
            StoreEntry::new(&tricky, "build agent, eu"),
            StoreEntry {
                timestamp_ms: T0 + 1,
                document: legacy.to_vec().into(),
            },
            StoreEntry {
                timestamp_ms: T0 + 2,
                document: b"not json, \"log.level\":\"error\"".to_vec().into(),
            },
        ])
        .unwrap();
    let all = SearchOptions::default();
    let tricky_message = vec![tricky.message.clone()];
    for query in [
        "service.name:\"build agent, eu\"",
        "level:warn AND chain:ethereum",
        "ratio:>0.25 AND ratio:0.5",
        "attempt:3 AND attempt:[2 TO 4]",
        "note:tab*",
        "message:service",
    ] {
        assert_eq!(messages(&store, query, &all), tricky_message, "{query}");
    }
    assert!(messages(&store, "service.name:no", &all).is_empty());
    assert_eq!(
        messages(&store, "trace.id:000000000000000000f067aa0ba902b7", &all),
        ["old trace"]
    );
    assert_eq!(
        messages(&store, "span.id:00f067aa0ba902b7 AND level:error", &all),
        ["old trace"]
    );
    // The line that is not JSON is kept, found by time only.
    assert_eq!(store.count().unwrap(), 3);
    let lines = store
        .search(
            &Query::All,
            &SearchOptions {
                since_ms: Some(T0 + 2),
                ..SearchOptions::default()
            },
        )
        .unwrap();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].document.starts_with("not json"));
    std::fs::remove_dir_all(&dir).unwrap();
}
