//! From the registry to the page's series: one gather aggregated into the
//! cumulative sums the charts need ([`Raw`]), and the values derived from
//! two of them (rates, ratios, quantiles). Pure functions of their input:
//! no lock, no clock, and a value that is not finite is left out rather
//! than drawn.

use std::collections::BTreeMap;

use prometheus::proto::MetricFamily;

/// Cumulative values of one sample, aggregated from the registry.
#[derive(Clone, Debug, Default)]
pub(super) struct Raw {
    /// chain -> (successful, all) finished builds.
    pub(super) builds: BTreeMap<String, (f64, f64)>,
    /// Build duration buckets over every chain: (upper bound, cumulative).
    pub(super) build_buckets: Vec<(f64, f64)>,
    pub(super) active: BTreeMap<String, f64>,
    pub(super) model_calls: f64,
    /// model -> latency buckets.
    pub(super) model_buckets: BTreeMap<String, Vec<(f64, f64)>>,
    /// model -> (accepted, judged).
    pub(super) acceptance: BTreeMap<String, (f64, f64)>,
    /// type -> tokens.
    pub(super) tokens: BTreeMap<String, f64>,
    /// model -> USD spent.
    pub(super) cost: BTreeMap<String, f64>,
    /// (all, 5xx) HTTP requests.
    pub(super) http: (f64, f64),
    /// sink -> dropped items.
    pub(super) dropped: BTreeMap<String, f64>,
    /// A program's own domains: name -> calls and durations.
    pub(super) domains: BTreeMap<String, DomainRaw>,
}

/// The cumulative sums of one domain of the program's own.
#[derive(Clone, Debug, Default)]
pub(super) struct DomainRaw {
    /// Calls that finished successfully.
    pub(super) ok: f64,
    /// Calls that finished.
    pub(super) all: f64,
    /// Duration buckets over every label set: (upper bound, cumulative).
    pub(super) buckets: Vec<(f64, f64)>,
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
    pub(super) fn bytes(&self) -> usize {
        const NODE: usize = 48;
        fn keys<V>(m: &BTreeMap<String, V>) -> usize {
            m.keys().map(|k| k.capacity() + NODE).sum()
        }
        std::mem::size_of::<Raw>()
            + keys(&self.builds)
            + keys(&self.active)
            + keys(&self.acceptance)
            + keys(&self.tokens)
            + keys(&self.cost)
            + keys(&self.dropped)
            + self
                .domains
                .iter()
                .map(|(k, v)| k.capacity() + NODE + v.buckets.capacity() * 16)
                .sum::<usize>()
            + self.build_buckets.capacity() * 16
            + self
                .model_buckets
                .iter()
                .map(|(k, v)| k.capacity() + NODE + v.capacity() * 16)
                .sum::<usize>()
    }

    pub(super) fn from_families(families: &[MetricFamily]) -> Raw {
        let domains = crate::metrics::user_domains();
        Raw::from_families_of(families, &domains)
    }

    /// As [`from_families`](Self::from_families), with the program's own
    /// domains given.
    pub(super) fn from_families_of(
        families: &[MetricFamily],
        domains: &[&'static crate::metrics::DomainSpec],
    ) -> Raw {
        let mut raw = Raw::default();
        for f in families {
            if let Some(d) = domains.iter().find(|d| d.calls_total() == f.name()) {
                let e = raw.domains.entry(d.name().to_owned()).or_default();
                for m in f.get_metric() {
                    let n = m.get_counter().get_value();
                    e.all += n;
                    if label(m, "status") == "success" {
                        e.ok += n;
                    }
                }
                continue;
            }
            if let Some(d) = domains.iter().find(|d| d.duration_seconds() == f.name()) {
                let e = raw.domains.entry(d.name().to_owned()).or_default();
                for m in f.get_metric() {
                    add_buckets(&mut e.buckets, m.get_histogram());
                }
                continue;
            }
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
                    "hyperkit_model_cost_usd_total" => {
                        *raw.cost.entry(label(m, "model").to_owned()).or_default() += counter;
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
pub(super) fn derive(now: &Raw, then: &Raw, seconds: f64) -> Vec<((&'static str, String), f64)> {
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
    for (model, &usd) in &now.cost {
        let usd0 = then.cost.get(model).copied().unwrap_or_default();
        put("model_spend", model, Some((usd - usd0) * 3600.0 / seconds));
    }
    for (domain, d) in &now.domains {
        let before = then.domains.get(domain);
        let (ok0, all0) = before.map_or((0.0, 0.0), |b| (b.ok, b.all));
        put(
            "domain_calls_per_min",
            domain,
            Some((d.all - all0) * 60.0 / seconds),
        );
        put("domain_success", domain, ratio(d.ok - ok0, d.all - all0));
        let buckets0 = before.map_or(&[][..], |b| b.buckets.as_slice());
        put(
            "domain_duration",
            &format!("{domain} p95"),
            quantile(&d.buckets, buckets0, 0.95),
        );
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
