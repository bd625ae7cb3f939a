//! `/health/ready` against a real server, with real registered checks.
//!
//! Checks are process-wide: every test here takes `CHECKS_LOCK`, so while
//! it runs the checks registered are exactly its own, and it removes them
//! when it ends (even by a panic). The other tests of this binary that ask
//! `/health/ready` take it too, with no checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hyperkit_obs::health;
use hyperkit_obs::http::{HttpOptions, Server, router_with, serve_router};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

static CHECKS_LOCK: Mutex<()> = Mutex::const_new(());

/// Holds the checks lock and deregisters the named checks when dropped.
pub(crate) struct OwnChecks {
    names: Vec<&'static str>,
    _lock: MutexGuard<'static, ()>,
}

impl Drop for OwnChecks {
    fn drop(&mut self) {
        for name in &self.names {
            health::deregister(name);
        }
    }
}

/// Takes the checks lock for the checks `names` the caller registers (none
/// for a test that only asks `/health/ready`).
pub(crate) async fn own_checks(names: &[&'static str]) -> OwnChecks {
    OwnChecks {
        names: names.to_vec(),
        _lock: CHECKS_LOCK.lock().await,
    }
}

async fn start(options: HttpOptions) -> (Server, String) {
    let server = serve_router("127.0.0.1:0".parse().unwrap(), router_with(options))
        .await
        .expect("the server binds 127.0.0.1:0");
    let url = format!("http://{}/health/ready", server.local_addr());
    (server, url)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `/health/ready`: the status and the JSON body.
async fn ready(url: &str) -> (StatusCode, Value) {
    let resp = client().get(url).send().await.expect("GET /health/ready");
    let status = resp.status();
    assert_eq!(
        resp.headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = resp.bytes().await.expect("the body");
    let body = serde_json::from_slice(&body).expect("a JSON body");
    (status, body)
}

/// Asks `/health/ready` until it answers `want`, failing after `within`.
async fn ready_until(url: &str, want: StatusCode, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = ready(url).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/health/ready still {status} (not {want}) after {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The check timeout of tests whose checks answer at once: a deadline for a
/// loaded machine (a panic's backtrace, printed under `RUST_BACKTRACE=1`
/// beside two CPU-bound processes, once took longer than 500 ms), never
/// waited for when all goes well.
const ANSWERS_WITHIN: Duration = Duration::from_secs(30);

/// How long a test waits for readiness to change after it changed a check.
const CONDITION_WITHIN: Duration = Duration::from_secs(30);

fn options(timeout: Duration, cache: Duration) -> HttpOptions {
    HttpOptions::default().checks(timeout, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_checks_registered_the_service_is_ready() {
    let _own = own_checks(&[]).await;
    let (_server, url) = start(HttpOptions::default()).await;

    let (status, body) = ready(&url).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ready", "checks": {}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_required_check_as_it_fails_and_recovers() {
    let _own = own_checks(&["database-flip"]).await;
    let up = Arc::new(AtomicBool::new(true));
    health::register("database-flip", {
        let up = up.clone();
        move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok("SELECT 1 answered".to_owned())
                } else {
                    Err("connection refused".to_owned())
                }
            }
        }
    });
    let (_server, url) = start(options(ANSWERS_WITHIN, Duration::from_millis(50))).await;

    let (status, healthy) = ready(&url).await;
    up.store(false, Ordering::SeqCst);
    let failing = ready_until(&url, StatusCode::SERVICE_UNAVAILABLE, CONDITION_WITHIN).await;
    up.store(true, Ordering::SeqCst);
    let recovered = ready_until(&url, StatusCode::OK, CONDITION_WITHIN).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(healthy["status"], "ready");
    let check = &healthy["checks"]["database-flip"];
    assert_eq!(
        (&check["status"], &check["detail"], &check["required"]),
        (&json!("pass"), &json!("SELECT 1 answered"), &json!(true)),
        "{healthy}"
    );
    assert!(check["latency_ms"].is_u64(), "{healthy}");
    assert_eq!(failing["status"], "not_ready", "{failing}");
    assert_eq!(
        failing["checks"]["database-flip"]["status"], "fail",
        "{failing}"
    );
    assert_eq!(
        failing["checks"]["database-flip"]["detail"], "connection refused",
        "{failing}"
    );
    assert_eq!(recovered["status"], "ready", "{recovered}");
    assert_eq!(recovered["checks"]["database-flip"]["status"], "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_slower_than_the_timeout_fails_as_timed_out() {
    let _own = own_checks(&["slow-dependency"]).await;
    health::register("slow-dependency", || async {
        tokio::time::sleep(Duration::from_secs(120)).await;
        Ok::<_, String>("too late".to_owned())
    });
    let (_server, url) = start(options(
        Duration::from_millis(200),
        Duration::from_millis(50),
    ))
    .await;
    let started = Instant::now();

    let (status, body) = ready(&url).await;

    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    let check = &body["checks"]["slow-dependency"];
    assert_eq!(check["status"], "fail", "{body}");
    assert!(
        check["detail"]
            .as_str()
            .is_some_and(|d| d.contains("timed out")),
        "{body}"
    );
    assert!(
        took < Duration::from_secs(60),
        "the answer waits for the timeout, not the check: {took:?}"
    );
}

async fn exploding_check() -> Result<String, String> {
    panic!("check exploded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_check_fails_and_the_endpoint_keeps_answering() {
    let _own = own_checks(&["panicking", "steady"]).await;
    health::register("panicking", exploding_check);
    health::register("steady", || async { Ok::<_, String>("fine".to_owned()) });
    let (_server, url) = start(options(ANSWERS_WITHIN, Duration::from_millis(50))).await;

    let (status, body) = ready(&url).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    let check = &body["checks"]["panicking"];
    assert_eq!(check["status"], "fail", "{body}");
    assert!(
        check["detail"]
            .as_str()
            .is_some_and(|d| d.contains("panicked")),
        "{body}"
    );
    assert_eq!(body["checks"]["steady"]["status"], "pass", "{body}");
    let again = ready_until(&url, StatusCode::SERVICE_UNAVAILABLE, CONDITION_WITHIN).await;
    assert_eq!(again["checks"]["panicking"]["status"], "fail", "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_optional_check_is_reported_but_the_service_stays_ready() {
    let _own = own_checks(&["cache-optional", "database-required"]).await;
    health::register_optional("cache-optional", || async {
        Err::<String, _>("cache unreachable".to_owned())
    });
    health::register("database-required", || async {
        Ok::<_, String>("ok".to_owned())
    });
    let (_server, url) = start(options(ANSWERS_WITHIN, Duration::from_millis(50))).await;

    let (status, body) = ready(&url).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    let optional = &body["checks"]["cache-optional"];
    assert_eq!(
        (
            &optional["status"],
            &optional["detail"],
            &optional["required"]
        ),
        (&json!("fail"), &json!("cache unreachable"), &json!(false)),
        "{body}"
    );
    assert_eq!(body["checks"]["database-required"]["status"], "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readiness_requests_share_one_run_of_a_check() {
    let _own = own_checks(&["counted"]).await;
    let runs = Arc::new(AtomicUsize::new(0));
    health::register("counted", {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, String>("ok".to_owned())
            }
        }
    });
    let (_server, url) = start(options(ANSWERS_WITHIN, Duration::from_secs(30))).await;

    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { ready(&url).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one run for 20 requests");
}
