//! Reading metrics back from the process-wide registry, as a user would.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use hyperkit_obs::prometheus::proto::{Metric, MetricFamily};

/// Waits for `condition`, checking it every 5 ms, at most `within`;
/// returns whether it held.
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait_until`], failing the test with `what` when `within` passes.
pub fn wait_for(what: &str, within: Duration, condition: impl FnMut() -> bool) {
    assert!(
        wait_until(within, condition),
        "timed out after {within:?} waiting for {what}"
    );
}

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
pub struct Never;

impl std::future::Future for Never {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }
}

/// Polls `fut` once with a no-op waker and returns it unfinished (or `None`
/// if it finished).
pub fn poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Option<F> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(&mut fut).poll(&mut cx) {
        std::task::Poll::Ready(_) => None,
        std::task::Poll::Pending => Some(fut),
    }
}
