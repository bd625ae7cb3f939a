//! The cost MLflow logging adds to a `#[track_model]` call on the caller's
//! thread: the same tracked function with no exporter running, and with the
//! exporter running (a worker thread draining the queue and building every
//! run, then discarding it, so that no disk or network speed enters the
//! figure; what the caller does is exactly what it does for a real store).
//!
//! Criterion measures both; then, when run by `cargo bench`, the bench times
//! both again in interleaved rounds of `CALLS` calls and prints the median
//! per-call cost of each and their difference against the 1 µs target.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hyperkit_obs::mlflow::{self, MlflowConfig};
use hyperkit_obs::{ModelOutput, track_model};
use test_support::bench::median;

struct Completion(u64);

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.0)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.0 * 2)
    }
}

#[derive(Debug)]
struct ModelError;

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("model error")
    }
}

#[track_model(model, task = "codegen")]
#[inline(never)]
fn complete(model: &str, x: u64) -> Result<Completion, ModelError> {
    Ok(Completion(black_box(x).wrapping_mul(3)))
}

const CALLS: u64 = 100_000;
const ROUNDS: usize = 9;

fn config() -> MlflowConfig {
    let mut c = MlflowConfig::default();
    // Never full: the figure is the enqueue path, not the drop path.
    c.queue_capacity = 1_000_000;
    c
}

fn round() -> Duration {
    let start = Instant::now();
    for i in 0..CALLS {
        let _ = black_box(complete(black_box("model-a"), i));
    }
    start.elapsed()
}

fn ns_per_call(d: Duration) -> f64 {
    d.as_nanos() as f64 / CALLS as f64
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group("track_model_mlflow");
        group.bench_function("exporter_off", |b| {
            b.iter(|| complete(black_box("model-a"), black_box(7)))
        });
        let guard = mlflow::start_discarding(&config()).expect("exporter starts");
        group.bench_function("exporter_on", |b| {
            b.iter(|| complete(black_box("model-a"), black_box(7)))
        });
        guard.shutdown(Duration::from_secs(5));
        group.finish();
    }
    c.final_summary();

    // `cargo test --benches` runs each bench once with `--bench` absent:
    // skip the long table then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        off.push(ns_per_call(round()));
        let guard = mlflow::start_discarding(&config()).expect("exporter starts");
        on.push(ns_per_call(round()));
        assert!(
            mlflow::flush(Duration::from_secs(30)),
            "the worker keeps up"
        );
        guard.shutdown(Duration::from_secs(5));
    }
    let (off, on) = (median(off), median(on));
    let added = on - off;
    println!();
    println!("MLflow logging on the caller's thread (median of {ROUNDS} rounds of {CALLS} calls):");
    println!("  #[track_model], no exporter       {off:8.1} ns/call  (1.00x)");
    println!(
        "  #[track_model], exporter running  {on:8.1} ns/call  ({:.2}x)",
        on / off
    );
    println!(
        "  added by MLflow logging           {added:8.1} ns/call  target < 1000 ns: {}",
        if added < 1000.0 { "PASS" } else { "MISS" }
    );
}
