//! The demo's two services share one trace per build: the API receives a
//! build, hands it to the agent over HTTP with `traceparent`, the agent
//! runs it (a build, a model call, deploys) and reports back to the API.
//! Read from the local log store once the demo stopped, as
//! `hyperkit-obs logs search 'trace.id:<id>'` reads it, and from the spans
//! the demo exported to an OTLP/HTTP *fixture* (test-support's HTTP fixture
//! answering 200 as a collector does, the requests decoded with the
//! OpenTelemetry protobuf definitions: no Collector can be installed here).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyperkit_obs::logs::{LogStore, Query, SearchOptions};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use test_support::TempDir;
use test_support::fixture::{HttpFixture, Response};

use crate::tmux::settings_to_drop;

/// How long a loaded 2-core machine may take to finish a build at 200x.
const WITHIN: Duration = Duration::from_secs(120);

fn text<'a>(line: &'a Value, key: &str) -> &'a str {
    line[key].as_str().unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every span the collector fixture received, of the trace `trace_id`.
fn spans_of(collector: &HttpFixture, trace_id: &str) -> Vec<Span> {
    collector
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/traces")
        .filter_map(|r| ExportTraceServiceRequest::decode(&r.body[..]).ok())
        .flat_map(|r| r.resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect()
}

#[test]
fn a_build_is_one_trace_across_the_api_and_the_agent() {
    let dir = TempDir::new("demo-one-trace");
    let collector = HttpFixture::start(|_| {
        Response::new(
            200,
            "application/x-protobuf",
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
        .into()
    });
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"));
    for name in settings_to_drop() {
        demo.env_remove(name);
    }
    // No failures: the build followed deploys and reports success.
    let mut child = demo
        .current_dir(dir.path())
        .env("HYPERKIT_METRICS_ADDR", "127.0.0.1:0")
        .env("HYPERKIT_DEMO_SPEED", "200")
        .env("HYPERKIT_DEMO_FAILURE_RATE", "0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("demo starts");
    let rx = crate::stdout_lines(&mut child);

    // Piped, the demo prints every event as a JSON line: wait for the API
    // to hear from the agent that a build succeeded.
    let deadline = Instant::now() + WITHIN;
    let mut seen = Vec::new();
    let finished = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break None;
        };
        let parsed: Option<Value> = serde_json::from_str(&line).ok();
        seen.push(line);
        if let Some(v) = parsed
            && text(&v, "demo.service") == "api"
            && text(&v, "message").ends_with(" succeeded")
        {
            break Some(v);
        }
    };
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    let finished = finished.unwrap_or_else(|| {
        panic!(
            "no build succeeded within {WITHIN:?}; last lines: {:#?}",
            &seen[seen.len().saturating_sub(20)..]
        )
    });
    assert!(status.success(), "demo exit status {status:?}");

    let trace_id = text(&finished, "trace.id");
    let build_id = finished["build.id"].as_u64().expect("build.id");
    assert_eq!(trace_id.len(), 32, "{finished}");
    let store = LogStore::open(dir.path().join("hyperkit-data/logs")).expect("the local store");
    let query = Query::parse(&format!("trace.id:{trace_id}")).unwrap();
    let options = SearchOptions {
        limit: 1000,
        ..SearchOptions::default()
    };
    let lines: Vec<Value> = store
        .search(&query, &options)
        .expect("search")
        .iter()
        .map(|l| serde_json::from_str(&l.document).expect("a stored document is JSON"))
        .collect();
    let of = |service: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| text(l, "demo.service") == service)
            .collect()
    };
    let (api, agent) = (of("api"), of("agent"));
    let message = |lines: &[&Value], message: &str| -> Value {
        lines
            .iter()
            .find(|l| text(l, "message") == message)
            .map(|l| (*l).clone())
            .unwrap_or_else(|| panic!("no line {message:?} in trace {trace_id}: {lines:#?}"))
    };

    // The API received the build, handed it over, and heard it succeeded.
    let received = message(&api, &format!("build {build_id} received"));
    message(&api, &format!("build {build_id} handed to the agent"));
    let reported = message(&api, &format!("build {build_id} succeeded"));
    // The agent accepted it and ran it: the build, its model call and its
    // deploy are tracked calls of the same trace.
    let accepted = message(&agent, &format!("build {build_id} accepted"));
    let functions: Vec<&str> = agent
        .iter()
        .map(|l| text(l, "log.origin.function"))
        .collect();
    for function in ["build", "complete", "deploy"] {
        assert!(
            functions.contains(&function),
            "no {function} line in the agent's part of trace {trace_id}: {functions:?}"
        );
    }
    assert!(
        lines.iter().all(|l| text(l, "trace.id") == trace_id),
        "{lines:#?}"
    );

    // Each hop's parent: the agent's request is a child of the API's, the
    // report back a child of the agent's request; the build has its own span.
    assert_eq!(
        text(&accepted, "parent.id"),
        text(&received, "span.id"),
        "the agent's request names the API's span as its parent:\n{accepted}\n{received}"
    );
    assert_eq!(
        text(&reported, "parent.id"),
        text(&accepted, "span.id"),
        "the report names the agent's request span as its parent:\n{reported}\n{accepted}"
    );
    let build = agent
        .iter()
        .find(|l| text(l, "log.origin.function") == "build")
        .unwrap();
    assert_eq!(text(build, "status"), "success", "{build}");
    for other in [&received, &accepted, &reported] {
        assert_ne!(text(build, "span.id"), text(other, "span.id"));
    }

    // The spans, as a tracing backend shows them: the API's request at the
    // root, the agent's request under it, the build under that with its
    // model call, and the report back under the agent's request. The demo
    // exited cleanly, so its exporter sent everything before it did.
    let spans = spans_of(&collector, trace_id);
    let named = |name: &str| -> &Span {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            panic!("no span {name:?} in trace {trace_id}: {names:?}")
        })
    };
    let root = named("POST /api/chains/{chain}/builds");
    let agent_request = named("POST /builds/{chain}/{id}");
    let build_span = named("build");
    let report = named("PUT /api/builds/{id}/status");
    assert!(root.parent_span_id.is_empty(), "{root:?}");
    assert_eq!(hex(&root.span_id), text(&received, "span.id"));
    assert_eq!(agent_request.parent_span_id, root.span_id);
    assert_eq!(hex(&agent_request.span_id), text(&accepted, "span.id"));
    assert_eq!(build_span.parent_span_id, agent_request.span_id);
    assert_eq!(hex(&build_span.span_id), text(build, "span.id"));
    assert_eq!(report.parent_span_id, agent_request.span_id);
    assert_eq!(hex(&report.span_id), text(&reported, "span.id"));
    let model_call = spans
        .iter()
        .find(|s| s.name.starts_with("codegen "))
        .unwrap_or_else(|| panic!("no model call span in trace {trace_id}"));
    assert_eq!(model_call.parent_span_id, build_span.span_id);
}
