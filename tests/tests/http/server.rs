//! The routes the observability router serves, how it merges into an
//! application, and a graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hyperkit_obs::http::{HttpOptions, router_with};
use reqwest::header::{ALLOW, CONTENT_TYPE};
use test_support::wait::eventually_every;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::{client, header, send, start};

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

    eventually_every(
        "new connections are refused",
        Duration::from_secs(2),
        Duration::from_millis(10),
        async || match TcpStream::connect(addr).await {
            Err(_) => Ok(()),
            Ok(_) => Err("a connection was accepted".to_owned()),
        },
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
