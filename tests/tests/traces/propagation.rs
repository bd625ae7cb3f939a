//! W3C trace context across HTTP: the `HttpMetricsLayer` reads
//! `traceparent`/`tracestate` from each request and makes the request's
//! span the parent of every tracked call under it; `trace::header_map()`
//! carries the current context into an outgoing request, so a request to
//! service A that calls service B is one trace. A malformed `traceparent`
//! starts a new trace and the request still succeeds. Span sinks receive
//! each sampled request's span with its HTTP attributes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use hyperkit_obs::calls::{self, CallSink, FinishedCall, FinishedRequest};
use hyperkit_obs::http::{HttpMetricsLayer, Server, serve_router};
use hyperkit_obs::{trace, track_model};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[track_model(model = "small-1", task = "review")]
async fn prop_review() -> String {
    let c = trace::current().unwrap();
    format!("{} {}", c.trace_id(), c.span_id())
}

/// Service B: answers with the trace id and span id of its tracked call.
pub(super) fn agent() -> Router {
    Router::new()
        .route("/run", get(|| async { prop_review().await }))
        .layer(HttpMetricsLayer::new())
}

/// Service A: logs a line, calls B with the current context, answers with
/// its own request's ids and B's answer.
pub(super) fn api(agent: String) -> Router {
    Router::new()
        .route(
            "/builds",
            get(|State(agent): State<String>| async move {
                let here = trace::current().unwrap();
                tracing::info!("handing the build to service B");
                let answer = client()
                    .get(format!("{agent}/run"))
                    .headers(trace::header_map())
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                format!("{} {} {answer}", here.trace_id(), here.span_id())
            }),
        )
        .with_state(agent)
        .layer(HttpMetricsLayer::new())
}

async fn start(app: Router) -> (Server, String) {
    let server = serve_router("127.0.0.1:0".parse().unwrap(), app)
        .await
        .expect("the server binds 127.0.0.1:0");
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A request's span as the sink saw it: trace, span, parent, status code,
/// `method route path`.
type SeenRequest = (String, String, Option<String>, Option<u16>, String);
/// A call's span: trace, span, parent.
type SeenCall = (String, String, Option<String>);

/// What the span sink saw: requests and calls, by span id.
#[derive(Default, Clone)]
struct Spans {
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    calls: Arc<Mutex<Vec<SeenCall>>>,
}

impl CallSink for Spans {
    fn on_call(&self, call: &FinishedCall<'_>) {
        let t = call.trace.unwrap();
        self.calls.lock().unwrap().push((
            t.trace_id().to_string(),
            t.span_id().to_string(),
            call.parent_span_id.map(|p| p.to_string()),
        ));
    }

    fn on_request(&self, r: &FinishedRequest<'_>) {
        self.requests.lock().unwrap().push((
            r.trace.trace_id().to_string(),
            r.trace.span_id().to_string(),
            r.parent_span_id.map(|p| p.to_string()),
            r.status_code,
            format!("{} {} {}", r.method, r.route, r.path),
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_two_services_is_one_trace_with_the_right_parents() {
    let _sampling = super::sampling().await;
    let spans = Spans::default();
    let _registration = calls::register_sampled(spans.clone());
    let (_b, agent_url) = start(agent()).await;
    let (_a, api_url) = start(api(agent_url)).await;

    let body = client()
        .get(format!("{api_url}/builds"))
        .header("traceparent", PARENT)
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ids: Vec<&str> = body.split(' ').collect();
    let (a_trace, a_span, b_trace, b_call) = (ids[0], ids[1], ids[2], ids[3]);
    assert_eq!(a_trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(b_trace, a_trace, "service B continues the trace");

    let requests = spans.requests.lock().unwrap().clone();
    let a = requests.iter().find(|r| r.1 == a_span).expect("A's span");
    assert_eq!(
        a.2.as_deref(),
        Some("00f067aa0ba902b7"),
        "A's parent is the caller"
    );
    assert_eq!(a.3, Some(200));
    assert_eq!(a.4, "GET /builds /builds");
    // The sink hears every test of this binary: B's span is the one in
    // this trace.
    let b = requests
        .iter()
        .find(|r| r.0 == a_trace && r.4.starts_with("GET /run"))
        .expect("B's span");
    assert_eq!(b.0, a_trace);
    assert_eq!(
        b.2.as_deref(),
        Some(a_span),
        "B's request's parent is A's request"
    );
    let calls = spans.calls.lock().unwrap().clone();
    let call = calls
        .iter()
        .find(|c| c.1 == b_call)
        .expect("B's model call");
    assert_eq!(
        call.2.as_deref(),
        Some(b.1.as_str()),
        "the call's parent is B's request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_starts_a_new_trace_and_the_request_succeeds() {
    let _sampling = super::sampling().await;
    let (_b, agent_url) = start(agent()).await;
    for bad in [
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ] {
        let response = client()
            .get(format!("{agent_url}/run"))
            .header("traceparent", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{bad}");
        let body = response.text().await.unwrap();
        let trace_id = body.split(' ').next().unwrap();
        assert_eq!(trace_id.len(), 32);
        assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_caller_makes_an_unsampled_request_whose_calls_are_not_exported() {
    let _sampling = super::sampling().await;
    let spans = Spans::default();
    let _registration = calls::register_sampled(spans.clone());
    let (_b, agent_url) = start(agent()).await;
    // A trace of this test's own: the sink hears the other tests too.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let body = client()
        .get(format!("{agent_url}/run"))
        .header("traceparent", unsampled)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("0af7651916cd43dd8448eb211c80319c "));
    let ours = |t: &String| t == "0af7651916cd43dd8448eb211c80319c";
    let exported = spans
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| ours(&r.0))
        .count()
        + spans
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| ours(&c.0))
            .count();
    assert_eq!(exported, 0, "sampling follows the parent's flag");
}
