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
//!
//! This module holds the ring and the sampler; `derive` aggregates the
//! registry and computes the derived values, `snapshot` is the JSON answer
//! the page reads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus::proto::MetricFamily;

mod derive;
mod snapshot;
#[cfg(test)]
mod tests;

use derive::{Raw, derive};
pub(crate) use snapshot::Snapshot;

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
    fn sample(&mut self, registry: &prometheus::Registry, unix_ms: u64) {
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
    fn memory_bytes(&self) -> usize {
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
    fn series_count(&self) -> usize {
        self.series.len()
    }
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
