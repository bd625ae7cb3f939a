//! The status page's data as `/api/status/history` answers it: every
//! chart in page order, each series reduced to at most [`MAX_POINTS`]
//! points, and the totals of the last sample. It is what a request copies
//! out under the history's lock: bounded work over the ring, no I/O and no
//! waiting.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{CAPACITY, History, INTERVAL, MAX_POINTS, MAX_SERIES};

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
        id: "model_spend",
        title: "Model spend per hour by model",
        unit: "USD/h",
    },
    Chart {
        id: "domain_calls_per_min",
        title: "Calls per minute of your own domains",
        unit: "calls/min",
    },
    Chart {
        id: "domain_success",
        title: "Success rate of your own domains",
        unit: "%",
    },
    Chart {
        id: "domain_duration",
        title: "Duration p95 of your own domains",
        unit: "s",
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

impl History {
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
            .filter(|chart| {
                // The charts of a program's own domains only when it has some.
                !chart.id.starts_with("domain_")
                    || self
                        .series
                        .range((chart.id, String::new())..)
                        .next()
                        .is_some_and(|((id, _), _)| *id == chart.id)
            })
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
                cost_usd: raw.cost.values().sum(),
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
    /// What model calls cost, in USD.
    pub cost_usd: f64,
    /// HTTP requests answered.
    pub http_requests: f64,
    /// Items dropped, by sink.
    pub dropped: BTreeMap<String, f64>,
}
