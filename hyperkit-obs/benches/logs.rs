//! The log pipeline against the figures of the structured-logs issue.
//!
//! 1. Caller-side cost of one INFO event with five fields:
//!
//!    | variant | pipeline |
//!    |---|---|
//!    | `fmt_json_non_blocking` | baseline: `tracing_subscriber::fmt().json()` writing through `tracing_appender::non_blocking(io::sink())` |
//!    | `ecs_stdout` | [`hyperkit_obs::logs::layer`] writing JSON lines to `io::sink()` |
//!    | `ecs_stdout_and_store` | the same plus the local store (queue + writer thread + tantivy) |
//!
//!    Each variant is timed in chunks of `CHUNK` events; between chunks
//!    (untimed) the store's queue is flushed, so what is measured is the
//!    caller's cost with room in the queue, not the cost of dropping.
//!    Target: median < 2 µs for `ecs_stdout_and_store`.
//! 2. Sustained ingest into the store: `LogStore::insert` in batches, the
//!    whole queue + writer thread, and the same while searches run, each
//!    with the process's CPU time per event. Targets: ≥ 200,000 events/s,
//!    ≥ 100,000 while searching.
//! 3. Search over 1,000,000 and 3,000,000 stored events: p50/p95/max of
//!    each query of the bench set. Targets: p95 ≤ 20 ms at 1M, within
//!    1.5× of that at 3M. Also the bytes per event on disk.
//!
//! 4. The same queries through `hyperkit-obs logs search` at 1,000,000
//!    events, process start included (`logs_store/cli.rs`). Target: p95
//!    ≤ 50 ms.
//!
//! `cargo bench -p hyperkit-obs --bench logs [-- caller|ingest|search|cli]`.
//! Criterion measures part 1 in one group; then, when run by `cargo bench`,
//! the bench times every variant again in-process (interleaved rounds,
//! median ns per event) and prints the tables.

mod logs_store;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use hyperkit_obs::logs::store::{self, LogStoreGuard, WriterOptions};
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
    // name contains `ingest` (caller, ingest, search, cli).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") {
        let filter = args.iter().find(|a| !a.starts_with('-'));
        let wanted = |name: &str| filter.is_none_or(|f| name.contains(f.as_str()));
        if wanted("logs_caller") {
            caller_table(&variants);
        }
        drop(variants);
        if wanted("logs_ingest") {
            logs_store::ingest_table();
        }
        if wanted("logs_search") {
            logs_store::search_table();
        }
        if wanted("logs_cli") {
            logs_store::cli_table();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
