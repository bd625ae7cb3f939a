//! The per-item cost of the stream wrapper `#[track_model]` puts around a
//! returned stream: the same stream of `ITEMS` chunks (each reporting one
//! output token) drained bare and through a tracked function, polled by
//! hand with a no-op waker so no executor is measured. No sink is
//! registered and no subscriber installed: what is measured is the path
//! every item takes (enter the call, poll, read its tokens, add them) and,
//! spread over the items, the call's own start and finish.
//!
//! Criterion measures both; then, when run by `cargo bench`, the bench
//! drains them again in interleaved rounds and prints the median cost per
//! item of each and what the wrapper adds against the 20 ns target.

use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures_core::Stream;
use hyperkit_obs::{ModelChunk, track_model};
use test_support::bench::median;

struct Chunk(u32);

impl ModelChunk for Chunk {
    fn output_tokens(&self) -> Option<u64> {
        Some(1)
    }
}

/// `n` chunks, ready at once: the cheapest stream there is, so the
/// wrapper's cost is not hidden in the stream's.
struct Chunks {
    left: u32,
}

impl Stream for Chunks {
    type Item = Chunk;

    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Chunk>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Chunk(black_box(self.left))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.left as usize;
        (n, Some(n))
    }
}

#[inline(never)]
fn bare(n: u32) -> impl Stream<Item = Chunk> {
    Chunks { left: n }
}

#[track_model(model, task = "chat")]
#[inline(never)]
fn tracked(model: &str, n: u32) -> impl Stream<Item = Chunk> {
    Chunks { left: n }
}

const ITEMS: u32 = 1_000;
const ROUNDS: usize = 15;
const STREAMS: u32 = 200;

/// Polls `s` to its end; the sum of the items.
#[inline(never)]
fn drain(s: impl Stream<Item = Chunk>) -> u64 {
    let mut s = pin!(s);
    let mut cx = Context::from_waker(Waker::noop());
    let mut sum = 0u64;
    while let Poll::Ready(Some(c)) = s.as_mut().poll_next(&mut cx) {
        sum += u64::from(c.0);
    }
    sum
}

fn round(make: impl Fn() -> u64) -> Duration {
    let start = Instant::now();
    for _ in 0..STREAMS {
        black_box(make());
    }
    start.elapsed()
}

fn ns_per_item(d: Duration) -> f64 {
    d.as_nanos() as f64 / f64::from(STREAMS * ITEMS)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group("model_stream");
        group.throughput(Throughput::Elements(u64::from(ITEMS)));
        group.bench_function("bare", |b| b.iter(|| drain(bare(black_box(ITEMS)))));
        group.bench_function("tracked", |b| {
            b.iter(|| drain(tracked(black_box("model-a"), black_box(ITEMS))))
        });
        group.finish();
    }
    c.final_summary();

    // `cargo test --benches` runs each bench once with `--bench` absent:
    // skip the long table then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (mut plain, mut wrapped) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(ns_per_item(round(|| drain(bare(black_box(ITEMS))))));
        wrapped.push(ns_per_item(round(|| {
            drain(tracked(black_box("model-a"), black_box(ITEMS)))
        })));
    }
    let (plain, wrapped) = (median(plain), median(wrapped));
    let added = wrapped - plain;
    println!();
    println!(
        "Stream wrapper per item (median of {ROUNDS} rounds of {STREAMS} streams of {ITEMS} items, the call's start and finish included):"
    );
    println!("  bare stream                    {plain:8.2} ns/item  (1.00x)");
    println!(
        "  #[track_model] stream          {wrapped:8.2} ns/item  ({:.2}x)  added {added:5.2} ns  target < 20 ns: {}",
        wrapped / plain,
        if added < 20.0 { "PASS" } else { "MISS" }
    );
}
