//! `#[track_model]` runs and the `ExperimentTracker` API against real MLflow
//! tracking servers (3.17.2 and 2.22.5, from the venvs `.ci/run` creates),
//! read back with MLflow's own Python client; and the faults: a server
//! stopped and restarted mid-stream, a full queue, and the experiment
//! deleted, restored and purged under the exporter.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hyperkit_obs::mlflow::{
    self, CALL_ID_TAG, ExperimentTracker, MlflowClient, MlflowConfig, TrackingTarget,
};
use hyperkit_obs::model::{CallId, current_call_id, record_acceptance};
use hyperkit_obs::{ModelOutput, track_model};
use serde_json::Value;
use test_support::mlflow::{
    Backend, MlflowServer, Version, experiment_lifecycle, read_runs, serial,
};

struct Completion {
    input: u64,
    output: u64,
    accepted: Option<bool>,
    call: CallId,
}

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.input)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.output)
    }
    fn accepted(&self) -> Option<bool> {
        self.accepted
    }
}

#[derive(Debug)]
struct ModelError {
    call: CallId,
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the model timed out")
    }
}

/// A model call: every 10th fails; acceptance is known at return for
/// i.is_multiple_of(3) (accepted) and i % 3 == 1 (rejected), undecided otherwise.
#[track_model(model, task = "codegen")]
fn complete(model: &str, i: u64) -> Result<Completion, ModelError> {
    let call = current_call_id().expect("a tracked model call has an id");
    if i.is_multiple_of(10) {
        return Err(ModelError { call });
    }
    Ok(Completion {
        input: i,
        output: 2 * i,
        accepted: match i % 3 {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        },
        call,
    })
}

/// What a call's run must hold.
#[derive(Debug, Clone)]
struct Expected {
    model: &'static str,
    failed: bool,
    input: u64,
    accepted: Option<bool>,
}

fn config(server: &MlflowServer, experiment: &str) -> MlflowConfig {
    let mut c = MlflowConfig::default();
    c.target = TrackingTarget::Server(server.url());
    c.experiment_name = experiment.to_owned();
    c.retry.max_retries = 2;
    c.retry.backoff_factor = 0.2;
    c.retry.backoff_jitter = 0.1;
    c.retry.timeout = Duration::from_secs(20);
    c
}

/// Runs `n` calls starting at `from`; records a late acceptance for every
/// 7th undecided one. Returns the expectations by call id.
fn run_calls(from: u64, n: u64) -> BTreeMap<String, Expected> {
    let mut expected = BTreeMap::new();
    for i in from..from + n {
        let model = if i.is_multiple_of(2) {
            "model-a"
        } else {
            "model-b"
        };
        let started = Instant::now();
        let result = complete(model, i);
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "call {i} took {:?}: MLflow logging must never block the caller",
            started.elapsed()
        );
        let (call, e) = match result {
            Err(e) => (
                e.call,
                Expected {
                    model,
                    failed: true,
                    input: 0,
                    accepted: None,
                },
            ),
            Ok(c) => {
                let mut accepted = c.accepted;
                if accepted.is_none() && i.is_multiple_of(7) {
                    record_acceptance(c.call, i.is_multiple_of(2));
                    accepted = Some(i.is_multiple_of(2));
                }
                (
                    c.call,
                    Expected {
                        model,
                        failed: false,
                        input: c.input,
                        accepted,
                    },
                )
            }
        };
        expected.insert(call.to_string(), e);
    }
    expected
}

fn by_call_id(runs: &[Value]) -> HashMap<String, &Value> {
    let mut map = HashMap::new();
    for run in runs {
        let id = run["tags"][CALL_ID_TAG]
            .as_str()
            .unwrap_or_else(|| panic!("run without {CALL_ID_TAG}: {run}"))
            .to_owned();
        assert!(
            map.insert(id.clone(), run).is_none(),
            "call {id} has two runs"
        );
    }
    map
}

fn check_run(call: &str, e: &Expected, run: &Value) {
    let ctx = || format!("call {call}: {run}");
    assert_eq!(run["params"]["model"], e.model, "{}", ctx());
    assert_eq!(run["params"]["task"], "codegen", "{}", ctx());
    assert_eq!(run["tags"]["gen_ai.request.model"], e.model, "{}", ctx());
    assert_eq!(run["tags"]["gen_ai.operation.name"], "codegen", "{}", ctx());
    assert!(
        run["metrics"]["latency_seconds"].as_f64().is_some(),
        "{}",
        ctx()
    );
    assert!(
        run["end_time"].as_i64() >= run["start_time"].as_i64(),
        "{}",
        ctx()
    );
    if e.failed {
        assert_eq!(run["status"], "FAILED", "{}", ctx());
        assert_eq!(run["tags"]["status"], "failure", "{}", ctx());
        assert_eq!(run["tags"]["error.type"], "ModelError", "{}", ctx());
        assert!(run["metrics"].get("input_tokens").is_none(), "{}", ctx());
    } else {
        assert_eq!(run["status"], "FINISHED", "{}", ctx());
        assert_eq!(run["tags"]["status"], "success", "{}", ctx());
        assert_eq!(run["metrics"]["input_tokens"], e.input as f64, "{}", ctx());
        assert_eq!(
            run["metrics"]["output_tokens"],
            (2 * e.input) as f64,
            "{}",
            ctx()
        );
        assert_eq!(
            run["tags"]["gen_ai.usage.input_tokens"],
            e.input.to_string(),
            "{}",
            ctx()
        );
        assert_eq!(
            run["tags"]["gen_ai.usage.output_tokens"],
            (2 * e.input).to_string(),
            "{}",
            ctx()
        );
    }
    let accepted = run["metrics"].get("accepted").and_then(Value::as_f64);
    assert_eq!(
        accepted,
        e.accepted.map(|a| if a { 1.0 } else { 0.0 }),
        "{}",
        ctx()
    );
}

/// Acceptance counts of `model` as Python reads them: (accepted, rejected).
fn python_acceptance(runs: &[Value], model: &str) -> (u64, u64) {
    let mut counts = (0, 0);
    for run in runs.iter().filter(|r| r["params"]["model"] == model) {
        match run["metrics"].get("accepted").and_then(Value::as_f64) {
            Some(v) if v >= 0.5 => counts.0 += 1,
            Some(_) => counts.1 += 1,
            None => {}
        }
    }
    counts
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn roundtrip(version: Version) {
    let _serial = serial();
    let server = MlflowServer::start(version, Backend::Sqlite);
    let experiment = format!("hyperkit model calls {}", version.mlflow_version());
    let config = config(&server, &experiment);

    // Eight clients create the same experiment at once: one experiment, and
    // every client gets its id (the losers read RESOURCE_ALREADY_EXISTS).
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (config, barrier, name) = (config.clone(), barrier.clone(), experiment.clone());
            std::thread::spawn(move || {
                let client = MlflowClient::new(&config).unwrap();
                barrier.wait();
                runtime().block_on(client.get_or_create_experiment(&name))
            })
        })
        .collect();
    let ids: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().unwrap().expect("get_or_create_experiment"))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    let guard = mlflow::start(&config).expect("exporter starts");
    let expected = run_calls(0, 1_050);
    assert!(
        mlflow::flush(Duration::from_secs(120)),
        "not delivered within 120 s: {:?}",
        mlflow::status()
    );
    let tracker = runtime()
        .block_on(ExperimentTracker::with_config(&experiment, &config))
        .unwrap();
    assert_eq!(tracker.experiment_id(), ids[0]);
    let direct = runtime()
        .block_on(tracker.log_model_run(
            "model-c",
            "review",
            40,
            7,
            Duration::from_millis(1250),
            Some(true),
        ))
        .unwrap();
    guard.shutdown(Duration::from_secs(10));

    let runs = read_runs(version, &server.url(), &experiment);
    assert_eq!(runs.len(), 1_051, "1,050 tracked calls and one direct run");
    let direct_run = runs
        .iter()
        .find(|r| r["run_id"] == direct.as_str())
        .unwrap();
    assert_eq!(direct_run["params"]["model"], "model-c");
    assert_eq!(direct_run["params"]["task"], "review");
    assert_eq!(direct_run["metrics"]["latency_seconds"], 1.25);
    assert_eq!(direct_run["metrics"]["accepted"], 1.0);
    assert_eq!(direct_run["tags"]["gen_ai.usage.output_tokens"], "7");
    let tracked: Vec<Value> = runs
        .iter()
        .filter(|r| r["run_id"] != direct.as_str())
        .cloned()
        .collect();
    let found = by_call_id(&tracked);
    for (call, e) in &expected {
        let run = found
            .get(call)
            .unwrap_or_else(|| panic!("no run for call {call}"));
        check_run(call, e, run);
    }

    // The acceptance rate over all pages (1,050 runs > one page of 1,000)
    // is the same from Rust and from Python, and is what the calls decided.
    for model in ["model-a", "model-b"] {
        let rate = runtime().block_on(tracker.acceptance_rate(model)).unwrap();
        let python = python_acceptance(&tracked, model);
        let mine = expected.values().filter(|e| e.model == model);
        let accepted = mine.clone().filter(|e| e.accepted == Some(true)).count() as u64;
        let rejected = mine.clone().filter(|e| e.accepted == Some(false)).count() as u64;
        assert_eq!((rate.accepted, rate.rejected), python, "{model}");
        assert_eq!(
            (rate.accepted, rate.rejected),
            (accepted, rejected),
            "{model}"
        );
        assert_eq!(
            rate.accepted + rate.rejected + rate.undecided,
            mine.count() as u64
        );
        let expected_rate = accepted as f64 / (accepted + rejected) as f64;
        assert!((rate.rate().unwrap() - expected_rate).abs() < 1e-12);
    }
}

#[test]
fn runs_are_read_back_by_mlflow_3() {
    roundtrip(Version::V3);
}

#[test]
fn runs_are_read_back_by_mlflow_2() {
    roundtrip(Version::V2);
}

#[test]
fn a_stopped_server_loses_nothing_within_the_bound_and_a_full_queue_counts_its_drops() {
    let _serial = serial();
    let mut server = MlflowServer::start(Version::V3, Backend::Sqlite);
    let experiment = "hyperkit faults";
    let mut config = config(&server, experiment);
    config.queue_capacity = 60;
    config.retry.max_retries = 1;
    let guard = mlflow::start(&config).expect("exporter starts");
    let dropped =
        || test_support::metrics::counter("hyperkit_obs_dropped_total", &[("sink", "mlflow")]);

    let mut expected = run_calls(10_000, 20);
    assert!(
        mlflow::flush(Duration::from_secs(60)),
        "{:?}",
        mlflow::status()
    );

    server.stop();
    let before = dropped();
    // 60 calls fill the queue while the server is down; 25 more find it full.
    expected.extend(run_calls(20_000, 60));
    test_support::wait::wait_for(
        "the exporter to notice the server is down",
        Duration::from_secs(30),
        || mlflow::status().is_some_and(|s| s.failing),
    );
    let lost = run_calls(30_000, 25);
    assert_eq!(
        dropped() - before,
        25,
        "every call over the bound is counted"
    );
    assert_eq!(mlflow::status().unwrap().queued, 60);

    server.restart();
    assert!(
        mlflow::flush(Duration::from_secs(120)),
        "delivered after the restart: {:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(10));

    let runs = read_runs(Version::V3, &server.url(), experiment);
    let found = by_call_id(&runs);
    assert_eq!(runs.len(), 80, "20 before the stop and 60 queued during it");
    for (call, e) in &expected {
        check_run(call, e, found.get(call).expect("delivered exactly once"));
    }
    for call in lost.keys() {
        assert!(!found.contains_key(call), "a dropped call has no run");
    }
    assert_eq!(
        lost.len() as u64,
        dropped() - before,
        "the drop counter equals the runs missing"
    );
}

#[test]
fn runs_wait_while_their_experiment_is_deleted_and_follow_it_restored_or_purged_mlflow_3() {
    deleted_experiment(Version::V3);
}

#[test]
fn runs_wait_while_their_experiment_is_deleted_and_follow_it_restored_or_purged_mlflow_2() {
    deleted_experiment(Version::V2);
}

/// Runs wait while their experiment is deleted, go to it once restored, and
/// to a new one of the same name once it is purged.
fn deleted_experiment(version: Version) {
    let _serial = serial();
    let server = MlflowServer::start(version, Backend::Sqlite);
    let experiment = "hyperkit deleted experiment";
    let config = config(&server, experiment);
    let guard = mlflow::start(&config).expect("exporter starts");
    let dropped =
        || test_support::metrics::counter("hyperkit_obs_dropped_total", &[("sink", "mlflow")]);

    let mut expected = run_calls(40_000, 10);
    assert!(
        mlflow::flush(Duration::from_secs(60)),
        "{:?}",
        mlflow::status()
    );
    let first = runtime()
        .block_on(
            MlflowClient::new(&config)
                .unwrap()
                .get_experiment_by_name(experiment),
        )
        .unwrap()
        .expect("the experiment exists")
        .experiment_id;
    let before = dropped();

    // Deleted: MLflow refuses runs in it and keeps its name, so the calls
    // made meanwhile wait in the queue, and the status says why.
    let lifecycle =
        |action| experiment_lifecycle(version, &server.url(), server.backend_uri(), action, &first);
    assert_eq!(lifecycle("delete"), "deleted");
    expected.extend(run_calls(50_000, 10));
    let said = test_support::wait::wait_until(Duration::from_secs(30), || {
        mlflow::status()
            .and_then(|s| s.last_error)
            .is_some_and(|e| e.contains("is deleted; restore it"))
    });
    let status = mlflow::status().unwrap();
    assert!(
        said,
        "the status says the experiment is deleted: {status:?}"
    );
    assert_eq!((status.queued, status.rejected), (10, 0), "{status:?}");
    assert_eq!(dropped(), before, "nothing is dropped while it waits");

    // Restored: they are delivered to it.
    assert_eq!(lifecycle("restore"), "active");
    assert!(
        mlflow::flush(Duration::from_secs(60)),
        "delivered after the restore: {:?}",
        mlflow::status()
    );
    let runs = read_runs(version, &server.url(), experiment);
    assert_eq!(runs.len(), 20, "10 before the delete, 10 while deleted");
    let found = by_call_id(&runs);
    for (call, e) in &expected {
        check_run(call, e, found.get(call).expect("delivered exactly once"));
    }

    // Purged: the name is free, and the next runs make the experiment anew.
    assert_eq!(lifecycle("purge"), Value::Null);
    let after_purge = run_calls(60_000, 10);
    assert!(
        mlflow::flush(Duration::from_secs(60)),
        "delivered after the purge: {:?}",
        mlflow::status()
    );
    let status = mlflow::status().unwrap();
    guard.shutdown(Duration::from_secs(10));
    // SQLite may give the new experiment the purged one's id: its runs tell
    // them apart.
    let runs = read_runs(version, &server.url(), experiment);
    assert_eq!(runs.len(), 10, "only the calls after the purge");
    let found = by_call_id(&runs);
    for (call, e) in &after_purge {
        check_run(call, e, found.get(call).expect("delivered exactly once"));
    }
    assert_eq!((status.delivered, status.rejected), (30, 0), "{status:?}");
    assert_eq!(dropped(), before, "nothing was dropped");
}
