//! The metric families of one tracked domain: `<prefix>_calls_total{status,
//! <labels>}`, `<prefix>_duration_seconds{<labels>}` and, unless turned off,
//! `<prefix>_in_flight{<labels>}`, fed by every function tracked under the
//! domain. `#[derive(Domain)]` declares one [`DomainSpec`] and one
//! [`DomainMetrics`] per domain as statics; the built-in domains (builds,
//! model calls, queries) are declared the same way with the seed's names.
//!
//! A domain registers its families in the process-wide registry when its
//! first label set is made. A name that clashes with a family already
//! registered is warned about once and its calls are still counted (and
//! reach every sink); it never panics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus::IntCounter;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use super::cells::{Cells, Snapshot};
use super::exemplars::{Exemplar, Exemplars, Slots};
use super::label_sets::{Entry, LabelSets};
use super::render::Format;

/// The statuses, in the order of the cells' finished counters.
const STATUSES: [&str; 4] = ["success", "failure", "panic", "cancelled"];

/// What a domain is: its name, labels, metric names, help texts and
/// histogram buckets. Made by `#[derive(Domain)]`.
#[derive(Debug)]
pub struct DomainSpec {
    name: &'static str,
    labels: &'static [&'static str],
    calls: &'static str,
    calls_help: &'static str,
    duration: &'static str,
    duration_help: &'static str,
    buckets: &'static [f64],
    in_flight: Option<(&'static str, &'static str)>,
    status_last: bool,
    model: bool,
}

/// The parts of a [`DomainSpec`], as the derive writes them. Not a public
/// API.
#[doc(hidden)]
pub struct SpecParts {
    pub name: &'static str,
    pub labels: &'static [&'static str],
    pub calls: &'static str,
    pub calls_help: &'static str,
    pub duration: &'static str,
    pub duration_help: &'static str,
    pub buckets: &'static [f64],
    pub in_flight: Option<(&'static str, &'static str)>,
    /// `status` is the counter's last label (the built-in model and query
    /// families), not its first.
    pub status_last: bool,
    /// The built-in model domain: tokens, acceptance and call ids too.
    pub model: bool,
}

impl DomainSpec {
    /// A spec from its parts; the derive has checked every name.
    #[doc(hidden)]
    pub const fn from_parts(p: SpecParts) -> Self {
        DomainSpec {
            name: p.name,
            labels: p.labels,
            calls: p.calls,
            calls_help: p.calls_help,
            duration: p.duration,
            duration_help: p.duration_help,
            buckets: p.buckets,
            in_flight: p.in_flight,
            status_last: p.status_last,
            model: p.model,
        }
    }

    /// The domain's name, as sinks see it in
    /// [`FinishedCall::domain`](crate::calls::FinishedCall::domain):
    /// `build`, `model`, `query`, or the snake-case name of a derived
    /// domain's struct.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The label names, in the order of the struct's fields.
    pub fn labels(&self) -> &'static [&'static str] {
        self.labels
    }

    /// The name of the calls counter (`<prefix>_calls_total`).
    pub fn calls_total(&self) -> &'static str {
        self.calls
    }

    /// The name of the duration histogram (`<prefix>_duration_seconds`).
    pub fn duration_seconds(&self) -> &'static str {
        self.duration
    }

    /// The name of the in-flight gauge, unless the domain has none.
    pub fn in_flight(&self) -> Option<&'static str> {
        self.in_flight.map(|(name, _)| name)
    }

    /// The histogram's upper bounds, in seconds.
    pub fn buckets(&self) -> &'static [f64] {
        self.buckets
    }
}

/// The counters only model calls have: tokens by type and acceptance.
pub(crate) struct ModelCounters {
    pub(crate) input_tokens: IntCounter,
    pub(crate) output_tokens: IntCounter,
    /// Indexed by `accepted as usize`.
    pub(crate) acceptance: [IntCounter; 2],
    /// The label set's price, and its cost and unpriced counters.
    pub(crate) pricing: crate::prices::Pricing,
    /// Time to the first item of a streamed call.
    pub(crate) time_to_first_token: super::DurationHistogram,
}

impl ModelCounters {
    fn new(values: &[&str]) -> Self {
        let f = &*super::FAMILIES;
        let (model, task) = (
            values.first().copied().unwrap_or(""),
            values.get(1).copied().unwrap_or(""),
        );
        ModelCounters {
            input_tokens: f.model_tokens_total.child(&[model, task, "input"]),
            output_tokens: f.model_tokens_total.child(&[model, task, "output"]),
            acceptance: ["false", "true"]
                .map(|a| f.model_acceptance_total.child(&[model, task, a])),
            pricing: crate::prices::Pricing::new(model, task),
            time_to_first_token: f.model_time_to_first_token.child(&[model, task]),
        }
    }
}

/// The metrics of one label set of a domain.
pub struct DomainHandles {
    metrics: &'static DomainMetrics,
    pub(crate) cells: Cells,
    pub(crate) model: Option<ModelCounters>,
    /// `name="value",…` of this label set, escaped, for the exposition.
    label_text: Box<str>,
    /// Whether calls raise the in-flight gauge (the spec's, kept here: one
    /// load on a call's path instead of three).
    in_flight: bool,
    /// The exemplars of sampled calls, made on the first one.
    exemplars: OnceLock<Box<Exemplars>>,
}

impl DomainHandles {
    /// The handles of one label set (sanitised values, in label order).
    /// Registers the domain's families on its first label set.
    #[doc(hidden)]
    pub fn new(metrics: &'static DomainMetrics, values: &[&str]) -> Self {
        metrics.register();
        DomainHandles {
            metrics,
            cells: Cells::new(metrics.bounds_ns()),
            model: metrics.spec.model.then(|| ModelCounters::new(values)),
            label_text: super::render::label_text(
                metrics.spec.labels.iter().copied(),
                values.iter().copied(),
            ),
            in_flight: metrics.spec.in_flight.is_some(),
            exemplars: OnceLock::new(),
        }
    }

    /// Records a sampled call as the exemplar of its bucket and of its
    /// status's counter.
    pub(crate) fn record_exemplar(
        &self,
        frame: crate::trace::Frame,
        status: usize,
        ns: u64,
        at: std::time::SystemTime,
    ) {
        let (Some(trace_id), Some(span_id)) = (frame.trace_id(), frame.span_id()) else {
            return;
        };
        let bounds = self.metrics.bounds_ns();
        let exemplars = self
            .exemplars
            .get_or_init(|| Box::new(Exemplars::new(bounds.len() + 1)));
        let bucket = bounds.iter().position(|b| ns <= *b).unwrap_or(bounds.len());
        exemplars.offer(
            bucket,
            status,
            Exemplar {
                trace_id,
                span_id,
                value_ns: ns,
                at,
            },
        );
    }

    /// The exemplars of this label set, if a sampled call has made any.
    pub(crate) fn exemplars(&self) -> Option<Slots> {
        self.exemplars.get().map(|e| e.snapshot())
    }

    /// The domain these handles belong to.
    pub(crate) fn spec(&self) -> &'static DomainSpec {
        self.metrics.spec
    }

    /// Whether calls raise the in-flight gauge.
    #[inline(always)]
    pub(crate) fn counts_in_flight(&self) -> bool {
        self.in_flight
    }
}

/// Every label set of one domain, and its families as a collector.
pub struct DomainMetrics {
    spec: &'static DomainSpec,
    sets: LabelSets<DomainHandles>,
    bounds_ns: OnceLock<Box<[u64]>>,
    /// The `le="…"` label of each bucket, for the exposition.
    le: OnceLock<Vec<String>>,
    descs: OnceLock<Vec<Desc>>,
    registered: AtomicBool,
}

impl DomainMetrics {
    /// The metrics of `spec`'s domain; `make` builds one label set's
    /// handles (the derive writes it as a call of [`DomainHandles::new`]
    /// on this static).
    #[doc(hidden)]
    pub const fn new(spec: &'static DomainSpec, make: fn(&[&str]) -> DomainHandles) -> Self {
        DomainMetrics {
            spec,
            sets: LabelSets::new(spec.calls, spec.labels, make),
            bounds_ns: OnceLock::new(),
            le: OnceLock::new(),
            descs: OnceLock::new(),
            registered: AtomicBool::new(false),
        }
    }

    /// The domain's spec.
    pub fn spec(&self) -> &'static DomainSpec {
        self.spec
    }

    /// The label sets, for resolving a call's labels.
    #[doc(hidden)]
    pub fn sets(&'static self) -> &'static LabelSets<DomainHandles> {
        &self.sets
    }

    fn bounds_ns(&'static self) -> &'static [u64] {
        self.bounds_ns.get_or_init(|| {
            self.spec
                .buckets
                .iter()
                .map(|s| {
                    Duration::try_from_secs_f64(*s).map_or(u64::MAX, |d| {
                        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
                    })
                })
                .collect()
        })
    }

    /// Registers the families once, in the process-wide registry.
    fn register(&'static self) {
        if self.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut names = LABEL_NAMES.write().unwrap_or_else(PoisonError::into_inner);
            for name in self.spec.labels {
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        DOMAINS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.spec);
        let registry = super::registry();
        use super::render::{Native, add};
        add(Native::DomainCalls(self));
        add(Native::DomainDuration(self));
        if self.spec.in_flight.is_some() {
            add(Native::DomainInFlight(self));
        }
        if let Err(e) = registry.register(Box::new(Registered(self))) {
            tracing::warn!(
                domain = self.spec.name,
                error = %e,
                "the metric families of domain `{}` could not be registered ({e}); its calls are still counted and reach every sink, but /metrics does not show them: give the domain another prefix",
                self.spec.name
            );
        }
    }

    fn descs(&self) -> &[Desc] {
        self.descs.get_or_init(|| {
            let labels = |status: bool| -> Vec<String> {
                let mut names: Vec<String> =
                    self.spec.labels.iter().map(|l| (*l).to_owned()).collect();
                if status {
                    if self.spec.status_last {
                        names.push("status".to_owned());
                    } else {
                        names.insert(0, "status".to_owned());
                    }
                }
                names
            };
            let mut families = vec![
                (self.spec.calls, self.spec.calls_help, labels(true)),
                (self.spec.duration, self.spec.duration_help, labels(false)),
            ];
            if let Some((name, help)) = self.spec.in_flight {
                families.push((name, help, labels(false)));
            }
            families
                .into_iter()
                .filter_map(|(name, help, labels)| {
                    Desc::new(name.to_owned(), help.to_owned(), labels, HashMap::new()).ok()
                })
                .collect()
        })
    }

    /// Every label set with its values and a snapshot of its cells, in the
    /// order the sets were made.
    pub(crate) fn snapshots(&'static self) -> Vec<(&'static Entry<DomainHandles>, Snapshot)> {
        self.sets
            .entries()
            .into_iter()
            .map(|e| (e, e.handles.cells.snapshot()))
            .collect()
    }

    fn families(&'static self) -> Vec<MetricFamily> {
        let sets = self.snapshots();
        let spec = self.spec;
        let pairs = |entry: &Entry<DomainHandles>, status: Option<&str>| -> Vec<LabelPair> {
            let mut pairs: Vec<LabelPair> = spec
                .labels
                .iter()
                .zip(entry.values())
                .map(|(name, value)| label_pair(name, value))
                .collect();
            if let Some(status) = status {
                let pair = label_pair("status", status);
                if spec.status_last {
                    pairs.push(pair);
                } else {
                    pairs.insert(0, pair);
                }
            }
            pairs
        };

        let mut calls = Vec::with_capacity(sets.len() * 4);
        let mut durations = Vec::with_capacity(sets.len());
        let mut in_flight = Vec::with_capacity(sets.len());
        for (entry, s) in &sets {
            for (status, n) in STATUSES.iter().zip(s.finished) {
                let mut c = proto::Counter::default();
                c.set_value(n as f64);
                let mut m = proto::Metric::default();
                m.set_label(pairs(entry, Some(status)));
                m.set_counter(c);
                calls.push(m);
            }
            let mut h = proto::Histogram::default();
            let mut cumulative = 0u64;
            let mut buckets = Vec::with_capacity(spec.buckets.len());
            for (bound, n) in spec.buckets.iter().zip(&s.buckets) {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
            h.set_bucket(buckets);
            h.set_sample_count(s.count());
            h.set_sample_sum(s.sum_ns as f64 / 1e9);
            let mut m = proto::Metric::default();
            m.set_label(pairs(entry, None));
            m.set_histogram(h);
            durations.push(m);
            if spec.in_flight.is_some() {
                let mut g = proto::Gauge::default();
                g.set_value(s.in_flight as f64);
                let mut m = proto::Metric::default();
                m.set_label(pairs(entry, None));
                m.set_gauge(g);
                in_flight.push(m);
            }
        }
        let family = |name: &str, help: &str, kind, metrics| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_owned());
            f.set_help(help.to_owned());
            f.set_field_type(kind);
            f.set_metric(metrics);
            f
        };
        let mut out = vec![
            family(spec.calls, spec.calls_help, MetricType::COUNTER, calls),
            family(
                spec.duration,
                spec.duration_help,
                MetricType::HISTOGRAM,
                durations,
            ),
        ];
        if let Some((name, help)) = spec.in_flight {
            out.push(family(name, help, MetricType::GAUGE, in_flight));
        }
        out
    }
}

/// The label names of every domain in use.
static LABEL_NAMES: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

/// Every domain that has recorded a call.
static DOMAINS: RwLock<Vec<&'static DomainSpec>> = RwLock::new(Vec::new());

/// The calls counters of the built-in domains: they have charts of their
/// own on the status page.
#[cfg(feature = "http")]
const BUILT_IN: [&str; 3] = [
    "hyperkit_builds_total",
    "hyperkit_model_calls_total",
    "hyperkit_db_queries_total",
];

/// The domains of the program's own (not the built-in ones) that have
/// recorded a call, for the status page.
#[cfg(feature = "http")]
pub(crate) fn user_domains() -> Vec<&'static DomainSpec> {
    DOMAINS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .filter(|d| !BUILT_IN.contains(&d.calls))
        .collect()
}

/// The label names of every domain that has recorded a call, for the
/// Sentry layer's fingerprints.
#[cfg(feature = "sentry")]
pub(crate) fn label_names() -> Vec<&'static str> {
    LABEL_NAMES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

impl DomainMetrics {
    /// `status="…",<labels>` or `<labels>,status="…"` of one label set.
    fn with_status(&self, out: &mut Vec<u8>, labels: &str, status: &str) {
        out.clear();
        let status_pair = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"status=\"");
            out.extend_from_slice(status.as_bytes());
            out.push(b'"');
        };
        if !self.spec.status_last {
            status_pair(out);
            if !labels.is_empty() {
                out.push(b',');
            }
        }
        out.extend_from_slice(labels.as_bytes());
        if self.spec.status_last {
            if !labels.is_empty() {
                out.push(b',');
            }
            status_pair(out);
        }
    }

    /// The calls counter, each status's sample with the exemplar of its
    /// last sampled call in OpenMetrics.
    pub(crate) fn write_calls(&'static self, out: &mut Vec<u8>, format: Format) {
        let sets = self.sets.entries();
        if sets.is_empty() {
            return;
        }
        let spec = self.spec;
        super::render::header(out, spec.calls, spec.calls_help, "counter", format);
        let mut labels = Vec::with_capacity(64);
        for entry in sets {
            let h = &entry.handles;
            let exemplars = match format {
                Format::OpenMetrics => h.exemplars(),
                Format::Text => None,
            };
            for (i, (status, n)) in STATUSES.iter().zip(h.cells.finished()).enumerate() {
                self.with_status(&mut labels, &h.label_text, status);
                super::render::line(out, spec.calls, "", &labels, "");
                crate::util::write_u64(out, n);
                if let Some(Some(e)) = exemplars.as_ref().map(|x| x.calls[i]) {
                    super::exemplars::write(out, &e, |out| out.push(b'1'));
                }
                out.push(b'\n');
            }
        }
    }

    /// The duration histogram, each bucket with the exemplar of its last
    /// sampled call in OpenMetrics.
    pub(crate) fn write_durations(&'static self, out: &mut Vec<u8>, format: Format) {
        let sets = self.sets.entries();
        if sets.is_empty() {
            return;
        }
        let spec = self.spec;
        let le = self
            .le
            .get_or_init(|| super::render::le_labels(spec.buckets));
        super::render::header(out, spec.duration, spec.duration_help, "histogram", format);
        let mut buckets = Vec::with_capacity(spec.buckets.len() + 1);
        for entry in sets {
            let h = &entry.handles;
            let exemplars = match format {
                Format::OpenMetrics => h.exemplars(),
                Format::Text => None,
            };
            let sum_ns = h.cells.histogram(&mut buckets);
            let count: u64 = buckets.iter().sum();
            let cumulative = buckets.iter().scan(0u64, |total, n| {
                *total += n;
                Some(*total)
            });
            super::render::histogram(
                out,
                spec.duration,
                h.label_text.as_bytes(),
                le,
                cumulative,
                count,
                exemplars.as_ref().map(|e| e.buckets.as_slice()),
                |out| super::render::seconds(out, sum_ns),
            );
        }
    }

    /// The in-flight gauge.
    pub(crate) fn write_in_flight(&'static self, out: &mut Vec<u8>, format: Format) {
        let Some((name, help)) = self.spec.in_flight else {
            return;
        };
        let sets = self.sets.entries();
        if sets.is_empty() {
            return;
        }
        super::render::header(out, name, help, "gauge", format);
        for entry in sets {
            let h = &entry.handles;
            super::render::sample(
                out,
                name,
                "",
                h.label_text.as_bytes(),
                "",
                h.cells.in_flight(),
            );
        }
    }
}

fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

/// Lets a `&'static DomainMetrics` be registered in a registry.
struct Registered(&'static DomainMetrics);

impl Collector for Registered {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs().iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if super::render::native_pass() {
            return Vec::new();
        }
        self.0.families()
    }
}
