//! The OTLP span exporter against an OTLP/HTTP *fixture*: no OpenTelemetry
//! Collector can be installed here, so a local HTTP server stands in for
//! one. It decodes each `ExportTraceServiceRequest` with the OpenTelemetry
//! protobuf definitions (`opentelemetry-proto`), and answers as the OTLP
//! specification documents: 200 (with or without a partial success), 429
//! with `Retry-After`, 503, 400. What a user would check: parent/child
//! structure, attributes, status, resource attributes from
//! `OTEL_RESOURCE_ATTRIBUTES`, the sampling ratio, retries, counted drops,
//! and nothing lost within the bound while the collector is down.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyperkit_obs::trace::{self, OtlpConfig, Sampler, SpanSinkGuard};
use hyperkit_obs::{ModelOutput, MonitoringConfig, track_build, track_model, track_query};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// How the fixture answers one request.
#[derive(Clone, Debug)]
enum Reply {
    Ok,
    Partial(i64, &'static str),
    TooMany { retry_after_s: u64 },
    Unavailable,
    BadRequest,
}

#[derive(Default)]
struct FixtureState {
    /// Replies to give, in order; `Ok` once it is empty.
    script: VecDeque<Reply>,
    /// Requests answered 200, decoded, with their headers.
    received: Vec<(ExportTraceServiceRequest, HeaderMap)>,
    /// When each request arrived, and what it was answered.
    attempts: Vec<(Instant, u16)>,
}

#[derive(Clone, Default)]
struct Fixture(Arc<Mutex<FixtureState>>);

impl Fixture {
    fn state(&self) -> MutexGuard<'_, FixtureState> {
        self.0.lock().unwrap()
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        self.state()
            .received
            .iter()
            .flat_map(|(r, _)| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    /// Spans of the traces in `traces`.
    fn spans_of(&self, traces: &[Vec<u8>]) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| traces.contains(&s.trace_id))
            .collect()
    }
}

/// `POST /v1/traces` as an OTLP/HTTP receiver answers it.
async fn receive(State(f): State<Fixture>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = f.state().script.pop_front().unwrap_or(Reply::Ok);
    let code = match &reply {
        Reply::Ok | Reply::Partial(..) => 200,
        Reply::TooMany { .. } => 429,
        Reply::Unavailable => 503,
        Reply::BadRequest => 400,
    };
    f.state().attempts.push((Instant::now(), code));
    let raw = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .expect("a gzip body");
        out
    } else {
        body.to_vec()
    };
    let json = headers["content-type"] == "application/json";
    match reply {
        Reply::Ok | Reply::Partial(..) => {
            let request = if json {
                serde_json::from_slice::<ExportTraceServiceRequest>(&raw).expect("OTLP JSON")
            } else {
                ExportTraceServiceRequest::decode(&raw[..]).expect("OTLP protobuf")
            };
            f.state().received.push((request, headers));
            let response = ExportTraceServiceResponse {
                partial_success: match reply {
                    Reply::Partial(rejected, message) => Some(ExportTracePartialSuccess {
                        rejected_spans: rejected,
                        error_message: message.to_owned(),
                    }),
                    _ => None,
                },
            };
            (
                [("content-type", "application/x-protobuf")],
                response.encode_to_vec(),
            )
                .into_response()
        }
        Reply::TooMany { retry_after_s } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_s.to_string())],
        )
            .into_response(),
        Reply::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Reply::BadRequest => (StatusCode::BAD_REQUEST, "malformed spans").into_response(),
    }
}

/// Starts the fixture on 127.0.0.1 (on the test's runtime).
async fn fixture(script: impl IntoIterator<Item = Reply>) -> (Fixture, String) {
    let f = Fixture::default();
    f.state().script.extend(script);
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(f.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (f, format!("http://{addr}"))
}

/// The exporter as `init()` starts it from these variables.
fn exporter(env: &[(&str, &str)]) -> SpanSinkGuard {
    let config = MonitoringConfig::from_lookup(|name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap();
    let otlp: OtlpConfig = config.trace.otlp.clone().expect("an endpoint is set");
    trace::otlp_start(&otlp, &config.service_name, &config.trace.resource).unwrap()
}

/// Tests take turns: every span sink hears every sampled call of the
/// process, and the sampler is the process's.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

async fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

struct Completion;
impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(120)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(40)
    }
}

#[track_query(operation = "insert")]
fn otlp_store() -> Result<(), String> {
    Err("disk full".into())
}

#[track_model(model = "small-1", task = "codegen")]
fn otlp_complete() -> Completion {
    let _ = otlp_store();
    Completion
}

#[track_build(chain = "ethereum")]
fn otlp_build() -> Vec<u8> {
    otlp_complete();
    trace::current().unwrap().trace_id().to_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_as_a_tree_with_their_attributes_status_and_resource() {
    let _turn = one_at_a_time().await;
    let (fixture, url) = fixture([]).await;
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr3t"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_SERVICE_NAME", "build-api"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test,team=obs%20core",
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let trace_id = tokio::task::spawn_blocking(otlp_build).await.unwrap();
    assert!(guard.flush(Duration::from_secs(10)));
    let spans = fixture.spans_of(std::slice::from_ref(&trace_id));
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let by = |name: &str| spans.iter().find(|s| s.name == name).unwrap().clone();
    let (build, model, query) = (by("otlp_build"), by("codegen small-1"), by("otlp_store"));
    assert!(build.parent_span_id.is_empty(), "the build is the root");
    assert_eq!(model.parent_span_id, build.span_id);
    assert_eq!(query.parent_span_id, model.span_id);
    assert!(
        spans
            .iter()
            .all(|s| s.end_time_unix_nano >= s.start_time_unix_nano)
    );

    assert_eq!(text(&build, "chain"), Some("ethereum"));
    assert_eq!(text(&model, "gen_ai.operation.name"), Some("codegen"));
    assert_eq!(text(&model, "gen_ai.request.model"), Some("small-1"));
    assert_eq!(
        attr(&model, "gen_ai.usage.input_tokens"),
        Some(&Value::IntValue(120))
    );
    assert_eq!(
        attr(&model, "gen_ai.usage.output_tokens"),
        Some(&Value::IntValue(40))
    );
    assert_eq!(model.kind, 3, "a model call is a CLIENT span");
    assert_eq!(text(&query, "db.operation.name"), Some("insert"));
    let status = query.status.clone().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "disk full"));
    assert_eq!(text(&query, "error.type"), Some("String"));
    assert!(
        build.status.is_none_or(|s| s.code == 0),
        "success leaves the status unset"
    );

    let state = fixture.state();
    let (request, headers) = &state.received[0];
    assert_eq!(headers["x-api-key"], "s3cr3t");
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let resource = request.resource_spans[0].resource.clone().unwrap();
    let res = |k: &str| {
        resource
            .attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    };
    assert_eq!(res("service.name").as_deref(), Some("build-api"));
    assert_eq!(res("deployment.environment.name").as_deref(), Some("test"));
    assert_eq!(res("team").as_deref(), Some("obs core"));
    assert_eq!(res("telemetry.sdk.language").as_deref(), Some("rust"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_is_understood_by_the_same_receiver() {
    let _turn = one_at_a_time().await;
    let (fixture, url) = fixture([]).await;
    let guard = exporter(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            &format!("{url}/v1/traces"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let trace_id = tokio::task::spawn_blocking(otlp_build).await.unwrap();
    assert!(guard.flush(Duration::from_secs(10)));
    assert_eq!(fixture.spans_of(&[trace_id]).len(), 3);
    assert_eq!(
        fixture.state().received[0].1["content-type"],
        "application/json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_and_a_503_with_backoff_losing_nothing() {
    let _turn = one_at_a_time().await;
    let (fixture, url) = fixture([
        Reply::TooMany { retry_after_s: 1 },
        Reply::Unavailable,
        Reply::Unavailable,
    ])
    .await;
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let mut traces = Vec::new();
    for _ in 0..20 {
        traces.push(tokio::task::spawn_blocking(otlp_build).await.unwrap());
    }
    let got = eventually(
        "every span after the retries",
        Duration::from_secs(30),
        || {
            let n = fixture.spans_of(&traces).len();
            (n == 60).then_some(n)
        },
    )
    .await;
    assert_eq!(got, 60);
    let attempts = fixture.state().attempts.clone();
    assert_eq!(attempts[0].1, 429);
    assert!(
        attempts[1].0 - attempts[0].0 >= Duration::from_millis(950),
        "the next attempt waited for Retry-After: {:?}",
        attempts[1].0 - attempts[0].0
    );
    let status = guard.status().unwrap();
    assert_eq!((status.dropped, status.rejected), (0, 0));
    assert!(status.delivered >= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_and_a_400_count_rejected_spans() {
    let _turn = one_at_a_time().await;
    let (fixture, url) = fixture([Reply::Partial(2, "2 spans too large"), Reply::BadRequest]).await;
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        // One call's three spans per request.
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    tokio::task::spawn_blocking(otlp_build).await.unwrap();
    assert!(guard.flush(Duration::from_secs(10)));
    tokio::task::spawn_blocking(otlp_build).await.unwrap();
    assert!(guard.flush(Duration::from_secs(10)));
    let status = guard.status().unwrap();
    assert_eq!(status.rejected, 2 + 3, "{status:?}");
    assert_eq!(
        fixture.state().attempts.len(),
        2,
        "refusals are not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_collector_is_down_spans_wait_within_the_bound_and_the_rest_are_counted() {
    let _turn = one_at_a_time().await;
    // Down (503) for the first 4 attempts, then up.
    let (fixture, url) = fixture(std::iter::repeat_n(Reply::Unavailable, 4)).await;
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "30"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let started = Instant::now();
    let mut traces = Vec::new();
    for _ in 0..15 {
        traces.push(tokio::task::spawn_blocking(otlp_build).await.unwrap());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "callers never wait for the collector"
    );
    let status = guard.status().unwrap();
    assert_eq!(status.dropped, 15, "45 spans, 30 queued: {status:?}");
    let arrived = eventually(
        "the queued spans once the collector is up",
        Duration::from_secs(60),
        || {
            let n = fixture.spans_of(&traces).len();
            (n == 30).then_some(n)
        },
    )
    .await;
    assert_eq!(arrived, 30, "nothing within the bound is lost");
}

#[track_build(chain = "sampled")]
fn otlp_root() -> Vec<u8> {
    trace::current().unwrap().trace_id().to_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_sampler_exports_its_share_of_traces_and_nothing_unsampled() {
    let _turn = one_at_a_time().await;
    let (fixture, url) = fixture([]).await;
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    trace::set_sampler(Sampler::ParentBasedTraceIdRatio(0.25));
    let traces: Vec<Vec<u8>> =
        tokio::task::spawn_blocking(|| (0..2000).map(|_| otlp_root()).collect())
            .await
            .unwrap();
    trace::set_sampler(Sampler::default());
    assert!(guard.flush(Duration::from_secs(20)));
    let exported = fixture.spans_of(&traces).len();
    // Binomial(2000, 0.25): mean 500, standard deviation 19.4; five of
    // them either side.
    assert!(
        (403..=597).contains(&exported),
        "{exported} of 2000 exported"
    );
}
