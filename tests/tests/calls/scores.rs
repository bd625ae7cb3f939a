//! `record_score`: a score in [0, 1] lands in `hyperkit_model_score`'s
//! buckets (ten of width 0.1, inclusive upper bounds), one outside the
//! range is counted apart, a name MLflow would refuse (or one a call's run
//! already carries) and a value that is not finite are refused with a typed
//! error before anything is recorded, every accepted score reaches the
//! sinks as feedback, and distinct score names stop at the cardinality
//! guard's limit.

use std::sync::{Arc, Mutex};

use hyperkit_obs::calls::{self, CallSink, Feedback, FinishedCall};
use hyperkit_obs::model::{CallId, ScoreError, current_call_id, record_score};
use hyperkit_obs::track_model;
use test_support::metrics::{counter, find};

#[track_model(model, task = "scores-test")]
fn scored(model: &str) -> CallId {
    current_call_id().expect("a model call has an id")
}

/// The scores sinks hear of, for this test's task.
#[derive(Default)]
struct Heard(Mutex<Vec<(String, f64)>>);

impl CallSink for Heard {
    fn on_call(&self, _: &FinishedCall<'_>) {}
    fn on_feedback(&self, feedback: &Feedback) {
        if let Feedback::Score {
            call, name, value, ..
        } = feedback
            && call.task() == "scores-test"
        {
            self.0.lock().unwrap().push((name.clone(), *value));
        }
    }
}

fn bucket(score: &str, le: &str) -> u64 {
    let m = find(
        "hyperkit_model_score",
        &[
            ("model", "judge-me"),
            ("task", "scores-test"),
            ("score", score),
        ],
    )
    .expect("the score's series");
    let h = m.get_histogram();
    h.get_bucket()
        .iter()
        .find(|b| format!("{}", b.upper_bound()) == le)
        .map_or_else(|| h.get_sample_count(), |b| b.cumulative_count())
}

#[test]
fn scores_fill_the_histogram_are_checked_before_anything_and_are_bounded() {
    let heard = Arc::new(Heard::default());
    let _registration = calls::register(Arc::clone(&heard));
    let id = scored("judge-me");
    for v in [0.0, 0.1, 0.15, 0.5, 1.0] {
        record_score(id, "judge", v).unwrap();
    }
    for v in [4.0, -0.5] {
        record_score(id, "judge", v).unwrap();
    }
    let labels = [
        ("model", "judge-me"),
        ("task", "scores-test"),
        ("score", "judge"),
    ];
    let text = String::from_utf8(hyperkit_obs::metrics::render(hyperkit_obs::registry())).unwrap();
    assert!(
        text.contains("# TYPE hyperkit_model_score histogram"),
        "{text}"
    );
    let bounds: Vec<String> = find("hyperkit_model_score", &labels)
        .unwrap()
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| b.upper_bound().to_string())
        .collect();
    assert_eq!(
        bounds,
        [
            "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"
        ]
    );
    assert_eq!(
        [
            bucket("judge", "0.1"),
            bucket("judge", "0.2"),
            bucket("judge", "0.5"),
            bucket("judge", "0.9"),
            bucket("judge", "1")
        ],
        [2, 3, 4, 4, 5],
        "0 and 0.1 in le=0.1 (upper bounds are inclusive), 1.0 in le=1"
    );
    let h = find("hyperkit_model_score", &labels).unwrap();
    assert_eq!(
        h.get_histogram().get_sample_count(),
        5,
        "4.0 and -0.5 are not in it"
    );
    assert!((h.get_histogram().get_sample_sum() - 1.75).abs() < 1e-9);
    assert_eq!(
        counter("hyperkit_model_score_out_of_range_total", &labels),
        2
    );

    // Refused before anything is recorded.
    for (name, value, want) in [
        ("judge/", 0.5, "InvalidName"),
        ("", 0.5, "InvalidName"),
        ("judge?", 0.5, "InvalidName"),
        (&*"x".repeat(251), 0.5, "InvalidName"),
        ("accepted", 1.0, "Reserved"),
        ("cost_usd", 0.1, "Reserved"),
        ("judge", f64::NAN, "NotFinite"),
        ("judge", f64::INFINITY, "NotFinite"),
    ] {
        let e = record_score(id, name, value).unwrap_err();
        let kind = match &e {
            ScoreError::InvalidName { .. } => "InvalidName",
            ScoreError::Reserved { .. } => "Reserved",
            ScoreError::NotFinite { .. } => "NotFinite",
            other => panic!("{other:?}"),
        };
        assert_eq!(kind, want, "{name:?} {value}: {e}");
    }
    assert_eq!(
        record_score(id, "a//b", 0.5).unwrap_err().to_string(),
        "score name \"a//b\" is not a valid MLflow metric key: a key must not be a path naming another key (`/a`, `a/`, `a//b`, `./a`, `../a`)"
    );
    assert_eq!(
        find("hyperkit_model_score", &labels)
            .unwrap()
            .get_histogram()
            .get_sample_count(),
        5
    );
    assert_eq!(
        heard.0.lock().unwrap().len(),
        7,
        "the sinks heard the seven accepted scores only"
    );
    assert_eq!(heard.0.lock().unwrap()[0], ("judge".to_owned(), 0.0));

    // Distinct names stop at HYPERKIT_MAX_LABEL_VALUES (1,000 by default).
    let limit = hyperkit_obs::metrics::max_label_values();
    let overflow = || {
        counter(
            "hyperkit_obs_label_overflow_total",
            &[("metric", "hyperkit_model_score"), ("label", "score")],
        )
    };
    let before = overflow();
    for i in 0..limit + 5 {
        record_score(id, &format!("name {i}"), 0.5).unwrap();
    }
    assert!(
        overflow() - before >= 6,
        "{} overflowed",
        overflow() - before
    );
    let series = hyperkit_obs::registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == "hyperkit_model_score")
        .unwrap()
        .get_metric()
        .len();
    assert!(
        series <= limit + 1,
        "{series} series for a limit of {limit}"
    );
    let overflowed = find(
        "hyperkit_model_score",
        &[
            ("model", "judge-me"),
            ("task", "scores-test"),
            ("score", "__overflow__"),
        ],
    )
    .expect("the overflow series");
    assert!(overflowed.get_histogram().get_sample_count() >= 6);
}
