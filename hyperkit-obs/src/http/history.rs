//! The status page's memory: an in-process ring buffer of the last hour,
//! sampled from [`registry()`](crate::registry) every second, so the page
//! works with no Prometheus.
//!
//! What is kept is not the raw registry but the handful of derived series
//! the page draws (rates, ratios and quantiles by chain, model, type), one
//! `f32` per second each. Memory is bounded: at most [`MAX_SERIES`] series
//! of [`CAPACITY`] points, so at most
//! `CAPACITY * (8 + MAX_SERIES * 4)` bytes of samples (14.4 MB) plus one key
//! per series, plus 8 copies of the raw aggregates that rates are computed
//! over (about 16 bytes per histogram bucket per chain or model, bounded in
//! turn by the registry's label-value limit). Measured with 1,000 models
//! (`cost_of_1000_series_over_an_hour`): 16.8 MB in all, one pass (gather,
//! aggregate, derive, record) 1.1 ms median, 0.11 % of one core. A series
//! beyond the cap is not recorded.
//!
//! The sampler is a background tokio task started lazily (by the router
//! when built inside a runtime, else by the first page request); it never
//! blocks a caller: handlers only hold the buffer's lock to copy it out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus::proto::MetricFamily;
use serde::Serialize;

/// Time between two samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per series: one hour at one per second.
pub(crate) const CAPACITY: usize = 3600;
/// Most derived series kept; further ones are not recorded.
pub(crate) const MAX_SERIES: usize = 1000;
/// Most points per series in one [`Snapshot`]: older points are averaged
/// into buckets so an hour stays a small answer.
pub(crate) const MAX_POINTS: usize = 360;
/// Rates, ratios and quantiles are computed against a raw sample 60 to 70 s
/// old: raw samples are kept every [`RAW_EVERY_MS`], [`RAW_KEPT`] of them,
/// so the window costs 8 raw aggregates, not 60.
const RAW_EVERY_MS: u64 = 10_000;
const RAW_KEPT: usize = 7;

/// A chart of the page: its id, title and the unit of its y axis.
struct Chart {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
}

const CHARTS: &[Chart] = &[
    Chart {
        id: "build_success",
        title: "Build success rate by chain",
        unit: "%",
    },
    Chart {
        id: "builds_per_min",
        title: "Builds per minute by chain",
        unit: "builds/min",
    },
    Chart {
        id: "build_duration",
        title: "Build duration p50 / p95",
        unit: "s",
    },
    Chart {
        id: "active_builds",
        title: "Active builds by chain",
        unit: "builds",
    },
    Chart {
        id: "model_latency",
        title: "Model latency p50 / p95 by model",
        unit: "s",
    },
    Chart {
        id: "model_acceptance",
        title: "Model acceptance rate by model",
        unit: "%",
    },
    Chart {
        id: "tokens_per_min",
        title: "Tokens per minute by type",
        unit: "tokens/min",
    },
    Chart {
        id: "http_rate",
        title: "HTTP request rate",
        unit: "req/s",
    },
    Chart {
        id: "http_errors",
        title: "HTTP error ratio (5xx)",
        unit: "%",
    },
];

/// Cumulative values of one sample, aggregated from the registry.
#[derive(Clone, Debug, Default)]
struct Raw {
    /// chain -> (successful, all) finished builds.
    builds: BTreeMap<String, (f64, f64)>,
    /// Build duration buckets over every chain: (upper bound, cumulative).
    build_buckets: Vec<(f64, f64)>,
    active: BTreeMap<String, f64>,
    model_calls: f64,
    /// model -> latency buckets.
    model_buckets: BTreeMap<String, Vec<(f64, f64)>>,
    /// model -> (accepted, judged).
    acceptance: BTreeMap<String, (f64, f64)>,
    /// type -> tokens.
    tokens: BTreeMap<String, f64>,
    /// (all, 5xx) HTTP requests.
    http: (f64, f64),
    /// sink -> dropped items.
    dropped: BTreeMap<String, f64>,
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn add_buckets(into: &mut Vec<(f64, f64)>, h: &prometheus::proto::Histogram) {
    let buckets = h.get_bucket();
    if into.is_empty() {
        into.extend(buckets.iter().map(|b| (b.upper_bound(), 0.0)));
        into.push((f64::INFINITY, 0.0));
    }
    for (slot, b) in into.iter_mut().zip(buckets) {
        slot.1 += b.cumulative_count() as f64;
    }
    if let Some(inf) = into.last_mut() {
        inf.1 += h.get_sample_count() as f64;
    }
}

impl Raw {
    /// Approximate heap and inline bytes of this sample.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        const NODE: usize = 48;
        fn keys<V>(m: &BTreeMap<String, V>) -> usize {
            m.keys().map(|k| k.capacity() + NODE).sum()
        }
        std::mem::size_of::<Raw>()
            + keys(&self.builds)
            + keys(&self.active)
            + keys(&self.acceptance)
            + keys(&self.tokens)
            + keys(&self.dropped)
            + self.build_buckets.capacity() * 16
            + self
                .model_buckets
                .iter()
                .map(|(k, v)| k.capacity() + NODE + v.capacity() * 16)
                .sum::<usize>()
    }

    fn from_families(families: &[MetricFamily]) -> Raw {
        let mut raw = Raw::default();
        for f in families {
            for m in f.get_metric() {
                let counter = m.get_counter().get_value();
                match f.name() {
                    "hyperkit_builds_total" => {
                        let e = raw.builds.entry(label(m, "chain").to_owned()).or_default();
                        e.1 += counter;
                        if label(m, "status") == "success" {
                            e.0 += counter;
                        }
                    }
                    "hyperkit_build_duration_seconds" => {
                        add_buckets(&mut raw.build_buckets, m.get_histogram());
                    }
                    "hyperkit_active_builds" => {
                        *raw.active.entry(label(m, "chain").to_owned()).or_default() +=
                            m.get_gauge().get_value();
                    }
                    "hyperkit_model_calls_total" => raw.model_calls += counter,
                    "hyperkit_model_latency_seconds" => add_buckets(
                        raw.model_buckets
                            .entry(label(m, "model").to_owned())
                            .or_default(),
                        m.get_histogram(),
                    ),
                    "hyperkit_model_acceptance_total" => {
                        let e = raw
                            .acceptance
                            .entry(label(m, "model").to_owned())
                            .or_default();
                        e.1 += counter;
                        if label(m, "accepted") == "true" {
                            e.0 += counter;
                        }
                    }
                    "hyperkit_model_tokens_total" => {
                        *raw.tokens.entry(label(m, "type").to_owned()).or_default() += counter;
                    }
                    "hyperkit_http_requests_total" => {
                        raw.http.0 += counter;
                        if label(m, "status").starts_with('5') {
                            raw.http.1 += counter;
                        }
                    }
                    "hyperkit_obs_dropped_total" => {
                        *raw.dropped.entry(label(m, "sink").to_owned()).or_default() += counter;
                    }
                    _ => {}
                }
            }
        }
        raw
    }
}

/// The `q` quantile of the observations between two cumulative bucket
/// lists, interpolated linearly inside a bucket as PromQL's
/// `histogram_quantile` does; `None` without observations.
fn quantile(now: &[(f64, f64)], then: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .enumerate()
        .map(|(i, &(le, c))| (le, c - then.get(i).map_or(0.0, |b| b.1)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, c) in &delta {
        if c >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let share = if c > lower.1 {
                (rank - lower.1) / (c - lower.1)
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, c);
    }
    Some(lower.0)
}

fn ratio(part: f64, all: f64) -> Option<f64> {
    (all > 0.0).then(|| 100.0 * part / all)
}

/// The derived values of one sample: (chart id, series name) -> value.
fn derive(now: &Raw, then: &Raw, seconds: f64) -> Vec<((&'static str, String), f64)> {
    let mut out = Vec::new();
    let mut put = |chart: &'static str, name: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            out.push(((chart, name.to_owned()), v));
        }
    };
    for (name, v) in &now.active {
        put("active_builds", name, Some(*v));
    }
    if seconds <= 0.0 {
        return out;
    }
    for (chain, &(ok, all)) in &now.builds {
        let (ok0, all0) = then.builds.get(chain).copied().unwrap_or_default();
        put("build_success", chain, ratio(ok - ok0, all - all0));
        put("builds_per_min", chain, Some((all - all0) * 60.0 / seconds));
    }
    put(
        "build_duration",
        "p50",
        quantile(&now.build_buckets, &then.build_buckets, 0.5),
    );
    put(
        "build_duration",
        "p95",
        quantile(&now.build_buckets, &then.build_buckets, 0.95),
    );
    for (model, buckets) in &now.model_buckets {
        let before = then.model_buckets.get(model).map_or(&[][..], Vec::as_slice);
        put(
            "model_latency",
            &format!("{model} p50"),
            quantile(buckets, before, 0.5),
        );
        put(
            "model_latency",
            &format!("{model} p95"),
            quantile(buckets, before, 0.95),
        );
    }
    for (model, &(yes, all)) in &now.acceptance {
        let (yes0, all0) = then.acceptance.get(model).copied().unwrap_or_default();
        put("model_acceptance", model, ratio(yes - yes0, all - all0));
    }
    for (kind, &n) in &now.tokens {
        let n0 = then.tokens.get(kind).copied().unwrap_or_default();
        put("tokens_per_min", kind, Some((n - n0) * 60.0 / seconds));
    }
    // A service that has served no request through the RED layer has no
    // HTTP data, not a rate of zero.
    if now.http.0 > 0.0 {
        put(
            "http_rate",
            "requests",
            Some((now.http.0 - then.http.0) / seconds),
        );
        put(
            "http_errors",
            "5xx",
            ratio(now.http.1 - then.http.1, now.http.0 - then.http.0),
        );
    }
    out
}

/// One derived series: a value per sample, `NaN` where it had none.
struct Series {
    values: VecDeque<f32>,
    /// How many values are not `NaN`; at 0 the series is forgotten.
    present: usize,
}

/// The ring buffer and the sampler's state.
pub(crate) struct History {
    /// Unix time of each sample, in milliseconds.
    times: VecDeque<u64>,
    series: BTreeMap<(&'static str, String), Series>,
    /// Raw samples every [`RAW_EVERY_MS`], the oldest one rates are
    /// computed against.
    window: VecDeque<(u64, Raw)>,
    /// The latest raw sample, for the totals.
    last: Option<(u64, Raw)>,
    /// Values of new series not recorded because of [`MAX_SERIES`].
    refused: u64,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history.
    pub(crate) fn new() -> History {
        History {
            times: VecDeque::with_capacity(CAPACITY),
            series: BTreeMap::new(),
            window: VecDeque::with_capacity(RAW_KEPT + 1),
            last: None,
            refused: 0,
        }
    }

    /// Samples `registry` once, at `unix_ms`.
    #[cfg(test)]
    pub(crate) fn sample(&mut self, registry: &prometheus::Registry, unix_ms: u64) {
        self.record(&registry.gather(), unix_ms);
    }

    fn record(&mut self, families: &[MetricFamily], unix_ms: u64) {
        let raw = Raw::from_families(families);
        let derived = match self.window.front() {
            Some((at, then)) => derive(&raw, then, unix_ms.saturating_sub(*at) as f64 / 1000.0),
            None => derive(&raw, &Raw::default(), 0.0),
        };
        if self
            .window
            .back()
            .is_none_or(|(at, _)| unix_ms.saturating_sub(*at) >= RAW_EVERY_MS)
        {
            self.window.push_back((unix_ms, raw.clone()));
            if self.window.len() > RAW_KEPT {
                self.window.pop_front();
            }
        }
        self.last = Some((unix_ms, raw));

        if self.times.len() == CAPACITY {
            self.times.pop_front();
            self.series.retain(|_, s| {
                if s.values.pop_front().is_some_and(|v| !v.is_nan()) {
                    s.present -= 1;
                }
                s.present > 0
            });
        }
        let len = self.times.len();
        self.times.push_back(unix_ms);
        for (key, value) in derived {
            if !self.series.contains_key(&key) {
                if self.series.len() >= MAX_SERIES {
                    self.refused += 1;
                    continue;
                }
                let mut values = VecDeque::with_capacity(CAPACITY);
                values.resize(len, f32::NAN);
                self.series
                    .insert(key.clone(), Series { values, present: 0 });
            }
            if let Some(s) = self.series.get_mut(&key) {
                s.values.push_back(value as f32);
                s.present += 1;
            }
        }
        for s in self.series.values_mut() {
            if s.values.len() < len + 1 {
                s.values.push_back(f32::NAN);
            }
        }
    }

    /// Bytes held: `times` capacity × 8, every series' capacity × 4 plus its
    /// key and bookkeeping, and the raw aggregates kept. The formula behind
    /// the bound in the module documentation.
    #[cfg(test)]
    pub(crate) fn memory_bytes(&self) -> usize {
        let series: usize = self
            .series
            .iter()
            .map(|(k, s)| {
                s.values.capacity() * 4
                    + k.1.capacity()
                    + std::mem::size_of::<((&str, String), Series)>()
            })
            .sum();
        let raws: usize = self
            .window
            .iter()
            .chain(self.last.as_ref())
            .map(|(_, r)| r.bytes())
            .sum();
        self.times.capacity() * 8 + series + raws + std::mem::size_of::<Self>()
    }

    /// Number of series held.
    #[cfg(test)]
    pub(crate) fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The history as the page reads it, each series reduced to at most
    /// [`MAX_POINTS`] points.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let n = self.times.len();
        let step = n.div_ceil(MAX_POINTS).max(1);
        let times: Vec<u64> = self
            .times
            .iter()
            .copied()
            .collect::<Vec<_>>()
            .chunks(step)
            .filter_map(|c| c.last().copied())
            .collect();
        let charts = CHARTS
            .iter()
            .map(|chart| {
                let series = self
                    .series
                    .range((chart.id, String::new())..)
                    .take_while(|((id, _), _)| *id == chart.id)
                    .map(|((_, name), s)| {
                        let values: Vec<f32> = s.values.iter().copied().collect();
                        let points = values
                            .chunks(step)
                            .map(|c| {
                                let (sum, k) = c
                                    .iter()
                                    .filter(|v| !v.is_nan())
                                    .fold((0.0f64, 0u32), |(s, k), v| (s + f64::from(*v), k + 1));
                                (k > 0).then(|| sum / f64::from(k))
                            })
                            .collect();
                        let latest = values
                            .iter()
                            .rev()
                            .find(|v| !v.is_nan())
                            .map(|v| f64::from(*v));
                        SeriesSnapshot {
                            name: name.clone(),
                            points,
                            latest,
                        }
                    })
                    .collect();
                ChartSnapshot {
                    id: chart.id,
                    title: chart.title,
                    unit: chart.unit,
                    series,
                }
            })
            .collect();
        let last = self.last.as_ref();
        let raw = last.map(|(_, r)| r.clone()).unwrap_or_default();
        Snapshot {
            interval_s: INTERVAL.as_secs(),
            capacity: CAPACITY,
            max_series: MAX_SERIES,
            samples: n,
            refused_values: self.refused,
            times,
            charts,
            totals: Totals {
                at: last.map(|(t, _)| *t),
                builds: raw.builds.values().map(|b| b.1).sum(),
                model_calls: raw.model_calls,
                tokens: raw.tokens.values().sum(),
                http_requests: raw.http.0,
                dropped: raw.dropped,
            },
        }
    }
}

/// What `/api/status/history` answers (with the readiness added).
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    /// Seconds between samples.
    pub interval_s: u64,
    /// Samples kept per series.
    pub capacity: usize,
    /// Most series kept.
    pub max_series: usize,
    /// Samples taken and still held.
    pub samples: usize,
    /// Values of new series not recorded because [`MAX_SERIES`] was reached.
    pub refused_values: u64,
    /// Unix time in ms of each point.
    pub times: Vec<u64>,
    /// Every chart, in page order.
    pub charts: Vec<ChartSnapshot>,
    /// Cumulative counters at the last sample.
    pub totals: Totals,
}

/// One chart's series.
#[derive(Debug, Serialize)]
pub(crate) struct ChartSnapshot {
    /// Stable id (the page's `data-chart`).
    pub id: &'static str,
    /// Title shown above the chart.
    pub title: &'static str,
    /// Unit of the y axis.
    pub unit: &'static str,
    /// Its series; empty means no data yet.
    pub series: Vec<SeriesSnapshot>,
}

/// One series of a chart.
#[derive(Debug, Serialize)]
pub(crate) struct SeriesSnapshot {
    /// Legend name (chain, model, quantile).
    pub name: String,
    /// One value per entry of [`Snapshot::times`], `null` where none.
    pub points: Vec<Option<f64>>,
    /// The most recent value sampled.
    pub latest: Option<f64>,
}

/// Cumulative counters as of the last sample, for the page's totals and
/// exporter panel.
#[derive(Debug, Serialize)]
pub(crate) struct Totals {
    /// Unix time in ms of the sample, `None` before the first.
    pub at: Option<u64>,
    /// Finished builds.
    pub builds: f64,
    /// Finished model calls.
    pub model_calls: f64,
    /// Tokens used.
    pub tokens: f64,
    /// HTTP requests answered.
    pub http_requests: f64,
    /// Items dropped, by sink.
    pub dropped: BTreeMap<String, f64>,
}

static HISTORY: LazyLock<Mutex<History>> = LazyLock::new(|| Mutex::new(History::new()));
static SAMPLER: Mutex<Option<tokio::task::JoinHandle<()>>> = Mutex::new(None);

/// Starts the process-wide sampler if it is not running and a tokio runtime
/// is current; returns whether it runs. Idempotent and cheap.
pub(crate) fn start() -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let mut sampler = SAMPLER.lock().unwrap_or_else(PoisonError::into_inner);
    // A sampler whose runtime ended (e.g. a test's) is restarted here.
    if sampler.as_ref().is_some_and(|h| !h.is_finished()) {
        return true;
    }
    *sampler = Some(runtime.spawn(async {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let families = crate::metrics::registry().gather();
            HISTORY
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(
                    &families,
                    u64::try_from(crate::util::unix_ms()).unwrap_or(0),
                );
        }
    }));
    true
}

/// The process-wide history, as [`History::snapshot`] gives it.
pub(crate) fn snapshot() -> Snapshot {
    HISTORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .snapshot()
}

#[cfg(test)]
mod tests {
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
    fn an_empty_registry_gives_charts_without_series() {
        let mut h = History::new();
        h.sample(&Registry::new(), 1_000);
        let snap = h.snapshot();
        assert_eq!(snap.samples, 1);
        assert!(snap.charts.iter().all(|c| c.series.is_empty()));
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
}
