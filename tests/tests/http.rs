//! The HTTP side against a real server: `serve_router` on 127.0.0.1 port 0,
//! talked to over real TCP by `reqwest` and by hand-written raw requests.
//!
//! The registry is process-wide and the tests of this file run in parallel,
//! so metric assertions compare values read before and after, on series only
//! one test touches; the tests that go through `HttpMetricsLayer` (which
//! share the in-flight gauge and the `unmatched` series) take `LAYER_LOCK`.
//! Readiness checks are process-wide too: they are tested in `readiness.rs`,
//! and no test here registers one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use common::{counter, gauge, histogram_count};
use hyperkit_obs::http::{
    HEADER_TIMEOUT, HttpMetricsLayer, HttpOptions, MAX_CONNECTIONS, METRICS_CONTENT_TYPE, Server,
    router_with, serve_router,
};
use hyperkit_obs::{MetricsAuth, Secret, track_build};
use reqwest::header::{
    ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
    WWW_AUTHENTICATE,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify, mpsc};

/// Serialises the tests that go through `HttpMetricsLayer`.
static LAYER_LOCK: Mutex<()> = Mutex::const_new(());

const REQUESTS: &str = "hyperkit_http_requests_total";
const DURATIONS: &str = "hyperkit_http_request_duration_seconds";
const IN_FLIGHT: &str = "hyperkit_http_requests_in_flight";

#[track_build(chain)]
fn build(chain: &str) {}

// ---------------------------------------------------------------- helpers

/// Serves `app` on an ephemeral port of 127.0.0.1.
async fn start(app: Router) -> (Server, String) {
    let server = serve_router("127.0.0.1:0".parse().unwrap(), app)
        .await
        .expect("the server binds 127.0.0.1:0");
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

/// A client that talks to the server directly (no proxy from the
/// environment) and leaves `Content-Encoding` alone, so the test sees the
/// bytes the server sent.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls `probe` until it yields a value, failing after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not the case within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that the server at `base` still answers `GET /health/live`.
async fn assert_still_answers(base: &str, after: &str) {
    let resp = client()
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("after {after}, GET /health/live failed: {e}"));
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "after {after}, GET /health/live"
    );
}

/// Reads from `stream` until the server closes it (EOF or an error),
/// failing if that takes longer than `within`. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "{what}: the server kept the connection open for more than {within:?} (got {:?})",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the families declared by `# TYPE` and every sample.
#[derive(Debug)]
struct Exposition {
    families: BTreeSet<String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample named `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

/// Parses the text format 0.0.4 strictly enough that a malformed line, a
/// sample of an undeclared family or an unescaped label value is an error.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut families = BTreeSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or(format!("line {n}: TYPE without a type: {line:?}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("line {n}: unknown type {kind:?}"));
            }
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        if line.starts_with('#') {
            return Err(format!("line {n}: unknown comment {line:?}"));
        }
        let sample = parse_sample(line).map_err(|e| format!("line {n}: {e}: {line:?}"))?;
        let declared = families.iter().any(|f| {
            sample.name == *f
                || sample
                    .name
                    .strip_prefix(f.as_str())
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        });
        if !declared {
            return Err(format!("line {n}: sample of an undeclared family"));
        }
        samples.push(sample);
    }
    Ok(Exposition { families, samples })
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid_name {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices();
        loop {
            // label name up to '='
            let mut key = String::new();
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' if key.is_empty() => {
                        closed = true;
                        break;
                    }
                    c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                    c => return Err(format!("bad character {c:?} in a label name")),
                }
            }
            if closed {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some('\n') | None => return Err(format!("unterminated value of {key}")),
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} given twice"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &after_brace[i + 1..];
                    break;
                }
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
        if rest.starts_with('{') {
            return Err("unterminated label set".to_owned());
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = value.split(' ').next().unwrap_or_default();
    let value: f64 = value
        .parse()
        .map_err(|_| format!("value {value:?} is not a number"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// GETs `/metrics` (with `headers`) and returns the response's headers and
/// body as sent.
async fn scrape(base: &str, headers: HeaderMap) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = client()
        .get(format!("{base}/metrics"))
        .headers(headers)
        .send()
        .await
        .expect("GET /metrics");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("the /metrics body").to_vec();
    (status, headers, body)
}

/// Sends `request`; the test fails if it gets no answer.
async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("an answer")
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header"))
}

// ---------------------------------------------------------------- /metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answers_200_in_the_text_format_with_the_exposition_content_type() {
    build("http-scrape-plain");
    let (_server, base) = start(router_with(HttpOptions::default())).await;

    let (status, headers, body) = scrape(&base, HeaderMap::new()).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, CONTENT_TYPE),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        METRICS_CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        header(&headers, CONTENT_ENCODING),
        None,
        "not compressed unless asked"
    );
    let text = String::from_utf8(body).expect("the exposition is UTF-8");
    let exposition = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for family in [
        "hyperkit_builds_total",
        "hyperkit_build_duration_seconds",
        "hyperkit_active_builds",
    ] {
        assert!(
            exposition.families.contains(family),
            "{family} is served:\n{text}"
        );
    }
    assert_eq!(
        exposition.value(
            "hyperkit_builds_total",
            &[("chain", "http-scrape-plain"), ("status", "success")]
        ),
        Some(1.0),
        "the tracked call is in the scrape"
    );
    assert_eq!(
        exposition.value(
            "hyperkit_build_duration_seconds_count",
            &[("chain", "http-scrape-plain")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_gzipped_when_accepted_and_decompress_to_the_same_exposition() {
    build("http-scrape-gzip");
    build("http-scrape-gzip");
    let (_server, base) = start(router_with(HttpOptions::default())).await;
    let (_, _, plain) = scrape(&base, HeaderMap::new()).await;
    let mut accept_gzip = HeaderMap::new();
    accept_gzip.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));

    let (status, headers, gz) = scrape(&base, accept_gzip).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, CONTENT_ENCODING), Some("gzip"));
    assert_eq!(header(&headers, CONTENT_TYPE), Some(METRICS_CONTENT_TYPE));
    assert!(
        header(&headers, reqwest::header::VARY)
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
        "Vary names Accept-Encoding so caches keep both forms apart: {headers:?}"
    );
    assert!(gz.starts_with(&[0x1f, 0x8b]), "a gzip member");
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .expect("the body decompresses to UTF-8 text");
    let unzipped = parse_exposition(&text).unwrap_or_else(|e| panic!("gzip: {e}\n{text}"));
    let plain = String::from_utf8(plain).unwrap();
    let plain = parse_exposition(&plain).unwrap_or_else(|e| panic!("plain: {e}\n{plain}"));
    // Other tests add series meanwhile, so families only ever grow between
    // the two scrapes; this test's own series must be identical.
    assert!(
        plain.families.is_subset(&unzipped.families),
        "families missing from the gzip scrape: {:?}",
        plain
            .families
            .difference(&unzipped.families)
            .collect::<Vec<_>>()
    );
    let own = |e: &Exposition| -> Vec<Sample> {
        e.samples
            .iter()
            .filter(|s| s.labels.get("chain").map(String::as_str) == Some("http-scrape-gzip"))
            .cloned()
            .collect()
    };
    assert!(!own(&plain).is_empty());
    assert_eq!(own(&unzipped), own(&plain));
    assert_eq!(
        unzipped.value(
            "hyperkit_builds_total",
            &[("chain", "http-scrape-gzip"), ("status", "success")]
        ),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_answer_404_and_other_methods_on_metrics_answer_405() {
    let (_server, base) = start(router_with(HttpOptions::default())).await;
    let http = client();

    let unknown = send(http.get(format!("{base}/nope"))).await;
    let post = send(http.post(format!("{base}/metrics"))).await;

    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        header(post.headers(), ALLOW).is_some_and(|a| a.contains("GET")),
        "405 lists the allowed methods: {:?}",
        post.headers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_merges_into_an_app_with_its_own_root_and_serves_the_page_at_its_path() {
    // An app that owns `/`, as most do: merging must not panic.
    let app = Router::new()
        .route("/", get(|| async { "the app's own home" }))
        .merge(hyperkit_obs::http::router());
    let (_server, base) = start(app).await;
    let http = client();
    let home = send(http.get(format!("{base}/"))).await;
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(home.text().await.unwrap(), "the app's own home");
    let page = send(http.get(format!("{base}{}", hyperkit_obs::http::DEFAULT_STATUS_PAGE))).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        header(page.headers(), CONTENT_TYPE)
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("/api/status/history"));
    let data = send(http.get(format!("{base}/api/status/history"))).await;
    assert_eq!(data.status(), StatusCode::OK);

    // Elsewhere, or not at all.
    let moved = router_with(HttpOptions::default().status_page("ops/status"));
    let (_server, base) = start(moved).await;
    assert_eq!(
        send(http.get(format!("{base}/ops/status"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(http.get(format!("{base}/_status"))).await.status(),
        StatusCode::NOT_FOUND
    );
    let none = router_with(HttpOptions::default().without_status_page());
    let (_server, base) = start(none).await;
    assert_eq!(
        send(http.get(format!("{base}/_status"))).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(http.get(format!("{base}/api/status/history")))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(http.get(format!("{base}/metrics"))).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_answers_alive_in_json() {
    let (_server, base) = start(router_with(HttpOptions::default())).await;

    let resp = send(client().get(format!("{base}/health/live"))).await;

    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(resp.headers(), CONTENT_TYPE),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"status": "alive"}));
}

// ---------------------------------------------------------------- RED layer

/// An application with the RED layer on its routes and the observability
/// routes merged in, as the documentation shows.
fn layered_app(prefix: &'static str) -> Router {
    Router::new()
        .route(
            &format!("/{prefix}/items/{{id}}"),
            get(|Path(id): Path<String>| async move { id }),
        )
        .route(
            &format!("/{prefix}/fail"),
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .merge(router_with(HttpOptions::default()))
        .layer(HttpMetricsLayer::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_red_layer_counts_every_request_once_under_its_route_template() {
    let _layer = LAYER_LOCK.lock().await;
    let (_server, base) = start(layered_app("api")).await;
    let http = client();
    let items = [
        ("method", "GET"),
        ("route", "/api/items/{id}"),
        ("status", "200"),
    ];
    let fail = [("method", "GET"), ("route", "/api/fail"), ("status", "500")];
    let items_route = [("method", "GET"), ("route", "/api/items/{id}")];
    let fail_route = [("method", "GET"), ("route", "/api/fail")];
    let before = (
        counter(REQUESTS, &items),
        counter(REQUESTS, &fail),
        histogram_count(DURATIONS, &items_route),
        histogram_count(DURATIONS, &fail_route),
        gauge(IN_FLIGHT, &[]),
    );
    let (n, m, k) = (5, 3, 4);

    for i in 0..n {
        let id = format!("item-7f3a-{i}");
        let resp = send(http.get(format!("{base}/api/items/{id}"))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), id);
    }
    for _ in 0..m {
        let resp = send(http.get(format!("{base}/api/fail"))).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    for i in 0..k {
        let resp = send(http.get(format!("{base}/api/missing-9c1e-{i}"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    let after = (
        counter(REQUESTS, &items),
        counter(REQUESTS, &fail),
        histogram_count(DURATIONS, &items_route),
        histogram_count(DURATIONS, &fail_route),
        gauge(IN_FLIGHT, &[]),
    );
    assert_eq!(after.0 - before.0, n, "{REQUESTS}{items:?}");
    assert_eq!(after.1 - before.1, m, "{REQUESTS}{fail:?}");
    assert_eq!(after.2 - before.2, n, "{DURATIONS}{items_route:?} count");
    assert_eq!(after.3 - before.3, m, "{DURATIONS}{fail_route:?} count");
    assert_eq!(after.4, before.4, "{IN_FLIGHT} is back where it was");
    let raw: Vec<String> = hyperkit_obs::registry()
        .gather()
        .iter()
        .flat_map(|f| f.get_metric().iter().map(move |m| (f.name(), m)))
        .flat_map(|(family, m)| {
            m.get_label()
                .iter()
                .filter(|l| l.name() == "route")
                .filter(|l| l.value().contains("7f3a") || l.value().contains("9c1e"))
                .map(move |l| format!("{family}{{route={:?}}}", l.value()))
        })
        .collect();
    assert!(raw.is_empty(), "series keyed by a raw path: {raw:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_matching_no_route_are_counted_as_unmatched() {
    let _layer = LAYER_LOCK.lock().await;
    let (_server, base) = start(layered_app("unmatched-app")).await;
    let http = client();
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    let before = counter(REQUESTS, &unmatched);

    for i in 0..3 {
        let resp = send(http.get(format!("{base}/no/such/page-{i}"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    assert_eq!(
        counter(REQUESTS, &unmatched) - before,
        3,
        "{REQUESTS}{unmatched:?}: with the layer applied by `Router::layer` and \
         `router()` merged in (the documented composition), 404s must be counted \
         under route=\"unmatched\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_client_abandons_is_counted_as_cancelled_and_leaves_flight() {
    let _layer = LAYER_LOCK.lock().await;
    let entered = Arc::new(Notify::new());
    let app = Router::new()
        .route(
            "/hang",
            get({
                let entered = entered.clone();
                move || async move {
                    entered.notify_one();
                    std::future::pending::<()>().await;
                }
            }),
        )
        .layer(HttpMetricsLayer::new());
    let (server, _) = start(app).await;
    let cancelled = [
        ("method", "GET"),
        ("route", "/hang"),
        ("status", "cancelled"),
    ];
    let flight_before = gauge(IN_FLIGHT, &[]);
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /hang HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), entered.notified())
        .await
        .expect("the handler starts");
    assert_eq!(
        gauge(IN_FLIGHT, &[]),
        flight_before + 1,
        "in flight while it runs"
    );

    drop(stream);

    eventually(
        Duration::from_secs(5),
        "the abandoned request is counted",
        || async { (counter(REQUESTS, &cancelled) == 1).then_some(()) },
    )
    .await;
    assert_eq!(gauge(IN_FLIGHT, &[]), flight_before, "{IN_FLIGHT} is back");
    assert_eq!(
        histogram_count(DURATIONS, &[("method", "GET"), ("route", "/hang")]),
        1
    );
}

// ---------------------------------------------------------------- auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_guards_metrics_and_leaves_health_open() {
    build("http-auth-bearer");
    let options = HttpOptions::default().auth(MetricsAuth::Bearer(Secret::new("t0k3n")));
    let (_server, base) = start(router_with(options)).await;
    let http = client();
    let metrics = format!("{base}/metrics");

    let none = send(http.get(&metrics)).await;
    let wrong = send(http.get(&metrics).bearer_auth("t0k3m")).await;
    let longer = send(http.get(&metrics).bearer_auth("t0k3n0")).await;
    let basic = send(http.get(&metrics).basic_auth("t0k3n", Some("t0k3n"))).await;
    let right = send(http.get(&metrics).bearer_auth("t0k3n")).await;
    let live = send(http.get(format!("{base}/health/live"))).await;
    let ready = send(http.get(format!("{base}/health/ready"))).await;

    assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "no credentials");
    assert!(
        header(none.headers(), WWW_AUTHENTICATE).is_some_and(|c| c.starts_with("Bearer ")),
        "the challenge names the scheme: {:?}",
        none.headers()
    );
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "wrong token");
    assert_eq!(
        longer.status(),
        StatusCode::UNAUTHORIZED,
        "token with a suffix"
    );
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED, "another scheme");
    assert_eq!(right.status(), StatusCode::OK, "the right token");
    let exposition = right.text().await.expect("the /metrics body");
    assert!(
        exposition.contains(r#"chain="http-auth-bearer""#),
        "the exposition ({} bytes): {exposition:.300}",
        exposition.len()
    );
    assert_eq!(live.status(), StatusCode::OK, "liveness needs no token");
    assert_eq!(ready.status(), StatusCode::OK, "readiness needs no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_metrics_and_leaves_health_open() {
    build("http-auth-basic");
    let options = HttpOptions::default().auth(MetricsAuth::Basic {
        username: "prometheus".to_owned(),
        password: Secret::new("s3cret"),
    });
    let (_server, base) = start(router_with(options)).await;
    let http = client();
    let metrics = format!("{base}/metrics");

    let none = send(http.get(&metrics)).await;
    let wrong_password = send(http.get(&metrics).basic_auth("prometheus", Some("s3creT"))).await;
    let wrong_user = send(http.get(&metrics).basic_auth("grafana", Some("s3cret"))).await;
    let bearer = send(http.get(&metrics).bearer_auth("s3cret")).await;
    let right = send(http.get(&metrics).basic_auth("prometheus", Some("s3cret"))).await;
    let live = send(http.get(format!("{base}/health/live"))).await;
    let ready = send(http.get(format!("{base}/health/ready"))).await;

    assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "no credentials");
    assert!(
        header(none.headers(), WWW_AUTHENTICATE).is_some_and(|c| c.starts_with("Basic ")),
        "the challenge names the scheme: {:?}",
        none.headers()
    );
    assert_eq!(
        wrong_password.status(),
        StatusCode::UNAUTHORIZED,
        "wrong password"
    );
    assert_eq!(
        wrong_user.status(),
        StatusCode::UNAUTHORIZED,
        "wrong user name"
    );
    assert_eq!(bearer.status(), StatusCode::UNAUTHORIZED, "another scheme");
    assert_eq!(right.status(), StatusCode::OK, "the right credentials");
    let exposition = right.text().await.expect("the /metrics body");
    assert!(
        exposition.contains(r#"chain="http-auth-basic""#),
        "the exposition ({} bytes): {exposition:.300}",
        exposition.len()
    );
    assert_eq!(
        live.status(),
        StatusCode::OK,
        "liveness needs no credentials"
    );
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "readiness needs no credentials"
    );
}

// ---------------------------------------------------------------- bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_with_413_and_the_server_keeps_answering() {
    let (_server, base) = start(router_with(HttpOptions::default())).await;

    let resp = client()
        .post(format!("{base}/metrics"))
        .body(vec![b'x'; 1024 * 1024])
        .send()
        .await
        .expect("the server answers a 1 MB body");

    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_still_answers(&base, "a 1 MB body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_server_keeps_answering() {
    let (_server, base) = start(router_with(HttpOptions::default())).await;
    let mut headers = HeaderMap::new();
    let filler = HeaderValue::from_str(&"a".repeat(1000)).unwrap();
    for i in 0..200 {
        let name = HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap();
        headers.insert(name, filler.clone());
    }

    let result = client()
        .get(format!("{base}/health/live"))
        .headers(headers)
        .send()
        .await;

    match result {
        Ok(resp) => assert_eq!(
            resp.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "200 KB of headers"
        ),
        // The server may close the connection instead of answering.
        Err(e) => assert!(!e.is_timeout(), "refused at once, not left hanging: {e}"),
    }
    assert_still_answers(&base, "200 KB of headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_line_gets_400_or_a_close_and_the_server_keeps_answering() {
    let (server, base) = start(router_with(HttpOptions::default())).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();

    stream.write_all(b"GARBAGE\r\n\r\n").await.unwrap();

    let answer = read_until_closed(&mut stream, Duration::from_secs(3), "GARBAGE").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400 "),
        "a 400 or nothing: {answer:?}"
    );
    assert_still_answers(&base, "a malformed request line").await;
}

/// A slowloris client: sends part of a request line, then one more byte of
/// the head per second (never finishing it) for at most 8 s. Returns how
/// long after it connected the server closed the connection, or `None` if
/// the server still held it open at `HEADER_TIMEOUT + 3 s`.
async fn slow_client(addr: SocketAddr, opened: mpsc::Sender<()>) -> Option<Duration> {
    const TRICKLE: &[u8] = b"ve HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaa";
    let stream = TcpStream::connect(addr)
        .await
        .expect("a slow client connects");
    let started = tokio::time::Instant::now();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"GET /health/li")
        .await
        .expect("the first bytes are sent");
    let _ = opened.send(()).await;
    let give_up = started + HEADER_TIMEOUT + Duration::from_secs(3);
    let stop_trickling = started + Duration::from_secs(8);
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut rest = TRICKLE.iter();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = read.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                // Whatever the server says (a 408, say), it must then close.
                Ok(_) => {}
            },
            now = tick.tick() => {
                if let Some(byte) = rest.next().filter(|_| now < stop_trickling)
                    && write.write_all(std::slice::from_ref(byte)).await.is_err()
                {
                    return Some(started.elapsed());
                }
            }
            () = tokio::time::sleep_until(give_up) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_senders_do_not_block_others_and_are_cut_off_after_the_header_timeout() {
    const SLOW: usize = 50;
    let (server, base) = start(router_with(HttpOptions::default())).await;
    let (opened, mut open) = mpsc::channel(SLOW);
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(slow_client(server.local_addr(), opened.clone())))
        .collect();
    drop(opened);
    for i in 0..SLOW {
        tokio::time::timeout(Duration::from_secs(5), open.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {SLOW} slow clients connected within 5 s"))
            .expect("a slow client failed to connect");
    }

    let started = Instant::now();
    let resp = client()
        .get(format!("{base}/health/live"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("a normal client is served while 50 slow ones are open");
    let took = started.elapsed();

    assert_eq!(resp.status(), StatusCode::OK);
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    let mut closed_after = Vec::new();
    for task in slow {
        closed_after.push(task.await.expect("a slow client task"));
    }
    let still_open = closed_after.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {SLOW} slow connections still open {:?} after they connected",
        HEADER_TIMEOUT + Duration::from_secs(3)
    );
    let earliest = closed_after.iter().flatten().min().copied().unwrap();
    assert!(
        earliest >= HEADER_TIMEOUT / 2,
        "cut off by the header deadline, not at once: first closed after {earliest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once_and_idle_ones_time_out() {
    let (server, base) = start(router_with(HttpOptions::default())).await;
    let addr = server.local_addr();
    let mut idle = Vec::with_capacity(MAX_CONNECTIONS);
    for _ in 0..MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.expect("an idle connection"));
    }
    let started = Instant::now();
    let mut extra = TcpStream::connect(addr).await.unwrap();

    let answer = read_until_closed(
        &mut extra,
        Duration::from_secs(2),
        "connection past the limit",
    )
    .await;

    assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    let reads: Vec<_> = idle
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let deadline = HEADER_TIMEOUT + Duration::from_secs(3);
                loop {
                    match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => return true,
                        Ok(Ok(_)) => {}
                        Err(_) => return false,
                    }
                }
            })
        })
        .collect();
    let mut still_open = 0;
    for read in reads {
        still_open += usize::from(!read.await.unwrap());
    }
    assert_eq!(
        still_open,
        0,
        "idle connections (no byte sent) still open {:?} after the limit was reached",
        started.elapsed()
    );
    assert_still_answers(&base, "the idle connections timed out").await;
}

// ---------------------------------------------------------------- shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_a_request_in_progress_finish() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = Router::new().route(
        "/slow",
        get({
            let (entered, release) = (entered.clone(), release.clone());
            move || async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }
        }),
    );
    let (server, base) = start(app).await;
    let addr = server.local_addr();
    let request = tokio::spawn(async move { client().get(format!("{base}/slow")).send().await });
    tokio::time::timeout(Duration::from_secs(5), entered.notified())
        .await
        .expect("the slow handler starts");

    let shutdown = tokio::spawn(server.shutdown());

    eventually(
        Duration::from_secs(2),
        "new connections are refused",
        || async { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the request in progress"
    );
    release.notify_one();
    let resp = request
        .await
        .unwrap()
        .expect("the request in progress is answered");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(2), shutdown)
        .await
        .expect("shutdown returns once the request is done")
        .unwrap();
}
