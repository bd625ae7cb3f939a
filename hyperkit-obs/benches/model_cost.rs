//! The cost pricing adds to a `#[track_model]` call on the caller's thread:
//! the same tracked function (usage known: input, cached input and output
//! tokens) with no price table installed, with a table that prices the
//! model, and with a table that does not (the call counted as unpriced).
//! No sink is registered and no subscriber installed, so what is measured
//! is the metrics path: labels to handles, clock, counters, and pricing.
//!
//! Criterion measures the three; then, when run by `cargo bench`, the bench
//! times them again in interleaved rounds of `CALLS` calls and prints the
//! median per-call cost of each and what pricing adds against the 30 ns
//! target.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hyperkit_obs::model::{ModelPrice, PriceTable, install_prices};
use hyperkit_obs::{ModelOutput, track_model};
use test_support::bench::median;

struct Completion(u64);

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.0)
    }
    fn cached_input_tokens(&self) -> Option<u64> {
        Some(self.0 / 4)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.0 * 2)
    }
}

#[track_model(model, task = "codegen")]
#[inline(never)]
fn complete(model: &str, x: u64) -> Completion {
    Completion(black_box(x).wrapping_mul(3) & 0xffff)
}

const CALLS: u64 = 200_000;
const ROUNDS: usize = 9;

fn table() -> PriceTable {
    PriceTable::new().with(
        "model-a",
        ModelPrice::usd_per_million(2.5, 10.0)
            .and_then(|p| p.with_cached_input(1.25))
            .expect("valid price"),
    )
}

fn round(model: &str) -> Duration {
    let start = Instant::now();
    for i in 0..CALLS {
        black_box(complete(black_box(model), i));
    }
    start.elapsed()
}

fn ns_per_call(d: Duration) -> f64 {
    d.as_nanos() as f64 / CALLS as f64
}

fn main() {
    let table = table();
    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group("track_model_cost");
        install_prices(None);
        group.bench_function("no_price_table", |b| {
            b.iter(|| complete(black_box("model-a"), black_box(7)))
        });
        install_prices(Some(&table));
        group.bench_function("priced", |b| {
            b.iter(|| complete(black_box("model-a"), black_box(7)))
        });
        group.bench_function("unpriced", |b| {
            b.iter(|| complete(black_box("model-b"), black_box(7)))
        });
        group.finish();
    }
    c.final_summary();

    // `cargo test --benches` runs each bench once with `--bench` absent:
    // skip the long table then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (mut off, mut priced, mut unpriced) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        install_prices(None);
        off.push(ns_per_call(round("model-a")));
        install_prices(Some(&table));
        priced.push(ns_per_call(round("model-a")));
        unpriced.push(ns_per_call(round("model-b")));
    }
    let (off, priced, unpriced) = (median(off), median(priced), median(unpriced));
    let verdict = |added: f64| if added < 30.0 { "PASS" } else { "MISS" };
    println!();
    println!("Pricing on the caller's thread (median of {ROUNDS} rounds of {CALLS} calls):");
    println!("  #[track_model], no price table   {off:8.1} ns/call  (1.00x)");
    println!(
        "  #[track_model], model priced     {priced:8.1} ns/call  ({:.2}x)  added {:5.1} ns  target < 30 ns: {}",
        priced / off,
        priced - off,
        verdict(priced - off)
    );
    println!(
        "  #[track_model], model unpriced   {unpriced:8.1} ns/call  ({:.2}x)  added {:5.1} ns  target < 30 ns: {}",
        unpriced / off,
        unpriced - off,
        verdict(unpriced - off)
    );
}
