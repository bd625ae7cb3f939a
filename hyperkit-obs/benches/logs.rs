//! The log pipeline against the figures of the structured-logs issue.
//!
//! 1. Caller-side cost of one INFO event with five fields:
//!
//!    | variant | pipeline |
//!    |---|---|
//!    | `fmt_json_non_blocking` | baseline: `tracing_subscriber::fmt().json()` writing through `tracing_appender::non_blocking(io::sink())` |
//!    | `ecs_stdout` | [`hyperkit_obs::logs::layer`] writing JSON lines to `io::sink()` |
//!    | `ecs_stdout_and_store` | the same plus the local store (queue + writer thread + SQLite) |
//!
//!    Each variant is timed in chunks of `CHUNK` events; between chunks
//!    (untimed) the store's queue is flushed, so what is measured is the
//!    caller's cost with room in the queue, not the cost of dropping.
//!    Target: median < 2 µs for `ecs_stdout_and_store`.
//! 2. Sustained ingest into the store: `LogStore::insert` in batches, and the
//!    whole queue + writer thread. Target: ≥ 100,000 events/s.
//! 3. Search over 1,000,000 stored events: p50/p95/max of each query of the
//!    bench set. Targets: p95 < 100 ms for a field term plus a text term,
//!    < 1 s for the worst query. Also the index size per million events.
//!
//! `cargo bench -p hyperkit-obs --bench logs [-- caller|ingest|search]`.
//! Criterion measures part 1 in one group; then, when run by `cargo bench`,
//! the bench times every variant again in-process (interleaved rounds,
//! median ns per event) and prints the tables.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use hyperkit_obs::logs::store::{self, LogStoreGuard, StoreEntry, WriterOptions};
use hyperkit_obs::logs::{FieldValue, LogRecord, LogStore, Query, SearchOptions, ecs_document};
use test_support::bench::median;
use tracing::Dispatch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// Events per timed chunk.
const CHUNK: u64 = 2_000;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyperkit-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The event every variant logs: INFO, five fields and a message.
#[inline(never)]
fn emit(i: u64) {
    tracing::info!(
        chain = "ethereum",
        model = "gpt-4o",
        task = "codegen",
        attempt = i,
        latency_ms = 12.5,
        "model call finished"
    );
}

struct Variant {
    name: &'static str,
    dispatch: Dispatch,
    store: Option<LogStoreGuard>,
    _appender: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Variant {
    fn baseline() -> Self {
        let (writer, guard) = tracing_appender::non_blocking(std::io::sink());
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(LevelFilter::INFO)
            .with_writer(writer)
            .finish();
        Variant {
            name: "fmt_json_non_blocking",
            dispatch: Dispatch::new(subscriber),
            store: None,
            _appender: Some(guard),
        }
    }

    fn ecs(store_dir: Option<&Path>) -> Self {
        let layer = hyperkit_obs::logs::layer("bench").with_writer(std::io::sink);
        let (layer, store) = match store_dir {
            Some(dir) => {
                let (sink, guard) = store::start(dir, WriterOptions::default()).unwrap();
                (layer.with_store(sink), Some(guard))
            }
            None => (layer, None),
        };
        let subscriber = tracing_subscriber::registry()
            .with(LevelFilter::INFO)
            .with(layer);
        Variant {
            name: if store.is_some() {
                "ecs_stdout_and_store"
            } else {
                "ecs_stdout"
            },
            dispatch: Dispatch::new(subscriber),
            store,
            _appender: None,
        }
    }

    /// Time to emit `n` events, in chunks, flushing the store untimed
    /// between chunks.
    fn time(&self, n: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = n;
        while left > 0 {
            let chunk = left.min(CHUNK);
            total += tracing::dispatcher::with_default(&self.dispatch, || {
                let start = Instant::now();
                for i in 0..chunk {
                    emit(black_box(i));
                }
                start.elapsed()
            });
            if let Some(store) = &self.store {
                assert!(store.flush(Duration::from_secs(60)), "the store keeps up");
            }
            left -= chunk;
        }
        total
    }
}

fn caller_cost(c: &mut Criterion, variants: &[Variant]) {
    let mut group = c.benchmark_group("logs_caller");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for v in variants {
        group.bench_function(v.name, |b| b.iter_custom(|iters| v.time(iters)));
    }
    group.finish();
}

fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

fn caller_table(variants: &[Variant]) {
    const ROUNDS: usize = 9;
    const EVENTS: u64 = 40_000;
    for v in variants {
        v.time(EVENTS / 4);
    }
    let mut samples = vec![Vec::new(); variants.len()];
    for _ in 0..ROUNDS {
        for (v, s) in variants.iter().zip(&mut samples) {
            s.push(v.time(EVENTS).as_nanos() as f64 / EVENTS as f64);
        }
    }
    let med: Vec<f64> = samples.into_iter().map(median).collect();
    println!(
        "\nlogs_caller: median ns per INFO event with five fields, {ROUNDS} interleaved rounds x {EVENTS} events"
    );
    println!(
        "{:<24} {:>10} {:>14} {:>8}",
        "variant", "ns/event", "vs baseline", "target"
    );
    for (v, ns) in variants.iter().zip(&med) {
        let target = match v.name {
            "ecs_stdout_and_store" => {
                if *ns < 2000.0 {
                    "PASS"
                } else {
                    "MISS"
                }
            }
            _ => "",
        };
        println!(
            "{:<24} {:>10.0} {:>13.2}x {:>8}",
            v.name,
            ns,
            ns / med[0],
            target
        );
    }
    for v in variants {
        if let Some(store) = &v.store {
            let s = store.status();
            println!(
                "  store: {} events written, {} dropped",
                s.delivered, s.dropped
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The store: ingest and search.
// ---------------------------------------------------------------------------

const CHAINS: [&str; 5] = ["ethereum", "solana", "polygon", "arbitrum", "base"];
const MODELS: [&str; 4] = ["gpt-4o", "claude-3", "llama-3", "mistral"];
const TASKS: [&str; 3] = ["codegen", "review", "summarize"];

/// A well-spread pseudo-random number for event `i`.
fn mix(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11
}

/// A realistic event: the level mix of a service (70 % info), messages with
/// varying numbers, labels of the tracking macros, a unique request id.
fn event(i: u64, ts: i64) -> StoreEntry {
    let x = mix(i);
    let (level, message, status) = match x % 100 {
        0..5 => (
            "error",
            format!("build failed: out of gas at block {}", x % 1_000_000),
            "failure",
        ),
        5..15 => (
            "warn",
            format!("request timeout after {} retries", x % 7),
            "failure",
        ),
        15..30 => (
            "debug",
            format!("cache miss for key {:x}", x % 65_536),
            "success",
        ),
        _ => (
            "info",
            format!("model call finished in {} ms", x % 5_000),
            "success",
        ),
    };
    let mut r = LogRecord::new(ts, level, "agent::pipeline", message);
    r.fields = vec![
        ("status", FieldValue::Str(status.into())),
        ("event.duration", FieldValue::U64(x % 10_000_000)),
        ("attempt", FieldValue::U64(x % 5)),
        ("request_id", FieldValue::Str(format!("req-{i:08x}"))),
    ];
    if level == "error" {
        r.fields
            .push(("error.message", FieldValue::Str("out of gas".into())));
    }
    r.span_fields = vec![
        (
            "chain",
            FieldValue::Str(CHAINS[(x / 100 % 5) as usize].into()),
        ),
        (
            "model",
            FieldValue::Str(MODELS[(x / 500 % 4) as usize].into()),
        ),
        (
            "task",
            FieldValue::Str(TASKS[(x / 2000 % 3) as usize].into()),
        ),
    ];
    r.span_name = Some("complete");
    r.trace_id = hyperkit_obs::trace::TraceId::from_u128(u128::from(x % 4096 + 1));
    r.span_id = hyperkit_obs::trace::SpanId::from_u64(x % 4096 + 2);
    let mut document = Vec::with_capacity(512);
    ecs_document(&r, "bench", &mut document);
    StoreEntry {
        record: r,
        document,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ingest_table() {
    const N: u64 = 200_000;
    const BATCH: usize = 4_096;
    let start_ts = now_ms() - 3_600_000;
    let events: Vec<StoreEntry> = (0..N).map(|i| event(i, start_ts + i as i64 / 10)).collect();

    let dir = temp_dir("ingest");
    let mut store = LogStore::open(&dir).unwrap();
    let start = Instant::now();
    for chunk in events.chunks(BATCH) {
        store.insert(chunk).unwrap();
    }
    let direct = N as f64 / start.elapsed().as_secs_f64();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = temp_dir("ingest-writer");
    let (sink, guard) = store::start(&dir, WriterOptions::default()).unwrap();
    let start = Instant::now();
    let mut retries = 0u64;
    for e in events {
        let mut e = Some(e);
        while let Some(entry) = e.take() {
            // The bench wants every event stored: wait when the queue is
            // full instead of letting it drop (which `send` does and counts).
            if guard.status().queued >= 60_000 {
                retries += 1;
                // Sleep rather than spin: the writer needs the core.
                std::thread::sleep(Duration::from_micros(200));
                e = Some(entry);
            } else {
                sink.send(entry);
            }
        }
    }
    assert!(guard.flush(Duration::from_secs(120)));
    let piped = N as f64 / start.elapsed().as_secs_f64();
    let dropped = guard.status().dropped;
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nlogs_ingest: {N} events into the store (target >= 100,000 events/s)");
    println!("{:<44} {:>12} {:>8}", "path", "events/s", "target");
    for (name, rate) in [
        ("LogStore::insert, 4096 per transaction", direct),
        ("queue + writer thread (send, then flush)", piped),
    ] {
        println!(
            "{name:<44} {rate:>12.0} {:>8}",
            if rate >= 100_000.0 { "PASS" } else { "MISS" }
        );
    }
    println!("  writer path: {dropped} dropped, {retries} waits for room");
}

fn search_table() {
    const N: u64 = 1_000_000;
    let dir = temp_dir("search");
    let mut store = LogStore::open(&dir).unwrap();
    // Two days of events, newest now.
    let now = now_ms();
    let span_ms = 2 * 86_400_000i64;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..N {
        batch.push(event(i, now - span_ms + (i as i64 * span_ms / N as i64)));
        if batch.len() == 10_000 {
            store.insert(&batch).unwrap();
            batch.clear();
        }
    }
    let build = start.elapsed();
    let count = store.count().unwrap();
    let used = store.size_bytes().unwrap();
    let files: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();

    let rare_id = format!("req-{:08x}", N / 3);
    let rare_block = (N / 2..N)
        .map(mix)
        .find(|x| x % 100 < 5)
        .map_or(0, |x| x % 1_000_000);
    let queries: Vec<(&str, String)> = vec![
        ("field + text", r#"level:error AND "out of gas""#.into()),
        ("field + text", "chain:ethereum AND timeout".into()),
        (
            "field + field + text",
            "level:error AND chain:solana AND gas".into(),
        ),
        ("phrase", r#""out of gas""#.into()),
        ("field", "level:warn".into()),
        (
            "field AND NOT field",
            "model:claude AND NOT status:success".into(),
        ),
        ("OR of texts", "gas OR timeout OR miss".into()),
        ("NOT field", "NOT level:info".into()),
        ("rare number", format!("block AND {rare_block}")),
        ("exact non-text field", "attempt:3 AND chain:base".into()),
        ("exact, one match", format!("request_id:{rare_id}")),
        ("exact, no match", "request_id:req-ffffffff".into()),
        ("exact, every event", "service.name:bench".into()),
        ("exact, no match (scan)", "service.name:other".into()),
    ];
    const RUNS: usize = 20;
    println!(
        "\nlogs_search: {count} events over 2 days (built in {:.1} s, {:.0} events/s); limit 100, newest first, {RUNS} runs each",
        build.as_secs_f64(),
        count as f64 / build.as_secs_f64()
    );
    println!(
        "index size: {:.1} MiB in use ({:.1} MiB of files) = {:.0} MiB per million events",
        used as f64 / 1048576.0,
        files as f64 / 1048576.0,
        used as f64 / 1048576.0 / (count as f64 / 1e6)
    );
    println!(
        "{:<26} {:<44} {:>6} {:>9} {:>9} {:>9}",
        "kind", "query", "hits", "p50 ms", "p95 ms", "max ms"
    );
    let mut worst: f64 = 0.0;
    let mut field_text_p95: f64 = 0.0;
    for (kind, q) in &queries {
        let query = Query::parse(q).unwrap();
        let options = SearchOptions::default();
        let mut times = Vec::with_capacity(RUNS);
        let mut hits = 0;
        for _ in 0..RUNS {
            let start = Instant::now();
            hits = black_box(store.search(&query, &options).unwrap()).len();
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let p95 = percentile(&times, 0.95);
        worst = worst.max(p95);
        if kind.starts_with("field + text") {
            field_text_p95 = field_text_p95.max(p95);
        }
        println!(
            "{kind:<26} {q:<44} {hits:>6} {:>9.2} {p95:>9.2} {:>9.2}",
            percentile(&times, 0.5),
            percentile(&times, 1.0)
        );
    }
    println!(
        "field term + text term: worst p95 {field_text_p95:.2} ms (target < 100 ms): {}",
        if field_text_p95 < 100.0 {
            "PASS"
        } else {
            "MISS"
        }
    );
    println!(
        "worst query of the set: p95 {worst:.2} ms (target < 1000 ms): {}",
        if worst < 1000.0 { "PASS" } else { "MISS" }
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let dir = temp_dir("caller");
    let variants = [
        Variant::baseline(),
        Variant::ecs(None),
        Variant::ecs(Some(&dir)),
    ];
    caller_cost(&mut criterion, &variants);
    criterion.final_summary();
    // `cargo test --benches` runs this binary without `--bench`: criterion
    // then only checks that each benchmark runs; skip the long tables.
    // `cargo bench --bench logs -- ingest` prints only the tables whose
    // name contains `ingest` (caller, ingest, search).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") {
        let filter = args.iter().find(|a| !a.starts_with('-'));
        let wanted = |name: &str| filter.is_none_or(|f| name.contains(f.as_str()));
        if wanted("logs_caller") {
            caller_table(&variants);
        }
        drop(variants);
        if wanted("logs_ingest") {
            ingest_table();
        }
        if wanted("logs_search") {
            search_table();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
