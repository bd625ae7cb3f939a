//! The HTTP side against a real server: `serve_router` on 127.0.0.1 port 0,
//! talked to over real TCP by `reqwest` and by hand-written raw requests:
//! `/metrics` (`metrics`), the routes and shutdown (`server`), the RED layer
//! (`red`), authentication (`auth`), bad input and slow clients (`limits`)
//! and `/health/ready` with real registered checks (`readiness`).
//!
//! The registry is process-wide and the tests run in parallel, so metric
//! assertions compare values read before and after, on series only one
//! test touches; the tests that go through `HttpMetricsLayer` (which share
//! the in-flight gauge and the `unmatched` series) take `red::LAYER_LOCK`.
//! Readiness checks are process-wide too: only `readiness` registers them,
//! holding its lock, and a test elsewhere that asks `/health/ready` holds
//! that lock with no checks of its own (`readiness::own_checks(&[])`).

mod auth;
mod limits;
mod metrics;
mod readiness;
mod red;
mod server;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyperkit_obs::http::{Server, serve_router};
use hyperkit_obs::track_build;
use reqwest::header::{HeaderMap, HeaderName};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

#[track_build(chain)]
fn build(chain: &str) {}

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

/// Sends `request`; the test fails if it gets no answer.
async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("an answer")
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header"))
}
