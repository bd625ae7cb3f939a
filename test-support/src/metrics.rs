//! Reading metrics back from the process-wide registry, as a user would,
//! and futures that hold a tracked call open.
//!
//! The registry is shared by every test of a binary: a test reads series
//! only it touches (its own label values), or compares values before and
//! after.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use hyperkit_obs::prometheus::proto::{Metric, MetricFamily};

/// The metric of `family` whose labels are exactly `labels` (any order).
pub fn find(family: &str, labels: &[(&str, &str)]) -> Option<Metric> {
    let families: Vec<MetricFamily> = hyperkit_obs::registry().gather();
    let f = families.into_iter().find(|f| f.name() == family)?;
    f.get_metric()
        .iter()
        .find(|m| {
            let got = m.get_label();
            got.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| got.iter().any(|l| l.name() == *k && l.value() == *v))
        })
        .cloned()
}

/// A counter's value, 0 when the series does not exist yet.
pub fn counter(family: &str, labels: &[(&str, &str)]) -> u64 {
    find(family, labels).map_or(0, |m| m.get_counter().get_value() as u64)
}

/// The sum of the counters of `family` whose labels include `labels`
/// (others may be there too), 0 when there is none.
pub fn total(family: &str, labels: &[(&str, &str)]) -> f64 {
    hyperkit_obs::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            let got = m.get_label();
            labels
                .iter()
                .all(|(k, v)| got.iter().any(|l| l.name() == *k && l.value() == *v))
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// [`total`] as a whole number.
pub fn counter_total(family: &str, labels: &[(&str, &str)]) -> u64 {
    total(family, labels) as u64
}

/// `hyperkit_obs_dropped_total` of `sink`.
pub fn dropped(sink: &str) -> u64 {
    counter_total("hyperkit_obs_dropped_total", &[("sink", sink)])
}

/// A histogram's sample count, 0 when the series does not exist yet.
pub fn histogram_count(family: &str, labels: &[(&str, &str)]) -> u64 {
    find(family, labels).map_or(0, |m| m.get_histogram().get_sample_count())
}

/// A histogram's sample sum.
pub fn histogram_sum(family: &str, labels: &[(&str, &str)]) -> f64 {
    find(family, labels).map_or(0.0, |m| m.get_histogram().get_sample_sum())
}

/// A gauge's value, 0 when the series does not exist yet.
pub fn gauge(family: &str, labels: &[(&str, &str)]) -> i64 {
    find(family, labels).map_or(0, |m| m.get_gauge().get_value() as i64)
}

/// `hyperkit_builds_total` for `chain` and `status`.
pub fn builds(chain: &str, status: &str) -> u64 {
    counter(
        "hyperkit_builds_total",
        &[("chain", chain), ("status", status)],
    )
}

/// `hyperkit_build_duration_seconds` sample count for `chain`.
pub fn build_durations(chain: &str) -> u64 {
    histogram_count("hyperkit_build_duration_seconds", &[("chain", chain)])
}

/// `hyperkit_active_builds` for `chain`.
pub fn active(chain: &str) -> i64 {
    gauge("hyperkit_active_builds", &[("chain", chain)])
}

/// A future that is pending forever, to hold a call open.
#[derive(Debug)]
pub struct Never;

impl Future for Never {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// Polls `fut` once with a no-op waker and returns it unfinished (or `None`
/// if it finished).
pub fn poll_once<F: Future + Unpin>(mut fut: F) -> Option<F> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut fut).poll(&mut cx) {
        Poll::Ready(_) => None,
        Poll::Pending => Some(fut),
    }
}
