//! MLflow traces for model calls: with an MLflow 3 tracking server (and no
//! other OTLP endpoint configured), every sampled `#[track_model]` call's
//! span goes to the server's OTLP endpoint (`/v1/traces`, header
//! `x-mlflow-experiment-id`), so the call appears in MLflow's Traces view of
//! the experiment its runs go to, with its model, task, token counts (the
//! GenAI attributes MLflow reads) and status.
//!
//! Each model call is one MLflow trace: its span is sent as a root (MLflow
//! completes a trace on its root span), with the trace id the call's logs,
//! run tag `trace_id` and OTLP spans share, and its parent's span id kept
//! in attribute `hyperkit.parent_span_id`. MLflow 2 has no such endpoint:
//! the server's version is read first (`GET /version`), and an MLflow 2 is
//! skipped with one log line, its runs still logged. It runs on the shared
//! export runtime like every span sink: callers never wait for MLflow.
//!
//! Each trace is linked to its call's run, so the run's Traces tab lists it
//! and `mlflow.search_traces(run_id=…)` finds it. MLflow 3 links traces to a
//! run with `x-mlflow-run-id` on `/v1/traces` (one run for every trace of
//! the request) or with `POST /api/2.0/mlflow/traces/link-to-run`; a run id
//! is the server's answer to the run's creation, which the runs exporter
//! gets, so that exporter links each run it creates to its call's sampled
//! trace while this sink runs ([`sending`]). MLflow records the link whether or
//! not the trace has arrived yet, so neither exporter waits for the other.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use super::client::MlflowClient;
use super::config::MlflowConfig;
use crate::net::Blocking;
use crate::trace::otlp::exporter::{Resolve, Resolved, Target};
use crate::trace::otlp::{OtlpError, Protocol, SinkSpec, SpanSinkGuard, start_sink};

/// The sink's name: its `sink` label, readiness check and thread.
pub const TRACES_SINK: &str = "mlflow-traces";

/// The header naming the experiment the spans go to.
const EXPERIMENT_HEADER: &str = "x-mlflow-experiment-id";

/// How long looking up the server's version and experiment may take at
/// once (it is tried again later when it fails).
const LOOKUP_LIMIT: Duration = Duration::from_secs(15);

/// Finds out, on the exporter's thread, whether the server takes traces and
/// under which experiment id.
struct Lookup {
    client: MlflowClient,
    experiment: String,
}

impl Resolve for Lookup {
    fn resolve(&mut self, runtime: &Blocking, _http: &reqwest::Client) -> Resolved {
        let until = Instant::now() + LOOKUP_LIMIT;
        let client = self.client.clone();
        let version =
            runtime.run_until(|| Some(until), async move { client.server_version().await });
        let version = match version {
            None => return Resolved::NotYet("MLflow did not say its version in time".to_owned()),
            Some(Err(e)) => return Resolved::NotYet(e),
            Some(Ok(v)) => v,
        };
        let major = version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if major.is_none_or(|m| m < 3) {
            return Resolved::Never(format!(
                "MLflow at {} is version {}: only MLflow 3 takes traces (at /v1/traces), so model \
                 calls are logged as runs there but not as traces",
                self.client.base_url(),
                version.as_deref().unwrap_or("unknown")
            ));
        }
        let client = self.client.clone();
        let experiment = self.experiment.clone();
        let id = runtime.run_until(|| Some(until), async move {
            client.get_or_create_experiment(&experiment).await
        });
        let id = match id {
            None => {
                return Resolved::NotYet("MLflow did not give the experiment in time".to_owned());
            }
            Some(Err(e)) => {
                return Resolved::NotYet(format!(
                    "cannot find or create experiment {:?}: {e}",
                    self.experiment
                ));
            }
            Some(Ok(id)) => id,
        };
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&id) {
            headers.insert(HeaderName::from_static(EXPERIMENT_HEADER), v);
        }
        if let Some(auth) = self.client.authorization() {
            headers.insert(AUTHORIZATION, auth);
        }
        Resolved::Ready(Target {
            endpoint: format!("{}/v1/traces", self.client.base_url()),
            headers,
            protocol: Protocol::HttpProtobuf,
            gzip: true,
            timeout: Duration::from_secs(30),
        })
    }
}

/// Whether model calls' traces go to MLflow: this sink runs (the runs
/// exporter then links each run to its call's trace). Off the callers'
/// path: it reads every sink's status.
pub(crate) fn sending() -> bool {
    crate::export::statuses()
        .iter()
        .any(|s| s.sink == TRACES_SINK && s.running)
}

/// MLflow's id of the trace whose OpenTelemetry trace id is `trace_id`
/// (as `mlflow.tracing.utils.generate_mlflow_trace_id_from_otel_trace_id`
/// makes it).
pub(crate) fn mlflow_trace_id(trace_id: crate::trace::TraceId) -> String {
    format!("tr-{trace_id}")
}

/// Starts sending model calls' spans to the MLflow server `config` names
/// (as service `service_name`, with resource attributes `resource`).
/// [`init()`](crate::init) calls it for an `http(s)` `MLFLOW_TRACKING_URI`
/// when no `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn start_traces(
    config: &MlflowConfig,
    service_name: &str,
    resource: &[(String, String)],
) -> Result<SpanSinkGuard, OtlpError> {
    let client = MlflowClient::new(config).map_err(|e| OtlpError {
        sink: TRACES_SINK,
        message: e.to_string(),
    })?;
    start_sink(SinkSpec {
        sink: TRACES_SINK,
        description: format!("{}/v1/traces", client.base_url()),
        service_name: service_name.to_owned(),
        resource: resource.to_vec(),
        target: Err(Box::new(Lookup {
            client,
            experiment: config.experiment_name.clone(),
        })),
        model_calls_only: true,
        capacity: config.queue_capacity,
        max_batch: 256,
        linger: Duration::from_millis(200),
    })
}
