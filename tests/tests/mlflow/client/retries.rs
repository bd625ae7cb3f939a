//! Retries and error typing: what is retried (500 on idempotent calls,
//! 502, 503, 429 after its `Retry-After`) and what is not, each error typed;
//! and the experiment race.

use std::time::Duration;

use hyperkit_obs::mlflow::{ErrorCode, Metric, MlflowError};

use super::fixture::{Fault, Fixture, error_body};
use super::{client, seeded_run};

#[tokio::test]
async fn a_500_is_retried_until_it_succeeds_and_typed_internal_error_when_retries_run_out() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let metric = [Metric::new("loss", 0.5, 1_700_000_000_000)];
    let internal = || Fault::mlflow(500, "INTERNAL_ERROR", "database is locked");

    fixture.fail("runs/log-batch", 2, internal());
    client(&fixture, &[])
        .log_batch(&run, &metric, &[], &[])
        .await
        .expect("the third attempt succeeds");
    assert_eq!(
        fixture.count("runs/log-batch"),
        3,
        "two 500s and one success"
    );

    let before = fixture.count("runs/log-batch");
    fixture.fail("runs/log-batch", 2, internal());
    let e = client(&fixture, &[("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")])
        .log_batch(&run, &metric, &[], &[])
        .await
        .expect_err("one retry is not enough for two 500s");
    assert_eq!(
        fixture.count("runs/log-batch") - before,
        2,
        "one request and one retry"
    );
    assert!(
        matches!(
            &e,
            MlflowError::Api { code: ErrorCode::InternalError, status: 500, message, .. }
                if message == "database is locked"
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_502_proxy_page_is_an_http_error_not_an_api_error_and_is_retried() {
    let fixture = Fixture::start();
    let client = client(&fixture, &[]);

    fixture.fail("experiments/get-by-name", 1, Fault::html(502));
    fixture.seed_experiment("behind a proxy");
    let found = client
        .get_experiment_by_name("behind a proxy")
        .await
        .unwrap();
    assert_eq!(found.map(|e| e.name).as_deref(), Some("behind a proxy"));
    assert_eq!(
        fixture.count("experiments/get-by-name"),
        2,
        "the 502 was retried"
    );

    // Four 502s: the request and its three retries all fail.
    fixture.fail("experiments/get-by-name", 4, Fault::html(502));
    let e = client
        .get_experiment_by_name("behind a proxy")
        .await
        .expect_err("every attempt answered 502");
    assert_eq!(fixture.count("experiments/get-by-name"), 2 + 4);
    match &e {
        MlflowError::Http {
            status: 502, body, ..
        } => assert!(body.contains("nginx"), "{body}"),
        other => panic!("expected MlflowError::Http for a proxy page, got {other:?}"),
    }
    assert_eq!(e.code(), None);
}

#[tokio::test]
async fn create_run_is_not_replayed_after_a_500_but_is_after_a_503() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("creates");
    let client = client(&fixture, &[]);

    // A 500 may come after the run was created: sending it again could
    // create a second run.
    fixture.fail(
        "runs/create",
        1,
        Fault::AfterEffect {
            status: 500,
            body: error_body("INTERNAL_ERROR", "timeout committing"),
        },
    );
    let e = client
        .create_run(&experiment, "r", 1, &[])
        .await
        .expect_err("not replayed");
    assert_eq!(e.code(), Some(&ErrorCode::InternalError));
    assert_eq!(fixture.count("runs/create"), 1);

    // A 503 is a refusal before acting: safe to send again.
    fixture.fail(
        "runs/create",
        1,
        Fault::mlflow(503, "TEMPORARILY_UNAVAILABLE", "try later"),
    );
    client.create_run(&experiment, "r", 1, &[]).await.unwrap();
    assert_eq!(fixture.count("runs/create"), 3);
}

#[tokio::test]
async fn retry_after_on_a_429_is_waited_for_before_the_retry() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    fixture.fail(
        "runs/log-batch",
        1,
        Fault::Answer {
            status: 429,
            headers: vec![("Retry-After", "1".to_owned())],
            body: error_body("REQUEST_LIMIT_EXCEEDED", "slow down"),
        },
    );
    client(&fixture, &[])
        .log_batch(&run, &[Metric::new("loss", 1.0, 1)], &[], &[])
        .await
        .unwrap();
    let requests = fixture.requests_to("runs/log-batch");
    assert_eq!(
        requests.len(),
        2,
        "the 429 and one retry, nothing in between"
    );
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before Retry-After: 1"
    );
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
}

#[tokio::test]
async fn a_400_mlflow_error_is_sent_once_and_typed_with_its_code() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    fixture.fail(
        "runs/log-batch",
        1,
        Fault::mlflow(400, "INVALID_PARAMETER_VALUE", "Invalid value NaN for step"),
    );
    let e = client(&fixture, &[])
        .log_batch(&run, &[Metric::new("loss", 1.0, 1)], &[], &[])
        .await
        .unwrap_err();
    assert_eq!(fixture.count("runs/log-batch"), 1, "a 400 is not retried");
    assert!(
        matches!(
            &e,
            MlflowError::Api {
                status: 400,
                code: ErrorCode::InvalidParameterValue,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn a_404_without_an_mlflow_body_is_an_http_error_not_a_missing_experiment() {
    let fixture = Fixture::start();
    // A proxy in front of MLflow that does not know the route: its 404 must
    // not read as "no such experiment", or the client would create one.
    fixture.fail(
        "experiments/get-by-name",
        1,
        Fault::Answer {
            status: 404,
            headers: Vec::new(),
            body: r#"{"detail": "Not Found"}"#.to_owned(),
        },
    );
    let e = client(&fixture, &[])
        .get_or_create_experiment("routed")
        .await
        .expect_err("a proxy's 404 is an error");
    assert!(matches!(&e, MlflowError::Http { status: 404, .. }), "{e:?}");
    assert_eq!(
        fixture.count("experiments/get-by-name"),
        1,
        "a 404 is not retried"
    );
    assert_eq!(fixture.count("experiments/create"), 0);
}

// ---------------------------------------------------------------------------
// 4. The experiment race.

#[tokio::test]
async fn get_or_create_experiment_returns_the_winners_id_when_create_loses_the_race() {
    let fixture = Fixture::start();
    // Another process creates the experiment between our lookup and our
    // create: the lookup saw nothing, the create is refused.
    let winner = fixture.seed_experiment("contested");
    fixture.fail(
        "experiments/get-by-name",
        1,
        Fault::mlflow(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            "Could not find experiment with name 'contested'",
        ),
    );
    let id = client(&fixture, &[])
        .get_or_create_experiment("contested")
        .await
        .expect("the loser reads the winner's experiment");
    assert_eq!(id, winner);
    let endpoints: Vec<String> = fixture.requests().into_iter().map(|r| r.endpoint).collect();
    assert_eq!(
        endpoints,
        [
            "experiments/get-by-name",
            "experiments/create",
            "experiments/get-by-name"
        ]
    );
    let state = fixture.state();
    assert_eq!(
        state
            .experiments
            .iter()
            .filter(|(_, n)| n == "contested")
            .count(),
        1
    );
}
