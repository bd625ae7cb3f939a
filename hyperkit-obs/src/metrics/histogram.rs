//! A histogram of durations, cheaper to observe than `prometheus::Histogram`.
//!
//! An observation is two relaxed atomic additions: its bucket, and the sum in
//! integer nanoseconds (no compare-and-swap loop on an `f64`). The count is
//! not stored separately but derived from the buckets at collection, so the
//! exported count always equals the `+Inf` bucket. Observing never allocates,
//! locks or panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::core::Metric;
use prometheus::proto;

struct Core {
    /// Upper bounds (`le`) in seconds, as exported.
    bounds: Box<[f64]>,
    /// The same bounds in nanoseconds, for the observation path.
    bounds_ns: Box<[u64]>,
    /// Observations per bucket, not cumulative; the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// A histogram of durations with fixed bucket bounds in seconds.
#[derive(Clone)]
pub struct DurationHistogram(Arc<Core>);

impl DurationHistogram {
    /// A histogram with these upper bounds in seconds (increasing).
    pub fn new(bounds: &[f64]) -> Self {
        let bounds_ns = bounds
            .iter()
            .map(|s| Duration::try_from_secs_f64(*s).map_or(u64::MAX, duration_ns))
            .collect();
        DurationHistogram(Arc::new(Core {
            bounds: bounds.into(),
            bounds_ns,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }))
    }

    /// Records one duration.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let ns = duration_ns(d);
        let core = &*self.0;
        let i = core.bounds_ns.partition_point(|b| *b < ns);
        if let Some(bucket) = core.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        core.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of the observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The upper bounds, in seconds.
    pub(crate) fn bounds(&self) -> &[f64] {
        &self.0.bounds
    }

    /// The cumulative count at each bound, and the total (the `+Inf`
    /// bucket's).
    pub(crate) fn cumulative(&self) -> (Vec<u64>, u64) {
        let mut total = 0u64;
        let mut counts: Vec<u64> = self
            .0
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        // The last bucket is `+Inf`: its cumulative count is the total.
        counts.truncate(self.0.bounds.len());
        (counts, total)
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Metric for DurationHistogram {
    fn metric(&self) -> proto::Metric {
        let core = &*self.0;
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(core.bounds.len());
        for (bound, count) in core.bounds.iter().zip(core.buckets.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        let total = cumulative + core.buckets.last().map_or(0, |b| b.load(Ordering::Relaxed));
        let mut h = proto::Histogram::default();
        h.set_sample_count(total);
        h.set_sample_sum(self.sum_seconds());
        h.set_bucket(buckets);
        let mut m = proto::Metric::default();
        m.set_histogram(h);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive_and_count_matches_inf() {
        let h = DurationHistogram::new(&[0.5, 1.0]);
        for ms in [100, 500, 700, 1000, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let m = h.metric();
        let hist = m.get_histogram();
        let counts: Vec<u64> = hist
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(
            counts,
            vec![2, 4],
            "le=0.5 holds 100 and 500 ms; le=1 adds 700 and 1000 ms"
        );
        assert_eq!(hist.get_sample_count(), 5);
        assert!((hist.get_sample_sum() - 7.3).abs() < 1e-9);
    }
}
