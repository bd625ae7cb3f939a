//! What a span is on its way out: the small record the caller queues
//! ([`SpanItem`], made from a finished call or request without formatting
//! anything but a failure's message), and its OTLP form, built on the
//! exporter's thread with the OpenTelemetry project's own message types
//! (`opentelemetry-proto`): `http/protobuf` or `http/json`, gzipped on
//! request.
//!
//! Attributes follow the semantic conventions: a call's labels under their
//! own names, `code.function.name`; GenAI attributes for model calls
//! (`gen_ai.operation.name`, `gen_ai.request.model`, token usage,
//! `gen_ai.provider.name` from `#[track_model(…, provider = …)]`, or a
//! `provider` label of a domain of the user's); database
//! attributes for queries; HTTP server attributes for requests. Nothing
//! here panics on any input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status as SpanStatus,
};
use prost::Message;

use super::Protocol;
use crate::calls::{FinishedCall, FinishedRequest};
use crate::model::Usage;
use crate::trace::{SpanContext, SpanId, TraceId, TraceState};
use crate::track::Status;

/// The ids of a span.
pub(crate) struct Ids {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    state: TraceState,
    /// The parent is in another process (W3C's remote flag in OTLP's
    /// span flags).
    remote_parent: bool,
}

impl Ids {
    fn of(context: &SpanContext, parent: Option<SpanId>, remote_parent: bool) -> Ids {
        Ids {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
            parent,
            state: context.trace_state().clone(),
            remote_parent,
        }
    }
}

/// A tracked call's span as queued.
pub(crate) struct CallSpan {
    ids: Ids,
    start_ns: u64,
    end_ns: u64,
    pub(crate) domain: &'static str,
    function: &'static str,
    module: &'static str,
    names: &'static [&'static str],
    values: &'static [Box<str>],
    status: Status,
    error: Option<String>,
    error_type: Option<&'static str>,
    usage: Option<Usage>,
    /// A streamed call's time to its first item, and its output rate.
    time_to_first_token: Option<Duration>,
    output_tokens_per_second: Option<f64>,
    /// Scores recorded inside the call: `gen_ai.evaluation.result` events.
    scores: Vec<crate::model::Score>,
    /// A model call's provider: `gen_ai.provider.name`.
    provider: Option<&'static str>,
    /// Sent to MLflow: a root of its own (MLflow completes a trace on its
    /// root), typed as an LLM span.
    for_mlflow: bool,
}

/// An HTTP request's span as queued.
pub(crate) struct RequestSpan {
    ids: Ids,
    start_ns: u64,
    end_ns: u64,
    method: &'static str,
    route: &'static str,
    path: String,
    protocol_version: &'static str,
    status_code: Option<u16>,
}

/// What the span exporters queue.
pub(crate) enum SpanItem {
    Call(Box<CallSpan>),
    Request(Box<RequestSpan>),
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl SpanItem {
    /// The span of a sampled call (`None` without trace context); for
    /// MLflow, a root of its own.
    pub(crate) fn call(call: &FinishedCall<'_>, for_mlflow: bool) -> Option<SpanItem> {
        let context = call.trace?;
        Some(SpanItem::Call(Box::new(CallSpan {
            // A tracked call's parent is local unless the context it joined
            // came from a request header.
            ids: Ids::of(context, call.parent_span_id, false),
            start_ns: unix_ns(call.start()),
            end_ns: unix_ns(call.end),
            domain: call.domain,
            function: call.function,
            module: call.module,
            names: call.label_names,
            values: call.label_values,
            status: call.status,
            error: call.error.map(ToString::to_string),
            error_type: call.error_type,
            usage: call.usage,
            time_to_first_token: call.time_to_first_token,
            output_tokens_per_second: call.output_tokens_per_second(),
            scores: call.scores.to_vec(),
            provider: call.provider,
            for_mlflow,
        })))
    }

    /// The span of a sampled request.
    pub(crate) fn request(r: &FinishedRequest<'_>) -> SpanItem {
        SpanItem::Request(Box::new(RequestSpan {
            ids: Ids::of(r.trace, r.parent_span_id, r.parent_span_id.is_some()),
            start_ns: unix_ns(r.start),
            end_ns: unix_ns(r.end),
            method: r.method,
            route: r.route,
            path: r.path.to_owned(),
            protocol_version: r.protocol_version,
            status_code: r.status_code,
        }))
    }

    /// Roughly its encoded size, for batching by bytes.
    pub(crate) fn weight(&self) -> usize {
        match self {
            SpanItem::Call(c) => {
                200 + c.values.iter().map(|v| v.len() + 16).sum::<usize>()
                    + c.error.as_ref().map_or(0, String::len)
                    + c.scores.iter().map(|s| s.name.len() + 80).sum::<usize>()
            }
            SpanItem::Request(r) => 250 + r.path.len(),
        }
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: u64) -> KeyValue {
    kv(
        key,
        Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX)),
    )
}

/// The resource every span of this process carries: `service.name`, the
/// SDK's name and version, `OTEL_RESOURCE_ATTRIBUTES`.
pub(crate) fn resource(service_name: &str, attributes: &[(String, String)]) -> Resource {
    let mut out = vec![
        text("service.name", service_name),
        text("telemetry.sdk.name", "hyperkit-obs"),
        text("telemetry.sdk.language", "rust"),
        text("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ];
    for (k, v) in attributes {
        if k == "service.name" {
            continue;
        }
        out.retain(|a| a.key != *k);
        out.push(text(k, v));
    }
    Resource {
        attributes: out,
        ..Default::default()
    }
}

/// W3C's flags in OTLP's span flags: bits 0-7 the trace flags, bit 8 "the
/// parent's remoteness is known", bit 9 "the parent is remote".
fn flags(ids: &Ids) -> u32 {
    let mut f = 0x1 | 0x100;
    if ids.remote_parent {
        f |= 0x200;
    }
    f
}

fn span_base(ids: &Ids, name: String, kind: SpanKind, start: u64, end: u64) -> Span {
    Span {
        trace_id: ids.trace_id.to_bytes().to_vec(),
        span_id: ids.span_id.to_bytes().to_vec(),
        trace_state: ids.state.as_str().to_owned(),
        parent_span_id: ids
            .parent
            .map(|p| p.to_bytes().to_vec())
            .unwrap_or_default(),
        flags: flags(ids),
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        ..Default::default()
    }
}

fn label<'a>(c: &'a CallSpan, name: &str) -> Option<&'a str> {
    c.names
        .iter()
        .position(|n| *n == name)
        .and_then(|i| c.values.get(i))
        .map(|v| &**v)
}

fn call_span(c: &CallSpan) -> Span {
    let model = c.domain == "model";
    let query = c.domain == "query";
    let name = match (model, label(c, "task"), label(c, "model")) {
        // GenAI's span name: "{operation} {model}".
        (true, Some(task), Some(m)) => format!("{task} {m}"),
        _ => c.function.to_owned(),
    };
    let kind = if model || query {
        SpanKind::Client
    } else {
        SpanKind::Internal
    };
    let mut span = span_base(&c.ids, name, kind, c.start_ns, c.end_ns);
    if c.for_mlflow {
        // The call's own trace in MLflow; the link to its parent kept.
        span.parent_span_id.clear();
        span.flags &= !0x200;
    }
    let a = &mut span.attributes;
    if c.for_mlflow {
        if let Some(parent) = c.ids.parent {
            a.push(text("hyperkit.parent_span_id", &parent.to_string()));
        }
        a.push(text("mlflow.spanType", "LLM"));
    }
    for (n, v) in c.names.iter().zip(c.values) {
        a.push(text(n, v));
    }
    a.push(text(
        "code.function.name",
        &format!("{}::{}", c.module, c.function),
    ));
    a.push(text("hyperkit.domain", c.domain));
    a.push(text("hyperkit.status", c.status.as_str()));
    if model {
        if let Some(task) = label(c, "task") {
            a.push(text("gen_ai.operation.name", task));
        }
        if let Some(m) = label(c, "model") {
            a.push(text("gen_ai.request.model", m));
        }
        if let Some(p) = c.provider.or_else(|| label(c, "provider")) {
            a.push(text("gen_ai.provider.name", p));
        }
        if let Some(u) = &c.usage {
            if let Some(n) = u.input_tokens {
                a.push(int("gen_ai.usage.input_tokens", n));
            }
            if let Some(n) = u.output_tokens {
                a.push(int("gen_ai.usage.output_tokens", n));
            }
        }
        if let Some(first) = c.time_to_first_token {
            a.push(kv(
                "hyperkit.time_to_first_token_seconds",
                Value::DoubleValue(first.as_secs_f64()),
            ));
        }
        if let Some(rate) = c.output_tokens_per_second {
            a.push(kv(
                "hyperkit.output_tokens_per_second",
                Value::DoubleValue(rate),
            ));
        }
    }
    for score in &c.scores {
        // The GenAI conventions' evaluation event, on the evaluated span.
        let at = u64::try_from(score.at_ms)
            .unwrap_or(0)
            .saturating_mul(1_000_000)
            .clamp(c.start_ns, c.end_ns.max(c.start_ns));
        span.events.push(Event {
            time_unix_nano: at,
            name: "gen_ai.evaluation.result".to_owned(),
            attributes: vec![
                text("gen_ai.evaluation.name", &score.name),
                kv(
                    "gen_ai.evaluation.score.value",
                    Value::DoubleValue(score.value),
                ),
            ],
            dropped_attributes_count: 0,
        });
    }
    let a = &mut span.attributes;
    if query {
        if let Some(op) = label(c, "operation") {
            a.push(text("db.operation.name", op));
        }
        if let Some(db) = label(c, "db") {
            a.push(text("db.system.name", db));
        }
    }
    match c.status {
        Status::Failure | Status::Panic => {
            let error_type = match (c.status, c.error_type) {
                (Status::Panic, _) => "panic".to_owned(),
                (_, Some(ty)) => crate::util::short_type_name(ty).to_owned(),
                _ => "_OTHER".to_owned(),
            };
            a.push(text("error.type", &error_type));
            span.status = Some(SpanStatus {
                message: c.error.clone().unwrap_or_else(|| match c.status {
                    Status::Panic => "panicked".to_owned(),
                    _ => "failed".to_owned(),
                }),
                code: StatusCode::Error as i32,
            });
        }
        Status::Success | Status::Cancelled => {}
    }
    span
}

fn request_span(r: &RequestSpan) -> Span {
    // HTTP's span name: "{method} {route}".
    let mut span = span_base(
        &r.ids,
        format!("{} {}", r.method, r.route),
        SpanKind::Server,
        r.start_ns,
        r.end_ns,
    );
    let a = &mut span.attributes;
    a.push(text(
        "http.request.method",
        if r.method == "other" {
            "_OTHER"
        } else {
            r.method
        },
    ));
    if r.route != "unmatched" {
        a.push(text("http.route", r.route));
    }
    a.push(text("url.path", &r.path));
    a.push(text("url.scheme", "http"));
    if !r.protocol_version.is_empty() {
        a.push(text("network.protocol.version", r.protocol_version));
    }
    match r.status_code {
        Some(code) => {
            a.push(int("http.response.status_code", u64::from(code)));
            // A server span is an error for 5xx only.
            if code >= 500 {
                a.push(text("error.type", &code.to_string()));
                span.status = Some(SpanStatus {
                    message: String::new(),
                    code: StatusCode::Error as i32,
                });
            }
        }
        None => {
            a.push(text("error.type", "_OTHER"));
            span.status = Some(SpanStatus {
                message: "the request failed or was dropped before it was answered".to_owned(),
                code: StatusCode::Error as i32,
            });
        }
    }
    span
}

/// The export request of `items` (each as its OTLP span).
pub(crate) fn request(resource: &Resource, items: &[SpanItem]) -> ExportTraceServiceRequest {
    let spans = items
        .iter()
        .map(|item| match item {
            SpanItem::Call(c) => call_span(c),
            SpanItem::Request(r) => request_span(r),
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "hyperkit-obs".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The request's body in `protocol`, its content type, and whether it is
/// gzipped (when asked, unless compressing failed).
pub(crate) fn body(
    request: &ExportTraceServiceRequest,
    protocol: Protocol,
    gzip: bool,
) -> (Vec<u8>, &'static str, bool) {
    let (raw, content_type) = match protocol {
        Protocol::HttpProtobuf => (request.encode_to_vec(), "application/x-protobuf"),
        // Serialising these messages cannot fail: no map keys, no floats
        // that JSON refuses (spans carry none).
        Protocol::HttpJson => (
            serde_json::to_vec(request).unwrap_or_default(),
            "application/json",
        ),
    };
    if !gzip {
        return (raw, content_type, false);
    }
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 3),
        flate2::Compression::fast(),
    );
    match enc.write_all(&raw).and_then(|()| enc.finish()) {
        Ok(gz) => (gz, content_type, true),
        Err(_) => (raw, content_type, false),
    }
}
