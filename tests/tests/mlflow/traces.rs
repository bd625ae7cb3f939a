//! MLflow traces for model calls, against real MLflow servers: with MLflow
//! 3.17.2, N `#[track_model]` calls produce N traces that MLflow's own
//! Python client (`search_traces`) reads back under the configured
//! experiment, each with its model, task, token counts and status, and the
//! trace id the call's logs carry, each linked to its call's run (read
//! back with `search_traces(run_id=…)`); MLflow 2.22.5 (which has no OTLP
//! endpoint) is detected and skipped with one log line, without errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperkit_obs::mlflow::MlflowConfig;
use hyperkit_obs::{ModelOutput, trace, track_model};
use test_support::mlflow::{Backend, MlflowServer, Version, python, serial};
use test_support::wait::wait_for_value;
use tracing_subscriber::layer::SubscriberExt;

struct Reply {
    input: u64,
    output: u64,
}

impl ModelOutput for Reply {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.input)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.output)
    }
}

#[track_model(model, task = "codegen")]
fn traced_complete(model: &str, n: u64) -> Result<Reply, String> {
    if n == 3 {
        return Err("context window exceeded".into());
    }
    Ok(Reply {
        input: 100 + n,
        output: 10 + n,
    })
}

fn config(url: &str, experiment: &str) -> MlflowConfig {
    MlflowConfig::from_lookup(|name| match name {
        "MLFLOW_TRACKING_URI" => Some(url.to_owned()),
        "MLFLOW_EXPERIMENT_NAME" => Some(experiment.to_owned()),
        _ => None,
    })
    .unwrap()
}

/// Warnings of the export runtime, as a user's log would show them.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }
}

fn warnings() -> &'static Warnings {
    static W: std::sync::OnceLock<Warnings> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        let w = Warnings::default();
        let subscriber = tracing_subscriber::registry().with(w.clone());
        tracing::subscriber::set_global_default(subscriber).unwrap();
        w
    })
}

const SEARCH_TRACES_PY: &str = r#"
import json, os, mlflow
mlflow.set_tracking_uri(os.environ["URI"])
exp = mlflow.get_experiment_by_name(os.environ["EXPERIMENT"])
traces = mlflow.search_traces(experiment_ids=[exp.experiment_id], return_type="list")
out = []
for t in traces:
    root = t.data.spans[0]
    attrs = root.attributes
    out.append({
        "trace_id": t.info.trace_id,
        "state": str(t.info.state),
        "experiment_id": t.info.experiment_id,
        "usage": t.info.token_usage,
        "model": attrs.get("model"),
        "task": attrs.get("task"),
        "input_tokens": attrs.get("gen_ai.usage.input_tokens"),
        "status": attrs.get("hyperkit.status"),
    })
print(json.dumps({"experiment_id": exp.experiment_id, "traces": out}))
"#;

#[test]
fn n_model_calls_are_n_mlflow_3_traces_with_their_model_task_tokens_and_status() {
    let _turn = serial();
    warnings();
    let server = MlflowServer::start(Version::V3, Backend::Sqlite);
    let experiment = "hyperkit-traces";
    let guard =
        hyperkit_obs::mlflow::start_traces(&config(&server.url(), experiment), "agent", &[])
            .unwrap();
    trace::enable();
    let ids = TraceIds::default();
    let _ids = hyperkit_obs::calls::register(ids.clone());
    for n in 0..5 {
        let _ = traced_complete(&format!("model-{n}"), n);
    }
    assert!(guard.flush(Duration::from_secs(60)), "{:?}", guard.status());
    let status = guard.status().unwrap();
    assert_eq!(
        (status.delivered, status.dropped, status.rejected),
        (5, 0, 0),
        "{status:?}"
    );

    let found = python(
        Version::V3,
        SEARCH_TRACES_PY,
        &[("URI", &server.url()), ("EXPERIMENT", experiment)],
    );
    let traces = found["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 5, "{found}");
    for n in 0..5u64 {
        let t = traces
            .iter()
            .find(|t| t["model"] == format!("model-{n}").as_str())
            .unwrap_or_else(|| panic!("model-{n} in {found}"));
        assert_eq!(t["task"], "codegen");
        assert_eq!(t["experiment_id"], found["experiment_id"]);
        let ours = ids
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|(m, _)| *m == format!("model-{n}"))
            .cloned();
        assert_eq!(
            t["trace_id"].as_str(),
            ours.map(|(_, id)| format!("tr-{id}")).as_deref(),
            "MLflow's trace is the call's trace"
        );
        if n == 3 {
            assert!(t["state"].as_str().unwrap().contains("ERROR"), "{t}");
            assert_eq!(t["status"], "failure");
        } else {
            assert!(t["state"].as_str().unwrap().contains("OK"), "{t}");
            assert_eq!(t["usage"]["input_tokens"], 100 + n, "{t}");
            assert_eq!(t["usage"]["output_tokens"], 10 + n, "{t}");
        }
    }
}

const TRACES_OF_RUNS_PY: &str = r#"
import json, os, mlflow
mlflow.set_tracking_uri(os.environ["URI"])
exp = mlflow.get_experiment_by_name(os.environ["EXPERIMENT"])
out = []
for run in mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="list"):
    traces = mlflow.search_traces(
        experiment_ids=[exp.experiment_id], run_id=run.info.run_id, return_type="list")
    out.append({
        "run_id": run.info.run_id,
        "model": run.data.params.get("model"),
        "trace_id_tag": run.data.tags.get("trace_id"),
        "traces": [t.info.trace_id for t in traces],
    })
print(json.dumps(out))
"#;

#[test]
fn each_mlflow_3_trace_is_linked_to_its_calls_run() {
    let _turn = serial();
    warnings();
    let server = MlflowServer::start(Version::V3, Backend::Sqlite);
    let experiment = "hyperkit-linked";
    let config = config(&server.url(), experiment);
    let traces = hyperkit_obs::mlflow::start_traces(&config, "agent", &[]).unwrap();
    let runs = hyperkit_obs::mlflow::start(&config).unwrap();
    trace::enable();
    for n in 0..4 {
        let _ = traced_complete(&format!("linked-{n}"), n);
    }
    assert!(
        traces.flush(Duration::from_secs(60)),
        "{:?}",
        traces.status()
    );
    assert!(
        hyperkit_obs::mlflow::flush(Duration::from_secs(60)),
        "{:?}",
        hyperkit_obs::mlflow::status()
    );
    let status = hyperkit_obs::mlflow::status().unwrap();
    assert_eq!((status.delivered, status.dropped), (4, 0), "{status:?}");
    drop(runs);

    let found = python(
        Version::V3,
        TRACES_OF_RUNS_PY,
        &[("URI", &server.url()), ("EXPERIMENT", experiment)],
    );
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 4, "{found:?}");
    for run in found {
        let tag = run["trace_id_tag"]
            .as_str()
            .unwrap_or_else(|| panic!("{run}"));
        assert_eq!(
            run["traces"],
            serde_json::json!([format!("tr-{tag}")]),
            "the run {} of {} lists exactly its call's trace",
            run["run_id"],
            run["model"]
        );
    }
}

/// The trace id of each model call, by model.
#[derive(Clone, Default)]
struct TraceIds(Arc<Mutex<Vec<(String, String)>>>);

impl hyperkit_obs::calls::CallSink for TraceIds {
    fn on_call(&self, call: &hyperkit_obs::calls::FinishedCall<'_>) {
        if let (Some(model), Some(t)) = (call.label("model"), call.trace) {
            self.0
                .lock()
                .unwrap()
                .push((model.to_owned(), t.trace_id().to_string()));
        }
    }
}

#[test]
fn mlflow_2_is_detected_and_skipped_with_one_log_line() {
    let _turn = serial();
    let warned = warnings();
    let server = MlflowServer::start(Version::V2, Backend::Sqlite);
    let guard =
        hyperkit_obs::mlflow::start_traces(&config(&server.url(), "v2"), "agent", &[]).unwrap();
    trace::enable();
    let said = wait_for_value(
        "the log line that skips MLflow 2",
        Duration::from_secs(30),
        || {
            let said: Vec<String> = warned
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.contains("only MLflow 3 takes traces"))
                .cloned()
                .collect();
            (!said.is_empty()).then_some(said)
        },
    );
    assert_eq!(said.len(), 1, "one line: {said:?}");
    assert!(said[0].contains("2.22.5"), "{said:?}");
    for n in 0..3 {
        let _ = traced_complete("small-1", n);
    }
    assert!(guard.flush(Duration::from_secs(10)));
    let status = guard.status().unwrap();
    assert!(!status.failing, "{status:?}");
    assert_eq!(
        status.dropped + status.delivered + status.rejected,
        0,
        "nothing queued: {status:?}"
    );
    let again = warned
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.contains("only MLflow 3"))
        .count();
    assert_eq!(again, 1, "said once");
}
