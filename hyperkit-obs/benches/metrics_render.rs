//! Cost of one `/metrics` render as the registry grows to about 1,000,
//! 10,000 and 100,000 series.
//!
//! The registry is filled through the public path: `#[track_model]` calls
//! with distinct model names (the label limit raised first), each model
//! adding its calls-by-status, latency histogram, token and acceptance
//! series. The series are counted in the exposition itself (every sample
//! line), so the table reports the true number, process metrics included.
//!
//! | variant | what one render is |
//! |---|---|
//! | `encode` | `registry().gather()` + `TextEncoder::encode` into a `Vec`: the `prometheus` crate's way, on the same families |
//! | `render` | `hyperkit_obs::metrics::render`: our families written from their cells, the rest through the encoder |
//! | `handler` | `GET /metrics` through `hyperkit_obs::http::router()` (`tower::ServiceExt::oneshot`), body collected |
//!
//! Criterion measures the variants at every size in one group. When run by
//! `cargo bench`, the bench also times them in-process at each size
//! (interleaved rounds, median ns per render) and prints a table with the
//! targets: render at most 0.5x the encoder, the handler under 10 ms at
//! 100,000 series, and the cost linear in series (10k -> 100k grows at most
//! 1.2x as fast as the series).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::Criterion;
use hyperkit_obs::ModelOutput;
use hyperkit_obs::prometheus::{Encoder, TextEncoder};
use test_support::bench::{criterion_median, median};
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
const SIZES: [(&str, usize); 3] = [("1k", 1_000), ("10k", 10_000), ("100k", 100_000)];

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
/// the true count. Models are added in batches sized from the series one
/// model added, so filling costs a few renders, not one per model.
fn fill_to(target: usize, models: &mut usize) -> usize {
    let add = |models: &mut usize| {
        complete(&format!("bench-model-{:06}", *models)).expect("tracked call");
        *models += 1;
    };
    let before = series_in(&encode());
    if before >= target {
        return before;
    }
    add(models);
    let mut series = series_in(&encode());
    let per_model = series.saturating_sub(before).max(1);
    while series < target && *models < MAX_MODELS {
        let batch = (target - series).div_ceil(per_model).max(1);
        for _ in 0..batch.min(MAX_MODELS - *models) {
            add(models);
        }
        series = series_in(&encode());
    }
    series
}

/// (b) our renderer.
fn render() -> Vec<u8> {
    hyperkit_obs::metrics::render(hyperkit_obs::registry())
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

    /// Every variant renders the same samples.
    fn check(&self) {
        let a = series_in(&encode());
        let b = series_in(&self.handler());
        let c = series_in(&render());
        assert!(
            a.abs_diff(b) <= 16 && a.abs_diff(c) <= 16,
            "encoder renders {a} series, handler {b}, render {c}"
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
/// encoder, the renderer and the handler, rounds interleaved.
fn time_all(fx: &Fixture) -> [f64; 3] {
    let budget = Duration::from_millis(60);
    // Warm-up: allocator and caches.
    per_render_ns(|| encode().len(), budget);
    per_render_ns(|| render().len(), budget);
    per_render_ns(|| fx.handler().len(), budget);
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        samples[0].push(per_render_ns(|| encode().len(), budget));
        samples[1].push(per_render_ns(|| render().len(), budget));
        samples[2].push(per_render_ns(|| fx.handler().len(), budget));
    }
    samples.map(median)
}

struct Row {
    size: &'static str,
    series: usize,
    bytes: usize,
    /// encode, render, handler: median ns per render.
    ns: [f64; 3],
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
        "{:<5} {:>7} {:>9} {:>10} {:>10} {:>11} {:>9} {:>9} {:>11} {:>11}",
        "size",
        "series",
        "bytes",
        "encode ms",
        "render ms",
        "handler ms",
        "ren/enc",
        "ns/series",
        "crit enc",
        "crit ren"
    );
    for r in rows {
        println!(
            "{:<5} {:>7} {:>9} {:>10.3} {:>10.3} {:>11.3} {:>8.3}x {:>9.1} {:>11} {:>11}",
            r.size,
            r.series,
            r.bytes,
            ms(r.ns[0]),
            ms(r.ns[1]),
            ms(r.ns[2]),
            r.ns[1] / r.ns[0],
            r.ns[1] / r.series as f64,
            crit(format!("encode_{}", r.size)),
            crit(format!("render_{}", r.size)),
        );
    }
    for pair in rows.windows(2) {
        let (small, large) = (&pair[0], &pair[1]);
        println!(
            "growth {} -> {}: series x{:.2}, encode x{:.2}, render x{:.2}",
            small.size,
            large.size,
            large.series as f64 / small.series as f64,
            large.ns[0] / small.ns[0],
            large.ns[1] / small.ns[1],
        );
    }
    println!();
    println!("targets:");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    for r in rows {
        let ratio = r.ns[1] / r.ns[0];
        println!(
            "  {} render / encode at {:<4}      {ratio:>7.3}x  (target <= 0.5x)",
            verdict(ratio <= 0.5),
            r.size
        );
    }
    if let Some(large) = rows.last() {
        println!(
            "  {} handler at {} series  {:>7.3} ms (target <= 10 ms)",
            verdict(large.ns[2] <= 10e6),
            large.series,
            ms(large.ns[2])
        );
    }
    if let [.., small, large] = rows {
        let cost = large.ns[1] / small.ns[1];
        let series = large.series as f64 / small.series as f64;
        println!(
            "  {} render grows x{cost:.2} for x{series:.2} series  (target: linear, <= 1.2x the series' growth)",
            verdict(cost <= series * 1.2),
        );
    }
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
        group.bench_function(format!("render_{size}"), |b| b.iter(render));
        group.bench_function(format!("handler_{size}"), |b| b.iter(|| fx.handler()));
        group.finish();
        if table {
            rows.push(Row {
                size,
                series,
                bytes: render().len(),
                ns: time_all(&fx),
            });
        }
    }
    criterion.final_summary();
    if table {
        eprintln!("({models} models tracked)");
        print_table(&rows, started);
    }
}
