//! The background exporter against the fixture: a run created twice is
//! found, not duplicated; a hanging server never blocks a caller; failures
//! back off once; a refused run is dropped once; a late acceptance reaches
//! its run, and so do scores in every state of the run; shutdown keeps its
//! deadline.

use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use hyperkit_obs::mlflow::{self, CALL_ID_TAG, MlflowConfig};
use hyperkit_obs::model::{CallId, current_call_id, record_acceptance, record_score};
use hyperkit_obs::{ModelOutput, track_model};
use test_support::wait::wait_until;

use super::config;
use super::fixture::{Fault, Fixture, error_body};

struct Answer {
    accepted: Option<bool>,
    call: CallId,
}

impl ModelOutput for Answer {
    fn input_tokens(&self) -> Option<u64> {
        Some(12)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(34)
    }
    fn accepted(&self) -> Option<bool> {
        self.accepted
    }
}

#[track_model(model, task = "fixture")]
fn ask(model: &str, accepted: Option<bool>) -> Answer {
    Answer {
        accepted,
        call: current_call_id().expect("a tracked call has an id"),
    }
}

/// One exporter per process, and every model call goes to it: the tests
/// that start one take turns, with the real-server tests of this binary
/// too (`test_support::mlflow::serial`), which also keeps MLflow's Python
/// off the CPU while these tests time the caller.
fn exporter_lock() -> MutexGuard<'static, ()> {
    test_support::mlflow::serial()
}

fn exporter_config(fixture: &Fixture, experiment: &str) -> MlflowConfig {
    let mut c = config(fixture, &[("MLFLOW_EXPERIMENT_NAME", experiment)]);
    c.retry.max_retries = 1;
    c.retry.timeout = Duration::from_secs(2);
    c
}

fn dropped() -> u64 {
    test_support::metrics::dropped("mlflow")
}

#[test]
fn exporter_finds_an_ambiguously_created_run_by_its_call_id_instead_of_duplicating_it() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "ambiguous")).unwrap();
    // The first create happens and answers a malformed body; the second
    // happens and answers 500.
    fixture.fail("runs/create", 1, Fault::Malformed);
    fixture.fail(
        "runs/create",
        1,
        Fault::AfterEffect {
            status: 500,
            body: error_body("INTERNAL_ERROR", "lost the answer"),
        },
    );
    let calls = [ask("model-a", Some(true)).call, ask("model-b", None).call];
    assert!(
        mlflow::flush(Duration::from_secs(20)),
        "{:?}",
        mlflow::status()
    );
    let status = mlflow::status().unwrap();
    guard.shutdown(Duration::from_secs(5));

    assert_eq!(status.delivered, 2, "{status:?}");
    assert_eq!(fixture.count("runs/create"), 2, "no create was repeated");
    let searches = fixture.requests_to("runs/search");
    for call in &calls {
        let filter = format!("tags.`{CALL_ID_TAG}` = '{call}'");
        assert!(
            searches
                .iter()
                .any(|s| s.json()["filter"] == filter.as_str()),
            "no search for {call}: {searches:?}"
        );
        let runs = fixture.runs_tagged(CALL_ID_TAG, &call.to_string());
        assert_eq!(runs.len(), 1, "call {call}: exactly one run");
        let run = &runs[0];
        assert_eq!(run.status, "FINISHED", "the found run was completed");
        assert_eq!(run.param("task"), Some("fixture"));
        assert!(run.end_time.is_some());
    }
}

#[test]
fn exporter_never_blocks_callers_when_the_server_hangs() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "hanging")).unwrap();
    // Delivered normally first, so the experiment is known.
    let _ = ask("model-a", None);
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );

    fixture.fail("*", usize::MAX / 2, Fault::Hang);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let started = Instant::now();
        let _ = ask(if i % 2 == 0 { "model-a" } else { "model-b" }, Some(true));
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(10),
        "the slowest call took {slowest:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || fixture.count("runs/create") > 1),
        "the exporter tried to deliver"
    );
    let started = Instant::now();
    assert!(
        !mlflow::flush(Duration::from_millis(500)),
        "nothing can be delivered"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(900),
        "flush(500 ms) returned after {waited:?}"
    );
    assert_eq!(mlflow::status().unwrap().queued, 200);
    let before = dropped();
    let started = Instant::now();
    guard.shutdown(Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(dropped() - before, 200, "the undelivered runs are counted");
}

#[test]
fn runs_in_flight_that_fail_together_back_off_once_not_once_each() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let config = exporter_config(&fixture, "burst");
    let in_flight = config.concurrency;
    assert!(in_flight >= 4, "the default keeps several runs in flight");
    let guard = mlflow::start(&config).unwrap();
    let _ = ask("model-a", None);
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );

    // Every run in flight is refused for now, on both of its attempts.
    fixture.fail(
        "runs/create",
        2 * in_flight,
        Fault::mlflow(503, "TEMPORARILY_UNAVAILABLE", "overloaded"),
    );
    for _ in 0..in_flight {
        let _ = ask("model-a", Some(true));
    }
    // One failure's backoff (250 ms), not one doubling per run in flight
    // (which reaches the 30 s cap at 8).
    let started = Instant::now();
    assert!(
        mlflow::flush(Duration::from_secs(5)),
        "{:?}",
        mlflow::status()
    );
    let took = started.elapsed();
    let status = mlflow::status().unwrap();
    guard.shutdown(Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "delivered after {took:?}");
    assert_eq!(
        (status.delivered, status.rejected),
        (1 + in_flight as u64, 0),
        "{status:?}"
    );
    assert_eq!(
        fixture.count("runs/create"),
        1 + 3 * in_flight,
        "two refused attempts and one accepted per run"
    );
}

#[test]
fn exporter_drops_a_refused_run_once_without_retrying_and_marks_it_failed() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "refused")).unwrap();
    let before = dropped();
    fixture.fail(
        "runs/log-batch",
        1,
        Fault::mlflow(
            400,
            "INVALID_PARAMETER_VALUE",
            "Changing param values is not allowed",
        ),
    );
    let call = ask("model-a", Some(false)).call;
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    let status = mlflow::status().unwrap();
    assert_eq!(
        (status.rejected, status.delivered, status.queued),
        (1, 0, 0),
        "{status:?}"
    );
    assert_eq!(dropped() - before, 1, "counted once");
    assert_eq!(fixture.count("runs/create"), 1);
    assert_eq!(fixture.count("runs/log-batch"), 1, "not retried");
    let updates = fixture.requests_to("runs/update");
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(
        updates[0].json()["status"],
        "FAILED",
        "ended FAILED, as Python ends a run whose logging raised"
    );

    // A later call is delivered as usual, and the refused one is still not
    // retried.
    let _ = ask("model-a", Some(true));
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(5));
    assert_eq!(fixture.count("runs/create"), 2);
    assert_eq!(fixture.count("runs/log-batch"), 2);
    assert_eq!(dropped() - before, 1);
    let refused = fixture.runs_tagged(CALL_ID_TAG, &call.to_string());
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].status, "FAILED", "MLflow refused its metrics");
    assert!(refused[0].end_time.is_some(), "and it has ended");
}

#[test]
fn exporter_logs_a_late_acceptance_to_the_delivered_run() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "late")).unwrap();
    let call = ask("model-a", None).call;
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    let runs = fixture.runs_tagged(CALL_ID_TAG, &call.to_string());
    assert_eq!(runs.len(), 1);
    let run_id = runs[0].run_id.clone();
    assert!(
        runs[0].metrics.iter().all(|m| m["key"] != "accepted"),
        "undecided at return"
    );
    let before = fixture.count("runs/log-batch");

    record_acceptance(call, true);
    assert!(
        wait_until(Duration::from_secs(10), || fixture.count("runs/log-batch")
            > before),
        "the acceptance was sent"
    );
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(5));

    let sent = fixture.requests_to("runs/log-batch")[before..].to_vec();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let body = sent[0].json();
    assert_eq!(body["run_id"], run_id.as_str());
    let metrics = body["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["key"], "accepted");
    assert_eq!(metrics[0]["value"], 1.0);
    let history = fixture.runs_tagged(CALL_ID_TAG, &call.to_string())[0]
        .metrics
        .iter()
        .filter(|m| m["key"] == "accepted")
        .count();
    assert_eq!(history, 1);
    assert_eq!(fixture.runs_tagged(CALL_ID_TAG, &call.to_string()).len(), 1);
}

#[test]
fn exporter_shutdown_keeps_its_deadline_while_the_experiment_lookup_hangs() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    fixture.fail("*", usize::MAX / 2, Fault::Hang);
    let mut config = exporter_config(&fixture, "unreachable");
    config.retry.timeout = Duration::from_secs(10);
    let guard = mlflow::start(&config).unwrap();
    let before = dropped();
    for _ in 0..5 {
        let _ = ask("model-a", None);
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            fixture.count("experiments/get-by-name") > 0
        }),
        "the exporter looked the experiment up"
    );
    assert!(!mlflow::flush(Duration::from_millis(200)));
    let started = Instant::now();
    guard.shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "shutdown(300 ms) took {took:?}"
    );
    assert_eq!(
        dropped() - before,
        5,
        "the undelivered runs are counted at shutdown"
    );

    // The exporter really stopped: a new one can start at once.
    let other = Fixture::start();
    let guard = mlflow::start(&exporter_config(&other, "after")).expect("a new exporter starts");
    let _ = ask("model-a", None);
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(5));
    assert_eq!(other.count("runs/create"), 1);
}

#[test]
fn the_exporter_guard_can_be_kept_in_a_static() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<mlflow::MlflowGuard>();
    send_and_sync::<hyperkit_obs::ObsGuard>();
}

#[track_model(model, task = "fixture")]
fn ask_and_score(model: &str) -> CallId {
    let call = current_call_id().expect("a tracked call has an id");
    // Before the run exists: the call has not finished.
    record_score(call, "inside", 0.25).unwrap();
    call
}

/// A score reaches its run in every state the run is in, as an acceptance
/// does: recorded inside the call (before the run is created), right after
/// it returns (the run is queued or being delivered) and once the run is
/// delivered (its own log-batch).
#[test]
fn exporter_logs_scores_to_the_run_before_it_exists_while_queued_and_once_delivered() {
    let _one = exporter_lock();
    let fixture = Fixture::start();
    let guard = mlflow::start(&exporter_config(&fixture, "scores")).unwrap();
    let call = ask_and_score("model-a");
    record_score(call, "queued", 0.5).unwrap();
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    let runs = fixture.runs_tagged(CALL_ID_TAG, &call.to_string());
    assert_eq!(runs.len(), 1);
    let before = fixture.count("runs/log-batch");
    record_score(call, "delivered", 4.0).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || fixture.count("runs/log-batch")
            > before),
        "the late score was sent"
    );
    assert!(mlflow::flush(Duration::from_secs(10)));
    guard.shutdown(Duration::from_secs(5));

    let run = &fixture.runs_tagged(CALL_ID_TAG, &call.to_string())[0];
    let value = |key: &str| -> Vec<f64> {
        run.metrics
            .iter()
            .filter(|m| m["key"] == key)
            .map(|m| m["value"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(value("inside"), [0.25]);
    assert_eq!(value("queued"), [0.5]);
    assert_eq!(
        value("delivered"),
        [4.0],
        "out of [0, 1] still goes to MLflow"
    );
    let late = fixture.requests_to("runs/log-batch")[before..].to_vec();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].json()["metrics"][0]["key"], "delivered");
}
