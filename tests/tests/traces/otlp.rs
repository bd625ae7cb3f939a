//! The OTLP span exporter against an OTLP/HTTP *fixture*: no OpenTelemetry
//! Collector can be installed here, so test-support's HTTP fixture stands
//! in for one. It decodes each `ExportTraceServiceRequest` with the OpenTelemetry
//! protobuf definitions (`opentelemetry-proto`), and answers as the OTLP
//! specification documents: 200 (with or without a partial success), 429
//! with `Retry-After`, 503, 400. What a user would check: parent/child
//! structure, attributes, status, resource attributes from
//! `OTEL_RESOURCE_ATTRIBUTES`, the sampling ratio, retries, counted drops,
//! and nothing lost within the bound while the collector is down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_core::Stream;
use hyperkit_obs::trace::{self, OtlpConfig, Sampler, SpanSinkGuard};
use hyperkit_obs::{
    ModelChunk, ModelOutput, MonitoringConfig, track_build, track_model, track_query,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use test_support::fixture::{HttpFixture, Request, Response};
use test_support::wait::wait_for_value;

/// How the fixture answers one request.
#[derive(Clone, Debug)]
enum Answer {
    Ok,
    Partial(i64, &'static str),
    TooMany { retry_after_s: u64 },
    Unavailable,
    BadRequest,
}

#[derive(Default)]
pub(super) struct FixtureState {
    /// Answers to give, in order; `Ok` once it is empty.
    script: VecDeque<Answer>,
    /// Requests answered 200, decoded, as they arrived.
    pub(super) received: Vec<(ExportTraceServiceRequest, Request)>,
    /// When each request arrived, and what it was answered.
    attempts: Vec<(Instant, u16)>,
}

/// An OTLP/HTTP receiver on test-support's HTTP fixture (which unpacks
/// gzip bodies), serving while it lives.
struct Fixture {
    state: Arc<Mutex<FixtureState>>,
    _server: HttpFixture,
}

impl Fixture {
    fn state(&self) -> MutexGuard<'_, FixtureState> {
        self.state.lock().unwrap()
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
pub(super) fn receive(state: &Mutex<FixtureState>, request: &Request) -> Response {
    let mut state = state.lock().unwrap();
    let answer = state.script.pop_front().unwrap_or(Answer::Ok);
    let code = match &answer {
        Answer::Ok | Answer::Partial(..) => 200,
        Answer::TooMany { .. } => 429,
        Answer::Unavailable => 503,
        Answer::BadRequest => 400,
    };
    state.attempts.push((request.at, code));
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/traces")
    );
    match answer {
        Answer::Ok | Answer::Partial(..) => {
            let decoded = if request.header("content-type") == Some("application/json") {
                serde_json::from_slice::<ExportTraceServiceRequest>(&request.body)
                    .expect("OTLP JSON")
            } else {
                ExportTraceServiceRequest::decode(&request.body[..]).expect("OTLP protobuf")
            };
            state.received.push((decoded, request.clone()));
            let response = ExportTraceServiceResponse {
                partial_success: match answer {
                    Answer::Partial(rejected, message) => Some(ExportTracePartialSuccess {
                        rejected_spans: rejected,
                        error_message: message.to_owned(),
                    }),
                    _ => None,
                },
            };
            Response::new(200, "application/x-protobuf", response.encode_to_vec())
        }
        Answer::TooMany { retry_after_s } => {
            Response::new(429, "text/plain", "").header("retry-after", retry_after_s.to_string())
        }
        Answer::Unavailable => Response::new(503, "text/plain", ""),
        Answer::BadRequest => Response::new(400, "text/plain", "malformed spans"),
    }
}

/// Starts the fixture on 127.0.0.1; returns it and its URL.
fn fixture(script: impl IntoIterator<Item = Answer>) -> (Fixture, String) {
    let state = Arc::new(Mutex::new(FixtureState {
        script: script.into_iter().collect(),
        ..FixtureState::default()
    }));
    let serving = Arc::clone(&state);
    let server = HttpFixture::start(move |request| receive(&serving, request).into());
    let url = server.url();
    (
        Fixture {
            state,
            _server: server,
        },
        url,
    )
}

/// The exporter as `init()` starts it from these variables.
pub(super) fn exporter(env: &[(&str, &str)]) -> SpanSinkGuard {
    let config = MonitoringConfig::from_lookup(|name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap();
    let otlp: OtlpConfig = config.trace.otlp.clone().expect("an endpoint is set");
    trace::otlp_start(&otlp, &config.service_name, &config.trace.resource).unwrap()
}

/// Tests run alone (in this binary): every span sink hears every sampled
/// call of the process, and the sampler is the process's.
fn one_at_a_time() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    super::sampling_alone()
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

#[test]
fn spans_arrive_as_a_tree_with_their_attributes_status_and_resource() {
    let _turn = one_at_a_time();
    let (fixture, url) = fixture([]);
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
    let trace_id = otlp_build();
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
    let (request, raw) = &state.received[0];
    assert_eq!(raw.header("x-api-key"), Some("s3cr3t"));
    assert_eq!(raw.header("content-encoding"), Some("gzip"));
    assert_eq!(raw.header("content-type"), Some("application/x-protobuf"));
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

struct Piece;
impl ModelChunk for Piece {
    fn output_tokens(&self) -> Option<u64> {
        Some(5)
    }
}

#[track_model(model = "small-1", task = "chat")]
fn otlp_stream() -> impl Stream<Item = Piece> {
    futures_util::stream::iter([Piece, Piece])
}

#[track_build(chain = "ethereum")]
fn otlp_streamed_build() -> Vec<u8> {
    let mut s = std::pin::pin!(otlp_stream());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while let std::task::Poll::Ready(Some(_)) = s.as_mut().poll_next(&mut cx) {
        std::thread::sleep(Duration::from_millis(2));
    }
    trace::current().unwrap().trace_id().to_bytes().to_vec()
}

#[test]
fn a_streamed_model_calls_span_has_its_time_to_first_token_and_output_rate() {
    let _turn = one_at_a_time();
    let (fixture, url) = fixture([]);
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let trace_id = otlp_streamed_build();
    assert!(guard.flush(Duration::from_secs(10)));
    let spans = fixture.spans_of(std::slice::from_ref(&trace_id));
    let model = spans
        .iter()
        .find(|s| s.name == "chat small-1")
        .unwrap_or_else(|| panic!("the streamed call's span: {spans:#?}"));
    let seconds = |ns: u64| ns as f64 / 1e9;
    let latency = seconds(model.end_time_unix_nano - model.start_time_unix_nano);
    let Some(Value::DoubleValue(first)) = attr(model, "hyperkit.time_to_first_token_seconds")
    else {
        panic!("time to first token on {model:#?}");
    };
    assert!(
        (0.0..latency).contains(first),
        "{first} s to the first item, within the call's {latency} s"
    );
    assert_eq!(
        attr(model, "gen_ai.usage.output_tokens"),
        Some(&Value::IntValue(10)),
        "two items of five"
    );
    let Some(Value::DoubleValue(rate)) = attr(model, "hyperkit.output_tokens_per_second") else {
        panic!("output rate on {model:#?}");
    };
    // The span's times are whole nanoseconds, as is the call's duration.
    let expected = 10.0 / (latency - first);
    assert!(
        (rate - expected).abs() <= expected * 1e-6,
        "{rate} tokens/s against 10 tokens in {} s",
        latency - first
    );
}

#[test]
fn http_json_is_understood_by_the_same_receiver() {
    let _turn = one_at_a_time();
    let (fixture, url) = fixture([]);
    let guard = exporter(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            &format!("{url}/v1/traces"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let trace_id = otlp_build();
    assert!(guard.flush(Duration::from_secs(10)));
    assert_eq!(fixture.spans_of(&[trace_id]).len(), 3);
    assert_eq!(
        fixture.state().received[0].1.header("content-type"),
        Some("application/json")
    );
}

#[test]
fn a_429_is_retried_after_its_retry_after_and_a_503_with_backoff_losing_nothing() {
    let _turn = one_at_a_time();
    let (fixture, url) = fixture([
        Answer::TooMany { retry_after_s: 1 },
        Answer::Unavailable,
        Answer::Unavailable,
    ]);
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let mut traces = Vec::new();
    for _ in 0..20 {
        traces.push(otlp_build());
    }
    let got = wait_for_value(
        "every span after the retries",
        Duration::from_secs(30),
        || {
            let n = fixture.spans_of(&traces).len();
            (n == 60).then_some(n)
        },
    );
    assert_eq!(got, 60);
    let attempts = fixture.state().attempts.clone();
    assert_eq!(attempts[0].1, 429);
    assert!(
        attempts[1].0 - attempts[0].0 >= Duration::from_millis(950),
        "the next attempt waited for Retry-After: {:?}",
        attempts[1].0 - attempts[0].0
    );
    // The fixture records a batch before its answer reaches the exporter.
    assert!(guard.flush(Duration::from_secs(30)), "{:?}", guard.status());
    let status = guard.status().unwrap();
    assert_eq!((status.dropped, status.rejected), (0, 0), "{status:?}");
    assert!(status.delivered >= 60, "{status:?}");
}

#[test]
fn a_partial_success_and_a_400_count_rejected_spans() {
    let _turn = one_at_a_time();
    let (fixture, url) = fixture([Answer::Partial(2, "2 spans too large"), Answer::BadRequest]);
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        // One call's three spans per request.
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    otlp_build();
    assert!(guard.flush(Duration::from_secs(10)));
    otlp_build();
    assert!(guard.flush(Duration::from_secs(10)));
    let status = guard.status().unwrap();
    assert_eq!(status.rejected, 2 + 3, "{status:?}");
    assert_eq!(
        fixture.state().attempts.len(),
        2,
        "refusals are not retried"
    );
}

#[test]
fn while_the_collector_is_down_spans_wait_within_the_bound_and_the_rest_are_counted() {
    let _turn = one_at_a_time();
    // Down (503) for the first 4 attempts, then up.
    let (fixture, url) = fixture(std::iter::repeat_n(Answer::Unavailable, 4));
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "30"),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let started = Instant::now();
    let mut traces = Vec::new();
    for _ in 0..15 {
        traces.push(otlp_build());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "callers never wait for the collector"
    );
    let status = guard.status().unwrap();
    assert_eq!(status.dropped, 15, "45 spans, 30 queued: {status:?}");
    let arrived = wait_for_value(
        "the queued spans once the collector is up",
        Duration::from_secs(60),
        || {
            let n = fixture.spans_of(&traces).len();
            (n == 30).then_some(n)
        },
    );
    assert_eq!(arrived, 30, "nothing within the bound is lost");
}

#[track_build(chain = "sampled")]
fn otlp_root() -> Vec<u8> {
    trace::current().unwrap().trace_id().to_bytes().to_vec()
}

#[test]
fn a_ratio_sampler_exports_its_share_of_traces_and_nothing_unsampled() {
    let _turn = one_at_a_time();
    let (fixture, url) = fixture([]);
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    trace::set_sampler(Sampler::ParentBasedTraceIdRatio(0.25));
    let traces: Vec<Vec<u8>> = (0..2000).map(|_| otlp_root()).collect();
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

#[track_model(model = "small-1", task = "scored", provider = "acme")]
fn otlp_scored() -> (Vec<u8>, hyperkit_obs::model::CallId) {
    let call = hyperkit_obs::model::current_call_id().unwrap();
    hyperkit_obs::model::record_score(call, "judge", 0.75).unwrap();
    (
        trace::current().unwrap().trace_id().to_bytes().to_vec(),
        call,
    )
}

/// A score recorded inside a sampled model call is a
/// `gen_ai.evaluation.result` event on its span, with the GenAI
/// conventions' attributes, timed within the span; one recorded after the
/// span was exported is not on it. The call's provider is the span's
/// `gen_ai.provider.name`.
#[test]
fn a_score_recorded_inside_a_model_call_is_an_evaluation_event_on_its_span() {
    let _turn = one_at_a_time();
    let (fixture, url) = fixture([]);
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
    ]);
    let (trace_id, call) = otlp_scored();
    hyperkit_obs::model::record_score(call, "later", 0.5).unwrap();
    assert!(guard.flush(Duration::from_secs(10)));
    let spans = fixture.spans_of(std::slice::from_ref(&trace_id));
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, "scored small-1");
    assert_eq!(text(span, "gen_ai.provider.name"), Some("acme"));
    assert_eq!(text(span, "provider"), None, "not a label");
    assert_eq!(span.events.len(), 1, "{:#?}", span.events);
    let event = &span.events[0];
    assert_eq!(event.name, "gen_ai.evaluation.result");
    let value = |key: &str| {
        event
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.clone())
    };
    assert_eq!(
        value("gen_ai.evaluation.name"),
        Some(Value::StringValue("judge".into()))
    );
    assert_eq!(
        value("gen_ai.evaluation.score.value"),
        Some(Value::DoubleValue(0.75))
    );
    assert!(
        (span.start_time_unix_nano..=span.end_time_unix_nano).contains(&event.time_unix_nano),
        "{event:?} within {}..{}",
        span.start_time_unix_nano,
        span.end_time_unix_nano
    );
}
