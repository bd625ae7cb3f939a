//! An axum handler with extractors in its parameter patterns: its future stays
//! `Send`, so it is accepted by `Router::route`, and it serves real requests.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use hyperkit_obs::track_build;

struct AppState {
    artifacts: tokio::sync::Mutex<Vec<String>>,
}

#[track_build(chain)]
async fn start_build(
    State(state): State<Arc<AppState>>,
    Path(chain): Path<String>,
    body: String,
) -> Result<String, StatusCode> {
    if body.is_empty() {
        return Err(StatusCode::BAD_REQUEST);
    }
    // Holding a tokio lock across an await keeps the future `Send`.
    let mut artifacts = state.artifacts.lock().await;
    tokio::task::yield_now().await;
    artifacts.push(format!("{chain}:{body}"));
    Ok(format!("built {}", artifacts.len()))
}

fn assert_send<T: Send>(_: &T) {}

use test_support::metrics::counter_total as counter;

/// One HTTP/1.1 request over a plain socket; returns the status line.
fn post_to(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

fn main() {
    let state = Arc::new(AppState {
        artifacts: Default::default(),
    });
    assert_send(&start_build(
        State(state.clone()),
        Path("ethereum".to_owned()),
        "x".to_owned(),
    ));

    let app = Router::new()
        .route("/builds/{chain}", post(start_build))
        .with_state(state);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert_eq!(post_to(addr, "/builds/base", "contract"), "HTTP/1.1 200 OK");
    assert_eq!(
        post_to(addr, "/builds/base", ""),
        "HTTP/1.1 400 Bad Request"
    );

    let builds = |status| {
        counter(
            "hyperkit_builds_total",
            &[("chain", "base"), ("status", status)],
        )
    };
    assert_eq!(builds("success"), 1);
    assert_eq!(builds("failure"), 1);
}
