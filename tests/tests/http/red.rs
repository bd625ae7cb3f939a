//! The RED layer (`HttpMetricsLayer`): requests counted once under their
//! route template, unmatched ones apart, abandoned ones as cancelled.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use hyperkit_obs::http::{HttpMetricsLayer, HttpOptions, router_with};
use test_support::metrics::{counter, gauge, histogram_count};
use test_support::wait::eventually_every;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify};

use crate::{client, send, start};

/// Serialises the tests that go through `HttpMetricsLayer`.
static LAYER_LOCK: Mutex<()> = Mutex::const_new(());

const REQUESTS: &str = "hyperkit_http_requests_total";
const DURATIONS: &str = "hyperkit_http_request_duration_seconds";
const IN_FLIGHT: &str = "hyperkit_http_requests_in_flight";

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

    eventually_every(
        "the abandoned request is counted",
        Duration::from_secs(5),
        Duration::from_millis(10),
        async || match counter(REQUESTS, &cancelled) {
            1 => Ok(()),
            n => Err(format!("{REQUESTS}{cancelled:?} = {n}")),
        },
    )
    .await;
    assert_eq!(gauge(IN_FLIGHT, &[]), flight_before, "{IN_FLIGHT} is back");
    assert_eq!(
        histogram_count(DURATIONS, &[("method", "GET"), ("route", "/hang")]),
        1
    );
}
