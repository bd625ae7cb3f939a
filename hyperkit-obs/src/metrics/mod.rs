//! The process-wide registry and every metric family hyperkit-obs exports.
//!
//! Families are created once, on first use, and registered in [`registry()`],
//! which users may register their own collectors in too. Families with several
//! runtime labels are `Family` collectors keyed by the exact label tuple (see
//! `family.rs` for why `prometheus::*Vec` is not used).

mod cells;
pub(crate) use cells::Writer;
mod domain;
mod exemplars;
mod family;
mod histogram;
mod label_sets;
mod openmetrics;
mod render;

use std::sync::LazyLock;

use prometheus::proto::MetricType;
use prometheus::{IntCounter, IntGauge, Opts, Registry};

#[doc(hidden)]
pub use domain::SpecParts;
#[cfg(feature = "sentry")]
pub(crate) use domain::label_names;
#[cfg(feature = "http")]
pub(crate) use domain::user_domains;
pub use domain::{DomainHandles, DomainMetrics, DomainSpec};
pub(crate) use family::Family;
use family::Registered;
pub use histogram::DurationHistogram;
pub(crate) use label_sets::same_text;
pub use label_sets::{
    ALL_LABELS, DEFAULT_MAX_LABEL_SETS, DEFAULT_MAX_LABEL_VALUES, max_label_sets, max_label_values,
    set_max_label_sets, set_max_label_values,
};
#[doc(hidden)]
pub use label_sets::{Entry, LabelSets};

/// Buckets of `hyperkit_build_duration_seconds`: builds take tens of seconds
/// to minutes.
pub const BUILD_DURATION_BUCKETS: &[f64] = &[10.0, 30.0, 60.0, 90.0, 120.0, 180.0];

/// Buckets of `hyperkit_model_latency_seconds`: 50 ms to 2 minutes.
pub const MODEL_LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// Buckets of `hyperkit_http_request_duration_seconds`: 5 ms to 10 s.
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of `hyperkit_db_query_duration_seconds`: 0.5 ms to 10 s.
pub const QUERY_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of `hyperkit_model_time_to_first_token_seconds`: 10 ms (a cached
/// or local model's first token) to 60 s (a large model's queue or a long
/// reasoning phase before it writes anything), about three per decade so a
/// p50 or p95 from `histogram_quantile` is within a factor of 2.5.
pub const TIME_TO_FIRST_TOKEN_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

fn counter(name: &'static str, help: &'static str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help))
        .unwrap_or_else(|e| unreachable!("built-in counter {name}: {e}"))
}

fn gauge(name: &'static str, help: &'static str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help))
        .unwrap_or_else(|e| unreachable!("built-in gauge {name}: {e}"))
}

fn histogram(buckets: &[f64]) -> DurationHistogram {
    DurationHistogram::new(buckets)
}

/// Every family hyperkit-obs owns.
pub(crate) struct Families {
    pub(crate) model_tokens_total: Family<IntCounter>,
    pub(crate) model_acceptance_total: Family<IntCounter>,
    pub(crate) model_cost_usd_total: Family<crate::prices::UsdCounter>,
    pub(crate) model_unpriced_calls_total: Family<IntCounter>,
    pub(crate) model_time_to_first_token: Family<DurationHistogram>,
    pub(crate) model_score: Family<DurationHistogram>,
    pub(crate) model_score_out_of_range_total: Family<IntCounter>,
    pub(crate) http_requests_total: Family<IntCounter>,
    pub(crate) http_duration: Family<DurationHistogram>,
    pub(crate) http_in_flight: Family<IntGauge>,
    pub(crate) label_overflow_total: Family<IntCounter>,
    pub(crate) dropped_total: Family<IntCounter>,
}

pub(crate) static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    model_tokens_total: Family::new(
        "hyperkit_model_tokens_total",
        "Tokens used by tracked model calls, by model, task and type (input or output).",
        &["model", "task", "type"],
        MetricType::COUNTER,
        counter,
    ),
    model_acceptance_total: Family::new(
        "hyperkit_model_acceptance_total",
        "Model outputs whose acceptance is known, by model, task and accepted (true or false).",
        &["model", "task", "accepted"],
        MetricType::COUNTER,
        counter,
    ),
    model_cost_usd_total: Family::new(
        "hyperkit_model_cost_usd_total",
        "What tracked model calls cost in USD, by model and task, from the price table (HYPERKIT_MODEL_PRICES).",
        &["model", "task"],
        MetricType::COUNTER,
        |_, _| crate::prices::UsdCounter::default(),
    ),
    model_unpriced_calls_total: Family::new(
        "hyperkit_model_unpriced_calls_total",
        "Tracked model calls with token usage whose model has no price in the price table, by model.",
        &["model"],
        MetricType::COUNTER,
        counter,
    ),
    model_time_to_first_token: Family::new(
        "hyperkit_model_time_to_first_token_seconds",
        "Time from the start of a streamed model call to its first item in seconds, by model and task.",
        &["model", "task"],
        MetricType::HISTOGRAM,
        |_, _| histogram(TIME_TO_FIRST_TOKEN_BUCKETS),
    ),
    model_score: Family::new(
        "hyperkit_model_score",
        "Quality scores in [0, 1] of model outputs (record_score), by model, task and score.",
        &["model", "task", "score"],
        MetricType::HISTOGRAM,
        // A score in [0, 1] is observed as that many seconds: the same
        // histogram, exact to 1e-9.
        |_, _| histogram(crate::model::SCORE_BUCKETS),
    ),
    model_score_out_of_range_total: Family::new(
        "hyperkit_model_score_out_of_range_total",
        "Quality scores outside [0, 1] (record_score), not in hyperkit_model_score, by model, task and score.",
        &["model", "task", "score"],
        MetricType::COUNTER,
        counter,
    ),
    http_requests_total: Family::new(
        "hyperkit_http_requests_total",
        "HTTP requests answered, by method, route template and status code.",
        &["method", "route", "status"],
        MetricType::COUNTER,
        counter,
    ),
    http_duration: Family::new(
        "hyperkit_http_request_duration_seconds",
        "Time to answer HTTP requests in seconds, by method and route template.",
        &["method", "route"],
        MetricType::HISTOGRAM,
        |_, _| histogram(HTTP_DURATION_BUCKETS),
    ),
    http_in_flight: Family::new(
        "hyperkit_http_requests_in_flight",
        "HTTP requests being answered.",
        &[],
        MetricType::GAUGE,
        gauge,
    ),
    label_overflow_total: Family::new(
        "hyperkit_obs_label_overflow_total",
        "Observations recorded under __overflow__ because a label reached its limit of distinct values.",
        &["metric", "label"],
        MetricType::COUNTER,
        counter,
    ),
    dropped_total: Family::new(
        "hyperkit_obs_dropped_total",
        "Telemetry items dropped by an exporter (full queue or final delivery failure), by sink.",
        &["sink"],
        MetricType::COUNTER,
        counter,
    ),
});

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new();
    let f: &'static Families = &FAMILIES;
    let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
        Box::new(Registered(&f.model_tokens_total)),
        Box::new(Registered(&f.model_acceptance_total)),
        Box::new(Registered(&f.model_cost_usd_total)),
        Box::new(Registered(&f.model_unpriced_calls_total)),
        Box::new(Registered(&f.model_time_to_first_token)),
        Box::new(Registered(&f.model_score)),
        Box::new(Registered(&f.model_score_out_of_range_total)),
        Box::new(Registered(&f.http_requests_total)),
        Box::new(Registered(&f.http_duration)),
        Box::new(Registered(&f.http_in_flight)),
        Box::new(Registered(&f.label_overflow_total)),
        Box::new(Registered(&f.dropped_total)),
    ];
    {
        use render::{Native, add};
        for counters in [
            &f.model_tokens_total,
            &f.model_acceptance_total,
            &f.model_unpriced_calls_total,
            &f.model_score_out_of_range_total,
            &f.http_requests_total,
            &f.label_overflow_total,
            &f.dropped_total,
        ] {
            add(Native::Counters(counters));
        }
        add(Native::Usd(&f.model_cost_usd_total));
        add(Native::Durations(&f.model_time_to_first_token));
        add(Native::Durations(&f.model_score));
        add(Native::Durations(&f.http_duration));
        add(Native::Gauges(&f.http_in_flight));
    }
    #[cfg(target_os = "linux")]
    let collectors = {
        let mut c = collectors;
        c.push(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        c
    };
    for c in collectors {
        if let Err(e) = registry.register(c) {
            unreachable!("built-in families have distinct names: {e}");
        }
    }
    registry
});

/// The process-wide registry holding every hyperkit-obs metric.
///
/// Register your own metrics here to have them served beside ours:
///
/// ```
/// use hyperkit_obs::prometheus::IntCounter;
///
/// let retries = IntCounter::new("myapp_retries_total", "Retries of my app.").unwrap();
/// hyperkit_obs::registry().register(Box::new(retries.clone())).unwrap();
/// retries.inc();
/// assert!(hyperkit_obs::registry().gather().iter().any(|f| f.name() == "myapp_retries_total"));
/// ```
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// The content type of the Prometheus text format [`render`] writes.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub use openmetrics::{OPENMETRICS_CONTENT_TYPE, prefers_openmetrics};
pub use render::{render, render_openmetrics};

/// Counts `n` telemetry items dropped by `sink` in
/// `hyperkit_obs_dropped_total{sink}`. Exporters call it; it never blocks for
/// long and never panics.
pub fn record_dropped(sink: &str, n: u64) {
    dropped_counter(sink).inc_by(n);
}

/// The `hyperkit_obs_dropped_total{sink}` counter of `sink`, resolved once
/// by a sink that counts often.
pub(crate) fn dropped_counter(sink: &str) -> IntCounter {
    FAMILIES
        .dropped_total
        .child(&[&crate::label::sanitize(sink)])
}

pub(crate) fn label_overflow(metric: &'static str, label: &'static str) {
    FAMILIES.label_overflow_total.child(&[metric, label]).inc();
}
