//! Cost of one `/metrics` render as the registry grows to about 1,000 and
//! then about 10,000 series.
//!
//! The registry is filled through the public path: `#[track_model]` calls
//! with distinct model names (the label limit raised first), each model
//! adding its calls-by-status, latency histogram, token and acceptance
//! series. The series are counted in the exposition itself (every sample
//! line), so the table reports the true number, process metrics included.
//!
//! | variant | what one render is |
//! |---|---|
//! | `encode` | `registry().gather()` + `TextEncoder::encode` into a `Vec` |
//! | `handler` | `GET /metrics` through `hyperkit_obs::http::router()` (`tower::ServiceExt::oneshot`), body collected |
//!
//! Criterion measures both variants at both sizes in one group. When run by
//! `cargo bench`, the bench also times both variants in-process at each size
//! (interleaved rounds, median ns per render) and prints a table with the
//! handler/encoder ratio (target <= 1.1), the absolute time at 10k series
//! (target < 10 ms) and the growth from 1k to 10k.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::Criterion;
use hyperkit_obs::ModelOutput;
use hyperkit_obs::prometheus::{Encoder, TextEncoder};
use support::{criterion_median, median};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// A model answer with token counts and acceptance, so every model family
/// gets its series.
struct Completion;

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(900)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(250)
    }
    fn accepted(&self) -> Option<bool> {
        Some(true)
    }
}

#[hyperkit_obs::track_model(model, task = "bench")]
fn complete(model: &str) -> Result<Completion, String> {
    Ok(Completion)
}

/// The sizes measured, in order: a label and the series to reach.
const SIZES: [(&str, usize); 2] = [("1k", 1_000), ("10k", 10_000)];

/// Most models one fill may add (bounds the loop whatever a model adds).
const MAX_MODELS: usize = 100_000;

/// Sample lines (series) of a text exposition.
fn series_in(exposition: &[u8]) -> usize {
    exposition
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .count()
}

/// Adds models until the exposition holds at least `target` series; returns
/// the true count.
fn fill_to(target: usize, models: &mut usize) -> usize {
    let mut series = series_in(&encode());
    while series < target && *models < MAX_MODELS {
        complete(&format!("bench-model-{:06}", *models)).expect("tracked call");
        *models += 1;
        series = series_in(&encode());
    }
    series
}

/// (a) the encoder alone: gather, then encode into a fresh `Vec`.
fn encode() -> Vec<u8> {
    let families = hyperkit_obs::registry().gather();
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("the registry encodes");
    out
}

/// (b) the whole `/metrics` handler, body collected.
async fn handler(router: &Router) -> axum::body::Bytes {
    let request = Request::get("/metrics")
        .body(Body::empty())
        .expect("valid request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    assert_eq!(response.status(), StatusCode::OK);
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body is collected")
}

struct Fixture {
    rt: Runtime,
    router: Router,
}

impl Fixture {
    fn new() -> Self {
        hyperkit_obs::metrics::set_max_label_values(100_000);
        Fixture {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            router: hyperkit_obs::http::router(),
        }
    }

    fn handler(&self) -> axum::body::Bytes {
        self.rt.block_on(handler(&self.router))
    }

    /// Both variants render the same samples.
    fn check(&self) {
        let a = series_in(&encode());
        let b = series_in(&self.handler());
        assert!(
            a.abs_diff(b) <= 16,
            "encoder renders {a} series, handler {b}"
        );
    }
}

/// Mean ns per render of `f` over rounds of about `budget`.
fn per_render_ns(mut f: impl FnMut() -> usize, budget: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u32;
    while n < 10_000 && (n == 0 || start.elapsed() < budget) {
        black_box(f());
        n += 1;
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// Timed rounds per variant and size; the table reports the median round.
const ROUNDS: usize = 11;

/// In-process timing at the current size: median ns per render of the
/// encoder and of the handler, rounds interleaved.
fn time_both(fx: &Fixture) -> (f64, f64) {
    let budget = Duration::from_millis(60);
    // Warm-up: allocator and caches.
    per_render_ns(|| encode().len(), budget);
    per_render_ns(|| fx.handler().len(), budget);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(per_render_ns(|| encode().len(), budget));
        b.push(per_render_ns(|| fx.handler().len(), budget));
    }
    (median(a), median(b))
}

struct Row {
    size: &'static str,
    series: usize,
    bytes: usize,
    encode_ns: f64,
    handler_ns: f64,
}

fn print_table(rows: &[Row], started: SystemTime) {
    let ms = |ns: f64| ns / 1e6;
    let crit = |id: String| {
        criterion_median("metrics_render", &id, started)
            .map_or_else(|| "-".to_owned(), |ns| format!("{:.3}", ms(ns)))
    };
    println!();
    println!("metrics_render: median ms per render over {ROUNDS} interleaved rounds");
    println!(
        "{:<5} {:>7} {:>9} {:>11} {:>11} {:>9} {:>12} {:>12}",
        "size", "series", "bytes", "encode ms", "handler ms", "b/a", "crit enc ms", "crit hdl ms"
    );
    for r in rows {
        println!(
            "{:<5} {:>7} {:>9} {:>11.3} {:>11.3} {:>8.3}x {:>12} {:>12}",
            r.size,
            r.series,
            r.bytes,
            ms(r.encode_ns),
            ms(r.handler_ns),
            r.handler_ns / r.encode_ns,
            crit(format!("encode_{}", r.size)),
            crit(format!("handler_{}", r.size)),
        );
    }
    let [small, large] = rows else {
        return;
    };
    println!(
        "growth 1k -> 10k: series x{:.2}, encode x{:.2}, handler x{:.2}",
        large.series as f64 / small.series as f64,
        large.encode_ns / small.encode_ns,
        large.handler_ns / small.handler_ns,
    );
    println!();
    println!("targets:");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    for r in rows {
        let ratio = r.handler_ns / r.encode_ns;
        println!(
            "  {} handler / encode at {:<3}  {ratio:>6.3}x  (target <= 1.1x)",
            verdict(ratio <= 1.1),
            r.size
        );
    }
    println!(
        "  {} handler at {} series      {:>6.3} ms (target < 10 ms)",
        verdict(large.handler_ns < 10e6),
        large.series,
        ms(large.handler_ns)
    );
}

fn main() {
    let started = SystemTime::now();
    let fx = Fixture::new();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();

    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // only wants to know the benchmarks run. Profiling and listing want the
    // criterion part alone.
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let table = has("--bench") && !has("--profile-time") && !has("--list");

    let mut models = 0;
    let mut rows = Vec::new();
    for (size, target) in SIZES {
        let series = fill_to(target, &mut models);
        fx.check();
        let mut group = criterion.benchmark_group("metrics_render");
        group.bench_function(format!("encode_{size}"), |b| b.iter(encode));
        group.bench_function(format!("handler_{size}"), |b| b.iter(|| fx.handler()));
        group.finish();
        if table {
            let (encode_ns, handler_ns) = time_both(&fx);
            rows.push(Row {
                size,
                series,
                bytes: encode().len(),
                encode_ns,
                handler_ns,
            });
        }
    }
    criterion.final_summary();
    if table {
        eprintln!("({models} models tracked)");
        print_table(&rows, started);
    }
}
