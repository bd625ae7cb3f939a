//! The cost a tracked call puts on its caller with logging on, as `init()`
//! sets it up by default, against the same function instrumented by hand
//! the way a careful `tracing` user would.
//!
//! | variant | what one call does |
//! |---|---|
//! | `hand_instrument_json` | `#[tracing::instrument(fields(chain))]`, pre-resolved `prometheus` handles (counter, histogram, gauge) timed with `Instant`, and an `info!` closing event, under `tracing_subscriber::fmt().json()` writing through `tracing_appender::non_blocking` |
//! | `track_build_logged` | `#[track_build(chain)]` under the layers `init()` installs: the ECS JSON layer (writing through the runtime's non-blocking line writer, the worker `init()`'s stdout uses) and the local log store (its queue and writer thread on a temporary directory), with the tracked-span filter |
//! | `track_model_logged` | `#[track_model(model, task)]` under the same layers, and the MLflow file store exporter on a temporary directory: a run per call |
//!
//! JSON lines go to `io::sink()` through a non-blocking writer in every
//! variant: `tracing_appender`'s for the hand-written baseline, as its docs
//! recommend, and for the tracked variants `logs::non_blocking`, the same
//! sink `init()`'s stdout lines go through (`NonBlockingStdout`): what is
//! measured is the caller's thread. Each variant is timed in chunks;
//! between chunks (untimed) the queues are flushed, so what is measured is a
//! caller with room in the queues, not the cost of dropping (no line is
//! dropped: the run checks it), and the MLflow runs the chunk's model calls
//! wrote are removed, so that the run does not fill the disk.
//!
//! The cost on the caller is its thread's CPU time per call (`CLOCK_THREAD_CPUTIME_ID`); wall time is printed beside it. On a
//! 2-core machine the background threads (the JSON writer, the store's
//! writer, the MLflow exporter writing a run per call to disk) run during
//! the timed chunk and may take the caller's core, which shows in wall time
//! but is not the caller's work.
//!
//! Targets (issue 17): a tracked call at most 1.5 µs, and at most 0.5x
//! `hand_instrument_json`, in the same run.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hyperkit_obs::logs::NonBlockingGuard;
use hyperkit_obs::logs::store::{self, LogStoreGuard, WriterOptions};
use hyperkit_obs::mlflow::{MlflowConfig, MlflowGuard, TrackingTarget};
use hyperkit_obs::prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};
use hyperkit_obs::{ModelOutput, track_build, track_model};
use test_support::bench::median;
use tracing::Dispatch;
use tracing_subscriber::filter::{FilterExt, LevelFilter};
use tracing_subscriber::layer::{Layer, SubscriberExt};

/// Calls per timed chunk.
const CHUNK: u64 = 2_000;

#[derive(Debug)]
struct Error;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("build failed")
    }
}

struct Completion(u64);

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(900)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.0)
    }
}

struct Hand {
    success: IntCounter,
    duration: Histogram,
    active: IntGauge,
}

#[inline(never)]
#[tracing::instrument(level = "info", skip(h, x))]
fn hand_build(h: &Hand, chain: &str, x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    h.active.inc();
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    h.success.inc();
    let elapsed = start.elapsed();
    h.duration.observe(elapsed.as_secs_f64());
    h.active.dec();
    tracing::info!(
        status = "success",
        event.duration = elapsed.as_nanos() as u64,
        "hand_build succeeded"
    );
    out
}

#[inline(never)]
#[track_build(chain)]
fn tracked_build(chain: &str, x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

#[inline(never)]
#[track_model(model, task = "codegen")]
fn tracked_model(model: &str, x: u64) -> Result<Completion, Error> {
    Ok(Completion(black_box(x) % 500))
}

fn temp_dir(name: &str) -> PathBuf {
    const PREFIX: &str = "hyperkit-bench-logging-";
    // A run stopped before its end (Ctrl-C) leaves its directory: removed
    // here once its process is gone.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            let pid = rest.rsplit('-').next().unwrap_or_default();
            let alive = std::path::Path::new("/proc").join(pid).exists();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("{PREFIX}{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Removes the finished runs of the MLflow file store in `mlruns` (each
/// run's directory, with its `meta.yaml`): a model call writes a run, and
/// kept, a full run of the bench left about 11 GB of them.
fn prune_runs(mlruns: &std::path::Path) {
    let Ok(experiments) = std::fs::read_dir(mlruns) else {
        return;
    };
    for experiment in experiments.flatten() {
        let Ok(runs) = std::fs::read_dir(experiment.path()) else {
            continue;
        };
        for run in runs.flatten() {
            let path = run.path();
            if path.join("meta.yaml").is_file() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Hand,
    TrackBuild,
    TrackModel,
}

struct Variant {
    name: &'static str,
    kind: Kind,
    dispatch: Dispatch,
    store: Option<LogStoreGuard>,
    /// The tracked variants' JSON line writer.
    lines: Option<NonBlockingGuard>,
    /// The MLflow file store the model variant's runs go to.
    mlruns: Option<PathBuf>,
    _appender: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Variant {
    fn hand() -> Self {
        let (writer, guard) = tracing_appender::non_blocking(std::io::sink());
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(LevelFilter::INFO)
            .with_writer(writer)
            .finish();
        Variant {
            name: "hand_instrument_json",
            kind: Kind::Hand,
            dispatch: Dispatch::new(subscriber),
            store: None,
            lines: None,
            mlruns: None,
            _appender: Some(guard),
        }
    }

    /// The layers `init()` installs by default, writing JSON lines through
    /// a non-blocking writer to `io::sink()`.
    fn tracked(name: &'static str, kind: Kind, dir: &std::path::Path) -> Self {
        let (writer, lines) =
            hyperkit_obs::logs::non_blocking("bench-json", std::io::sink()).expect("a line writer");
        let (sink, store) =
            store::start(dir.join(name), WriterOptions::default()).expect("a log store");
        let layer = hyperkit_obs::logs::layer("bench")
            .with_writer(writer)
            .with_store(sink);
        let filter = LevelFilter::INFO.or(hyperkit_obs::logs::TrackedSpans);
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
        Variant {
            name,
            kind,
            dispatch: Dispatch::new(subscriber),
            store: Some(store),
            lines: Some(lines),
            mlruns: (kind == Kind::TrackModel).then(|| dir.join("mlruns")),
            _appender: None,
        }
    }

    /// Time for `n` calls, in chunks, with the queues flushed untimed
    /// between chunks.
    fn time(&self, hand: &Hand, n: u64) -> Duration {
        self.measure(hand, n).0
    }

    /// Wall time, the caller thread's CPU time and the other threads' CPU
    /// time while it ran (ns, where the platform says) for `n` calls, in
    /// chunks, with the queues flushed untimed between chunks.
    fn measure(&self, hand: &Hand, n: u64) -> (Duration, Option<u64>, Option<u64>) {
        let mut total = Duration::ZERO;
        let mut cpu = Some(0u64);
        let mut others = Some(0u64);
        let mut left = n;
        while left > 0 {
            let chunk = left.min(CHUNK);
            let (wall, used, beside) = tracing::dispatcher::with_default(&self.dispatch, || {
                let chain = black_box("ethereum");
                let process_start = process_cpu_ns();
                let cpu_start = thread_cpu_ns();
                let start = Instant::now();
                for i in 0..chunk {
                    match self.kind {
                        Kind::Hand => drop(black_box(hand_build(hand, chain, i))),
                        Kind::TrackBuild => drop(black_box(tracked_build(chain, i))),
                        Kind::TrackModel => drop(black_box(tracked_model("small-1", i))),
                    }
                }
                let wall = start.elapsed();
                let used = cpu_start
                    .zip(thread_cpu_ns())
                    .map(|(a, b)| b.saturating_sub(a));
                let process = process_start
                    .zip(process_cpu_ns())
                    .map(|(a, b)| b.saturating_sub(a));
                let beside = process.zip(used).map(|(p, t)| p.saturating_sub(t));
                (wall, used, beside)
            });
            total += wall;
            cpu = cpu.zip(used).map(|(a, b)| a + b);
            others = others.zip(beside).map(|(a, b)| a + b);
            if let Some(store) = &self.store {
                assert!(store.flush(Duration::from_secs(60)), "the store keeps up");
            }
            if let Some(lines) = &self.lines {
                assert!(
                    lines.flush(Duration::from_secs(60)),
                    "the line writer keeps up"
                );
            }
            if self.kind == Kind::TrackModel {
                assert!(
                    hyperkit_obs::mlflow::flush(Duration::from_secs(60)),
                    "the MLflow exporter keeps up"
                );
                if let Some(mlruns) = &self.mlruns {
                    prune_runs(mlruns);
                }
            }
            left -= chunk;
        }
        (total, cpu, others)
    }
}

/// The process's CPU time so far (all its threads), in nanoseconds.
fn process_cpu_ns() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u64::try_from(t.tv_nsec).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// This thread's CPU time so far, in nanoseconds: the thread's own CPU
/// clock, exact to the moment it is read (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u64::try_from(t.tv_nsec).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

fn hand_handles() -> Hand {
    Hand {
        success: IntCounter::new("hand_builds_total", "b").expect("valid"),
        duration: Histogram::with_opts(
            HistogramOpts::new("hand_build_duration_seconds", "d")
                .buckets(vec![10.0, 30.0, 60.0, 90.0, 120.0, 180.0]),
        )
        .expect("valid"),
        active: IntGauge::new("hand_active_builds", "a").expect("valid"),
    }
}

fn start_mlflow(dir: &std::path::Path) -> MlflowGuard {
    let mut config = MlflowConfig::default();
    config.target = TrackingTarget::FileStore(dir.join("mlruns"));
    hyperkit_obs::mlflow::start(&config).expect("the MLflow file store exporter")
}

fn table(variants: &[&Variant], hand: &Hand) {
    // Rounds of one chunk, interleaved, the least of them: what else runs
    // on the machine (other work, the sinks' own threads on a 2-core
    // machine) only ever adds to a round's CPU time, through preemption
    // and the caches it takes, so the least round is the call's own cost
    // however busy the machine is (the estimator of `track_overhead`); the
    // median is printed beside it, with the CPU the process's other threads
    // (the sinks' workers) took while the round ran: a median far above the
    // least with nothing beside it is the machine's slow phase, which the
    // baseline's rounds show too.
    const ROUNDS: usize = 100;
    const CALLS: u64 = CHUNK;
    for v in variants {
        v.time(hand, CALLS * 2);
    }
    let mut wall = vec![Vec::new(); variants.len()];
    let mut cpu = vec![Vec::new(); variants.len()];
    let mut others = vec![Vec::new(); variants.len()];
    for _ in 0..ROUNDS {
        for (i, v) in variants.iter().enumerate() {
            let (w, c, o) = v.measure(hand, CALLS);
            wall[i].push(w.as_nanos() as f64 / CALLS as f64);
            if let Some(c) = c {
                cpu[i].push(c as f64 / CALLS as f64);
            }
            if let Some(o) = o {
                others[i].push(o as f64 / CALLS as f64);
            }
        }
    }
    let least = |xs: &Vec<f64>| xs.iter().copied().fold(f64::NAN, f64::min);
    let mid = |xs: Vec<f64>| if xs.is_empty() { f64::NAN } else { median(xs) };
    let cpu_least: Vec<f64> = cpu.iter().map(least).collect();
    let cpu_median: Vec<f64> = cpu.into_iter().map(mid).collect();
    let others_median: Vec<f64> = others.into_iter().map(mid).collect();
    let wall_median: Vec<f64> = wall.into_iter().map(mid).collect();
    println!(
        "\ntrack_logging: ns per call on the caller's thread, the least of {ROUNDS} interleaved rounds of {CALLS} calls (median beside)"
    );
    println!(
        "{:<22} {:>8} {:>7} {:>10} {:>7} {:>13} {:>11}",
        "variant", "cpu ns", "/hand", "cpu median", "/hand", "others median", "wall median"
    );
    for (i, v) in variants.iter().enumerate() {
        println!(
            "{:<22} {:>8.0} {:>6.2}x {:>10.0} {:>6.2}x {:>13.0} {:>11.0}",
            v.name,
            cpu_least[i],
            cpu_least[i] / cpu_least[0],
            cpu_median[i],
            cpu_median[i] / cpu_median[0],
            others_median[i],
            wall_median[i]
        );
    }
    println!("  (others: the CPU the process's other threads took while the round ran, per call)");
    println!();
    println!("targets (the caller thread's CPU time per call, least round; median round beside):");
    for (i, v) in variants.iter().enumerate().skip(1) {
        let ratio = cpu_least[i] / cpu_least[0];
        println!(
            "  {} {:<20} {:>7.0} ns (target <= 1500 ns), {:.2}x hand_instrument_json (target <= 0.5x); median round {:.0} ns, {:.2}x",
            if cpu_least[i] <= 1500.0 && ratio <= 0.5 {
                "PASS"
            } else {
                "MISS"
            },
            v.name,
            cpu_least[i],
            ratio,
            cpu_median[i],
            cpu_median[i] / cpu_median[0]
        );
    }
}

fn main() {
    let dir = temp_dir("run");
    let hand = hand_handles();
    let mlflow = start_mlflow(&dir);
    let variants = [
        Variant::hand(),
        Variant::tracked("track_build_logged", Kind::TrackBuild, &dir),
        Variant::tracked("track_model_logged", Kind::TrackModel, &dir),
    ];
    // Each variant makes its calls, and the model calls their runs.
    for v in &variants {
        v.time(&hand, 10);
    }
    assert!(hand.success.get() >= 10);
    for v in &variants[1..] {
        let status = v.store.as_ref().map(|s| s.status());
        assert!(
            status.is_some_and(|s| s.delivered >= 10),
            "{} stored its lines",
            v.name
        );
    }
    assert!(
        hyperkit_obs::mlflow::status().is_some_and(|s| s.delivered >= 10),
        "the model calls were logged as runs"
    );

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    let mut group = criterion.benchmark_group("track_logging");
    for v in &variants {
        group.bench_function(v.name, |b| b.iter_custom(|iters| v.time(&hand, iters)));
    }
    group.finish();
    criterion.final_summary();

    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    // A filter (`-- track_build`) keeps the table to the variants it names,
    // beside the baseline: the model variant writes an MLflow run per call,
    // which on a slow disk takes most of the run.
    let filter = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    if has("--bench") && !has("--profile-time") && !has("--list") {
        let chosen: Vec<&Variant> = variants
            .iter()
            .enumerate()
            .filter(|(i, v)| *i == 0 || filter.is_none_or(|f| v.name.contains(f)))
            .map(|(_, v)| v)
            .collect();
        table(&chosen, &hand);
    }
    for v in &variants {
        for status in [
            v.store.as_ref().map(|s| s.status()),
            v.lines.as_ref().map(|l| l.status()),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(
                status.dropped, 0,
                "{}: {} dropped lines",
                v.name, status.sink
            );
        }
    }
    drop(variants);
    drop(mlflow);
    let _ = std::fs::remove_dir_all(&dir);
}
