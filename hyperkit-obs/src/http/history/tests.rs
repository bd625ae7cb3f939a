//! The history's specification: rates and quantiles over the window, the
//! ring's bounds, and (ignored) the measurement behind the module's cost.

use super::*;
use prometheus::Registry;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

fn demo_registry(models: usize) -> (Registry, HistogramVec, IntCounterVec) {
    let registry = Registry::new();
    let latency = HistogramVec::new(
        HistogramOpts::new("hyperkit_model_latency_seconds", "l")
            .buckets(crate::metrics::MODEL_LATENCY_BUCKETS.to_vec()),
        &["model", "task"],
    )
    .unwrap();
    let builds = IntCounterVec::new(
        Opts::new("hyperkit_builds_total", "b"),
        &["status", "chain"],
    )
    .unwrap();
    registry.register(Box::new(latency.clone())).unwrap();
    registry.register(Box::new(builds.clone())).unwrap();
    for m in 0..models {
        latency
            .with_label_values(&[&format!("m{m}"), "t"])
            .observe(0.3);
    }
    (registry, latency, builds)
}

#[test]
fn rates_and_quantiles_come_from_deltas_over_the_window() {
    let (registry, latency, builds) = demo_registry(0);
    let mut h = History::new();
    h.sample(&registry, 1_000);
    for _ in 0..9 {
        builds.with_label_values(&["success", "eth"]).inc();
        latency.with_label_values(&["gpt", "t"]).observe(0.3);
    }
    builds.with_label_values(&["failure", "eth"]).inc();
    latency.with_label_values(&["gpt", "t"]).observe(100.0);
    h.sample(&registry, 11_000);
    let snap = h.snapshot();
    let chart = |id: &str| snap.charts.iter().find(|c| c.id == id).unwrap();
    assert_eq!(chart("build_success").series[0].latest, Some(90.0));
    assert_eq!(chart("builds_per_min").series[0].latest, Some(60.0));
    let p50 = chart("model_latency").series[0].latest.unwrap();
    assert!((0.25..=0.5).contains(&p50), "{p50}");
    assert_eq!(snap.totals.builds, 10.0);
}

#[test]
fn spend_per_hour_by_model_is_the_cost_counters_rate() {
    let registry = Registry::new();
    let cost = prometheus::CounterVec::new(
        Opts::new("hyperkit_model_cost_usd_total", "c"),
        &["model", "task"],
    )
    .unwrap();
    registry.register(Box::new(cost.clone())).unwrap();
    cost.with_label_values(&["large", "a"]).inc_by(2.0);
    let mut h = History::new();
    h.sample(&registry, 1_000);
    // 0.5 USD in 10 s over two tasks is 180 USD per hour; 0.01 is 3.6.
    cost.with_label_values(&["large", "a"]).inc_by(0.25);
    cost.with_label_values(&["large", "b"]).inc_by(0.25);
    cost.with_label_values(&["small", "a"]).inc_by(0.01);
    h.sample(&registry, 11_000);
    let snap = h.snapshot();
    let spend = snap.charts.iter().find(|c| c.id == "model_spend").unwrap();
    assert_eq!(spend.unit, "USD/h");
    let latest: Vec<(&str, f64)> = spend
        .series
        .iter()
        .map(|s| (s.name.as_str(), s.latest.unwrap()))
        .collect();
    assert_eq!(latest.len(), 2);
    assert!(
        (latest[0].1 - 180.0).abs() < 1e-3 && latest[0].0 == "large",
        "{latest:?}"
    );
    assert!(
        (latest[1].1 - 3.6).abs() < 1e-3 && latest[1].0 == "small",
        "{latest:?}"
    );
    assert!((snap.totals.cost_usd - 2.51).abs() < 1e-12);
}

#[derive(crate::Domain)]
#[domain(crate = crate, prefix = "history_test_deploy", buckets = [0.001, 1.0])]
struct HistoryDeploy {
    env: String,
}

#[crate::track(HistoryDeploy, env, crate = crate)]
fn deploy(env: &str, fail: bool) -> Result<(), String> {
    if fail { Err("no".into()) } else { Ok(()) }
}

#[test]
fn a_programs_own_domain_gets_its_rate_success_and_duration_charts() {
    let registry = crate::metrics::registry();
    let mut h = History::new();
    let _ = deploy("staging", false);
    h.sample(registry, 1_000);
    for i in 0..10 {
        let _ = deploy("staging", i == 0);
    }
    h.sample(registry, 31_000);
    let snap = h.snapshot();
    let series = |id: &str, name: &str| {
        snap.charts
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.series.iter().find(|s| s.name == name))
            .and_then(|s| s.latest)
    };
    // 10 calls in 30 s, one of them failed, each well under a millisecond.
    assert_eq!(series("domain_calls_per_min", "history_deploy"), Some(20.0));
    assert_eq!(series("domain_success", "history_deploy"), Some(90.0));
    let p95 = series("domain_duration", "history_deploy p95").expect("a p95");
    assert!(p95 <= 0.001, "{p95}");
}

#[test]
fn an_empty_registry_gives_charts_without_series() {
    let mut h = History::new();
    h.sample(&Registry::new(), 1_000);
    let snap = h.snapshot();
    assert_eq!(snap.samples, 1);
    assert!(snap.charts.iter().all(|c| c.series.is_empty()));
    assert!(
        !snap.charts.iter().any(|c| c.id.starts_with("domain_")),
        "no charts of the program's own domains without data"
    );
}

#[test]
fn the_ring_keeps_one_hour_and_at_most_max_series() {
    let mut h = History::new();
    let families = Registry::new().gather();
    for i in 0..(CAPACITY as u64 + 10) {
        h.record(&families, i * 1000);
    }
    assert_eq!(h.times.len(), CAPACITY);
    assert!(h.snapshot().times.len() <= MAX_POINTS);
}

/// Measures the cost the module documentation states: run with
/// `cargo test -p hyperkit-obs --release -- --ignored --nocapture cost`.
#[test]
#[ignore = "a measurement, not a check"]
fn cost_of_1000_series_over_an_hour() {
    // 1,000 model series in the registry, each observed every second, so
    // each pass gathers, aggregates and derives all of them; 2,000
    // derived series (p50 and p95) are offered, 1,000 kept by the cap.
    let (registry, latency, _) = demo_registry(1000);
    let children: Vec<_> = (0..1000)
        .map(|m| latency.with_label_values(&[&format!("m{m}"), "t"]))
        .collect();
    let mut h = History::new();
    let mut passes = Vec::with_capacity(CAPACITY);
    for i in 0..CAPACITY as u64 {
        for c in &children {
            c.observe(0.01 * (i % 100) as f64);
        }
        let started = std::time::Instant::now();
        h.sample(&registry, i * 1000);
        passes.push(started.elapsed());
    }
    passes.sort();
    let median = passes[passes.len() / 2];
    let p99 = passes[passes.len() * 99 / 100];
    println!(
        "series {} (values refused {}), memory {} bytes ({:.2} MB), \
         pass median {median:?} p99 {p99:?} = {:.3}% of one core at one pass per second",
        h.series_count(),
        h.refused,
        h.memory_bytes(),
        h.memory_bytes() as f64 / 1e6,
        median.as_secs_f64() * 100.0
    );
    assert_eq!(h.series_count(), MAX_SERIES);
    assert!(h.memory_bytes() < 20_000_000);
}
