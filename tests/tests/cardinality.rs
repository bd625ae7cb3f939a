//! The cardinality guard. Its own test binary: the limit is process-wide.

mod common;

use common::*;
use hyperkit_obs::track_build;

#[track_build(chain)]
fn build(chain: &str) {}

#[test]
fn values_past_the_limit_are_recorded_as_overflow_and_counted() {
    hyperkit_obs::metrics::set_max_label_values(5);
    for i in 0..5 {
        build(&format!("chain-{i}"));
    }
    for i in 5..12 {
        build(&format!("chain-{i}"));
    }
    build("chain-0");

    assert_eq!(
        builds("chain-0", "success"),
        2,
        "admitted values keep working"
    );
    assert_eq!(builds("chain-4", "success"), 1);
    assert_eq!(builds("chain-5", "success"), 0, "no series past the limit");
    assert_eq!(builds(hyperkit_obs::OVERFLOW_VALUE, "success"), 7);
    assert_eq!(
        counter(
            "hyperkit_obs_label_overflow_total",
            &[("metric", "hyperkit_builds_total"), ("label", "chain")]
        ),
        7
    );
    let series = hyperkit_obs::registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == "hyperkit_build_duration_seconds")
        .unwrap()
        .get_metric()
        .len();
    assert_eq!(series, 6, "five admitted chains plus __overflow__");
}
