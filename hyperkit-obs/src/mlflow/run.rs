//! The MLflow run of one model call: one function builds it for
//! `#[track_model]` and for [`ExperimentTracker`](super::ExperimentTracker).

use std::time::Duration;

use super::types::{KeyValue, Metric, RunRecord, RunStatus};
use crate::track::Status;
use crate::util::short_type_name;

/// Tag holding the call id (unique across processes), so a run whose
/// creation may or may not have reached the server is found, not duplicated.
pub const CALL_ID_TAG: &str = "hyperkit.call_id";
/// Tag holding the trace id of the call (32 hex digits), as its log lines'
/// `trace.id` and its spans carry it.
pub const TRACE_ID_TAG: &str = "trace_id";
/// Tag holding the run id in the file store a pushed run came from.
pub const SOURCE_RUN_TAG: &str = "hyperkit.source_run_id";

/// What is known about one model call.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRun<'a> {
    /// The `model` label.
    pub model: &'a str,
    /// The `task` label.
    pub task: &'a str,
    /// The provider (`#[track_model(…, provider = …)]`): tag `provider`.
    pub provider: Option<&'a str>,
    /// How it ended.
    pub status: Status,
    /// When it ended, in milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// How long it took.
    pub latency: Duration,
    /// A streamed call's time to its first item.
    pub time_to_first_token: Option<Duration>,
    /// Tokens sent.
    pub input_tokens: Option<u64>,
    /// Tokens produced.
    pub output_tokens: Option<u64>,
    /// Whether the output was accepted, when known.
    pub accepted: Option<bool>,
    /// What the call cost in USD, when its model is priced.
    pub cost_usd: Option<f64>,
    /// The error type's name, for a failure (`my_crate::ModelError`).
    pub error_type: Option<&'a str>,
    /// The call id, when the run comes from a tracked call.
    pub call_id: Option<String>,
    /// The trace the call ran in (32 hex digits), when trace context is on:
    /// the run's `trace_id` tag, shared with its log lines and spans.
    pub trace_id: Option<String>,
}

impl ModelRun<'_> {
    /// The run: params `model`, `task`; metrics `input_tokens`,
    /// `output_tokens`, `latency_seconds`, `accepted` (0/1) and `cost_usd`
    /// when known, and for a streamed call `time_to_first_token_seconds`
    /// and `output_tokens_per_second` (from the first item to the end);
    /// tags `status`, `provider`, `error.type`, the call id, `trace_id` and
    /// the OpenTelemetry GenAI names
    /// (`gen_ai.request.model`, `gen_ai.operation.name`,
    /// `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`).
    pub fn record(&self) -> RunRecord {
        let latency_ms = i64::try_from(self.latency.as_millis()).unwrap_or(i64::MAX);
        let start = self.end_ms.saturating_sub(latency_ms);
        let t = self.end_ms;
        let mut metrics = vec![Metric::new(
            "latency_seconds",
            self.latency.as_secs_f64(),
            t,
        )];
        let mut tags = vec![
            KeyValue::new("status", self.status.as_str()),
            KeyValue::new("gen_ai.request.model", self.model),
            KeyValue::new("gen_ai.operation.name", self.task),
        ];
        #[allow(clippy::cast_precision_loss)] // token counts are far below 2^53
        {
            if let Some(n) = self.input_tokens {
                metrics.push(Metric::new("input_tokens", n as f64, t));
                tags.push(KeyValue::new("gen_ai.usage.input_tokens", n.to_string()));
            }
            if let Some(n) = self.output_tokens {
                metrics.push(Metric::new("output_tokens", n as f64, t));
                tags.push(KeyValue::new("gen_ai.usage.output_tokens", n.to_string()));
            }
        }
        if let Some(first) = self.time_to_first_token {
            metrics.push(Metric::new(
                "time_to_first_token_seconds",
                first.as_secs_f64(),
                t,
            ));
        }
        if let Some(rate) = crate::model::output_tokens_per_second(
            self.output_tokens,
            self.latency,
            self.time_to_first_token,
        ) {
            metrics.push(Metric::new("output_tokens_per_second", rate, t));
        }
        if let Some(a) = self.accepted {
            metrics.push(acceptance_metric(a, t));
        }
        if let Some(usd) = self.cost_usd {
            metrics.push(Metric::new("cost_usd", usd, t));
        }
        if let Some(p) = self.provider {
            tags.push(KeyValue::new("provider", p));
        }
        if let Some(ty) = self.error_type {
            tags.push(KeyValue::new("error.type", short_type_name(ty)));
        }
        if let Some(id) = &self.call_id {
            tags.push(KeyValue::new(CALL_ID_TAG, id.clone()));
        }
        if let Some(id) = &self.trace_id {
            tags.push(KeyValue::new(TRACE_ID_TAG, id.clone()));
        }
        RunRecord {
            run_name: format!("{}-{}", self.task, self.model),
            start_time: start,
            end_time: Some(self.end_ms),
            status: match self.status {
                Status::Success => RunStatus::Finished,
                Status::Failure | Status::Panic => RunStatus::Failed,
                Status::Cancelled => RunStatus::Killed,
            },
            params: vec![
                KeyValue::new("model", self.model),
                KeyValue::new("task", self.task),
            ],
            metrics,
            tags,
        }
    }
}

/// Metric `accepted`: 1 for accepted, 0 for rejected.
pub(crate) fn acceptance_metric(accepted: bool, timestamp: i64) -> Metric {
    Metric::new("accepted", if accepted { 1.0 } else { 0.0 }, timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_call_has_its_time_to_first_token_and_output_rate() {
        let run = ModelRun {
            model: "m1",
            task: "chat",
            provider: None,
            status: Status::Success,
            end_ms: 10_000,
            latency: Duration::from_millis(2500),
            time_to_first_token: Some(Duration::from_millis(500)),
            input_tokens: None,
            output_tokens: Some(100),
            accepted: None,
            cost_usd: None,
            error_type: None,
            call_id: None,
            trace_id: None,
        }
        .record();
        let metric = |key| run.metrics.iter().find(|m| m.key == key).map(|m| m.value);
        assert_eq!(metric("time_to_first_token_seconds"), Some(0.5));
        assert_eq!(
            metric("output_tokens_per_second"),
            Some(50.0),
            "100 tokens in the 2 s after the first"
        );
        assert_eq!(metric("latency_seconds"), Some(2.5));
    }

    #[test]
    fn a_model_call_becomes_the_documented_run() {
        let run = ModelRun {
            model: "m1",
            task: "codegen",
            provider: Some("acme"),
            status: Status::Failure,
            end_ms: 10_000,
            latency: Duration::from_millis(1500),
            time_to_first_token: None,
            input_tokens: Some(12),
            output_tokens: None,
            accepted: Some(false),
            cost_usd: Some(0.0125),
            error_type: Some("my::errors::ModelError<u8>"),
            call_id: Some("abc-1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        }
        .record();
        assert_eq!(
            run.tag("trace_id"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(run.start_time, 8_500);
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.tag("error.type"), Some("ModelError"));
        assert_eq!(run.tag("gen_ai.usage.input_tokens"), Some("12"));
        assert_eq!(run.tag("gen_ai.usage.output_tokens"), None);
        assert_eq!(run.tag(CALL_ID_TAG), Some("abc-1"));
        assert_eq!(run.tag("provider"), Some("acme"));
        let m: Vec<_> = run
            .metrics
            .iter()
            .map(|m| (m.key.as_str(), m.value))
            .collect();
        assert_eq!(
            m,
            [
                ("latency_seconds", 1.5),
                ("input_tokens", 12.0),
                ("accepted", 0.0),
                ("cost_usd", 0.0125)
            ]
        );
    }
}
