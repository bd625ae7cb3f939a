//! The cardinality guard. Its own test binary: the limits are process-wide,
//! so each test sets the ones it needs and the tests run one at a time.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hyperkit_obs::metrics::{set_max_label_sets, set_max_label_values};
use hyperkit_obs::{OVERFLOW_VALUE, track_build, track_model, track_query};
use test_support::metrics::{builds, counter};

#[track_build(chain)]
fn build(chain: &str) {}

#[track_model(model, task)]
fn complete(model: &str, task: &str) {}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resident memory of this process, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[test]
fn a_family_keeps_at_most_its_label_sets_counts_every_call_once_and_keeps_fixed_labels() {
    let _one = serial();
    set_max_label_values(1000);
    set_max_label_sets(10_000);
    let models: Vec<String> = (0..1000).map(|i| format!("model-{i}")).collect();
    let tasks: Vec<String> = (0..1000).map(|j| format!("task-{j}")).collect();
    let before = resident_bytes();
    let started = Instant::now();
    for model in &models {
        for task in &tasks {
            complete(model, task);
        }
    }
    let took = started.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    eprintln!(
        "1,000,000 calls over 1,000 x 1,000 pairs in {took:?}; resident memory grew by {} MiB",
        grown >> 20
    );

    let families = hyperkit_obs::registry().gather();
    let calls = families
        .iter()
        .find(|f| f.name() == "hyperkit_model_calls_total")
        .expect("the calls family");
    let label = |m: &hyperkit_obs::prometheus::proto::Metric, name: &str| {
        m.get_label()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value().to_owned())
            .unwrap_or_default()
    };
    let successes: Vec<_> = calls
        .get_metric()
        .iter()
        .filter(|m| label(m, "status") == "success")
        .collect();
    assert_eq!(
        successes.len(),
        10_001,
        "10,000 admitted (model, task) pairs and the overflow pair"
    );
    let total: f64 = successes.iter().map(|m| m.get_counter().get_value()).sum();
    assert_eq!(total, 1_000_000.0, "every call counted exactly once");
    let overflow = successes
        .iter()
        .find(|m| label(m, "model") == OVERFLOW_VALUE && label(m, "task") == OVERFLOW_VALUE)
        .expect("the overflow pair");
    assert_eq!(overflow.get_counter().get_value(), 990_000.0);
    assert_eq!(
        counter(
            "hyperkit_obs_label_overflow_total",
            &[("metric", "hyperkit_model_calls_total"), ("label", "*")]
        ),
        990_000
    );
    // About 2 KiB a label set for its eight series: far from the millions
    // an unbounded family would hold.
    assert!(
        grown < 128 << 20,
        "resident memory grew by {} MiB for 10,001 label sets",
        grown >> 20
    );

    only_runtime_labels_become_overflow();
}

#[test]
fn values_past_the_limit_are_recorded_as_overflow_and_counted() {
    let _one = serial();
    // The other test may have run first and left its `fixed-chain` build:
    // a value the limit counts too. Five more than there are.
    let before = build_series();
    set_max_label_sets(10_000);
    set_max_label_values(5 + before);
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
    assert_eq!(
        build_series(),
        before + 6,
        "five admitted chains plus __overflow__"
    );
}

/// The series of `hyperkit_build_duration_seconds`: one per chain value.
fn build_series() -> usize {
    hyperkit_obs::registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == "hyperkit_build_duration_seconds")
        .map_or(0, |f| f.get_metric().len())
}

#[track_build(chain = "fixed-chain")]
fn fixed_build() {}

#[derive(Clone, Copy, hyperkit_obs::LabelValue)]
enum Tier {
    Free,
    Paid,
}

#[track_query(operation = op, db = "postgres")]
fn query(op: &str) {}

#[track_model(model = tier, task)]
fn tiered(tier: Tier, task: &str) {}

/// Past the family's limit, labels with a fixed set of values keep theirs;
/// only those fed at run time become `__overflow__`.
fn only_runtime_labels_become_overflow() {
    // The family is process-wide: three more sets than it holds now.
    let existing = hyperkit_obs::registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == "hyperkit_model_calls_total")
        .map_or(0, |f| {
            f.get_metric()
                .iter()
                .filter(|m| m.get_label().iter().any(|l| l.value() == "success"))
                .count()
        });
    set_max_label_sets(existing + 3);
    // (and room for new values per label: this is the family's limit)
    set_max_label_values(10_000);
    for task in ["t-1", "t-2", "t-3", "t-4", "t-5"] {
        tiered(Tier::Free, task);
        tiered(Tier::Paid, task);
    }
    let calls = |model: &str, task: &str| {
        counter(
            "hyperkit_model_calls_total",
            &[("model", model), ("task", task), ("status", "success")],
        )
    };
    // Three tuples fit; the rest keep their enum label and share one
    // overflow task per tier.
    assert_eq!(calls("free", "t-1"), 1);
    assert_eq!(calls("paid", "t-1"), 1);
    assert_eq!(calls("free", "t-2"), 1);
    assert_eq!(calls("paid", "t-2"), 0);
    assert_eq!(calls("free", OVERFLOW_VALUE), 3);
    assert_eq!(calls("paid", OVERFLOW_VALUE), 4);
    assert_eq!(
        calls(OVERFLOW_VALUE, "t-3"),
        0,
        "an enum label never overflows"
    );
    // A function whose labels are all fixed is never refused a set.
    fixed_build();
    assert_eq!(builds("fixed-chain", "success"), 1);
    set_max_label_sets(10_000);
    query("select");
    assert_eq!(
        counter(
            "hyperkit_db_queries_total",
            &[("operation", "select"), ("status", "success")]
        ),
        1
    );
}
