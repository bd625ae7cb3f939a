//! `/metrics` behind bearer or basic authentication, health left open.

use axum::http::StatusCode;
use hyperkit_obs::http::{HttpOptions, router_with};
use hyperkit_obs::{MetricsAuth, Secret};
use reqwest::header::WWW_AUTHENTICATE;

use crate::readiness::own_checks;
use crate::{build, client, header, send, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_guards_metrics_and_leaves_health_open() {
    // `/health/ready` answers for the checks registered: none, while this
    // test holds them.
    let _checks = own_checks(&[]).await;
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
    let _checks = own_checks(&[]).await;
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
