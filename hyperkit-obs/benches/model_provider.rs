//! What `provider = …` adds to a `#[track_model]` call on the caller's
//! thread: the same tracked function without a provider, with a literal
//! one and with one from a parameter (each looked up in the process's set
//! of providers, kept once each). No sink is registered and no subscriber
//! installed, so what is measured is the metrics path plus the provider.
//!
//! Criterion measures the three; then, when run by `cargo bench`, the bench
//! times them again in interleaved rounds of `CALLS` calls and prints the
//! median per-call cost of each against the call without a provider.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hyperkit_obs::track_model;
use test_support::bench::median;

#[track_model(model, task = "codegen")]
#[inline(never)]
fn plain(model: &str, x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[track_model(model, task = "codegen", provider = "openai")]
#[inline(never)]
fn literal(model: &str, x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[track_model(model, task = "codegen", provider)]
#[inline(never)]
fn parameter(model: &str, provider: &str, x: u64) -> u64 {
    black_box(x).wrapping_mul(3) ^ provider.len() as u64
}

const CALLS: u64 = 200_000;
const ROUNDS: usize = 9;

fn round(f: impl Fn(u64) -> u64) -> f64 {
    let start = Instant::now();
    for i in 0..CALLS {
        black_box(f(i));
    }
    let d: Duration = start.elapsed();
    d.as_nanos() as f64 / CALLS as f64
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group("track_model_provider");
        group.bench_function("no_provider", |b| {
            b.iter(|| plain(black_box("model-a"), black_box(7)))
        });
        group.bench_function("literal_provider", |b| {
            b.iter(|| literal(black_box("model-a"), black_box(7)))
        });
        group.bench_function("parameter_provider", |b| {
            b.iter(|| parameter(black_box("model-a"), black_box("anthropic"), black_box(7)))
        });
        group.finish();
    }
    c.final_summary();

    // `cargo test --benches` runs each bench once with `--bench` absent:
    // skip the long table then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (mut off, mut lit, mut param) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        off.push(round(|i| plain(black_box("model-a"), i)));
        lit.push(round(|i| literal(black_box("model-a"), i)));
        param.push(round(|i| {
            parameter(black_box("model-a"), black_box("anthropic"), i)
        }));
    }
    let (off, lit, param) = (median(off), median(lit), median(param));
    println!();
    println!("A model call's provider (median of {ROUNDS} rounds of {CALLS} calls):");
    println!("  #[track_model], no provider      {off:8.1} ns/call  (1.00x)");
    println!(
        "  #[track_model], literal provider {lit:8.1} ns/call  ({:.2}x)  added {:5.1} ns",
        lit / off,
        lit - off
    );
    println!(
        "  #[track_model], param provider   {param:8.1} ns/call  ({:.2}x)  added {:5.1} ns",
        param / off,
        param - off
    );
}
