//! The store's specification: search, cursors, retention, the page cache
//! and the background writer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::logs::document::LogRecord;
use crate::logs::query::Query;
use crate::logs::{FieldValue, ecs_document};
use crate::util::unix_ms as now_millis;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyperkit-logstore-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn entry(ts: i64, level: &'static str, message: &str, chain: &str) -> StoreEntry {
    let mut record = LogRecord::new(ts, level, "app::build", message);
    record
        .span_fields
        .push(("chain", FieldValue::Str(chain.to_owned())));
    let mut document = Vec::new();
    ecs_document(&record, "svc", &mut document);
    StoreEntry { record, document }
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
fn the_page_cache_is_what_it_is_set_to() {
    let dir = temp_dir("cache");
    let store = LogStore::open(&dir).unwrap();
    let cache = |store: &LogStore| -> i64 {
        store
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(cache(&store), -32768, "32 MiB when opened");
    store.set_cache_bytes(4 << 20).unwrap();
    assert_eq!(cache(&store), -4096);
    store.set_cache_bytes(1).unwrap();
    assert_eq!(cache(&store), -64, "never below 64 KiB");
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
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
