//! The tracking token and basic-auth password: sent, and never shown in a
//! `Debug`, an error or a message.

use hyperkit_obs::mlflow::{Metric, MlflowClient, MlflowError};

use super::fixture::{Fault, Fixture};
use super::{TOKEN, client, config, seeded_run};

#[tokio::test]
async fn the_tracking_token_is_sent_as_bearer_and_never_shown() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[("MLFLOW_TRACKING_TOKEN", TOKEN)]);
    let shown = format!("{client:?}");
    assert!(!shown.contains(TOKEN), "{shown}");

    let metric = [Metric::new("loss", 1.0, 1)];
    client.log_batch(&run, &metric, &[], &[]).await.unwrap();
    client.get_experiment_by_name("logging").await.unwrap();
    let requests = fixture.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.endpoint
        );
    }

    // Every kind of error the server can cause.
    let no_retry = MlflowClient::new(&config(
        &fixture,
        &[
            ("MLFLOW_TRACKING_TOKEN", TOKEN),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
        ],
    ))
    .unwrap();
    let mut errors = Vec::new();
    for fault in [
        Fault::mlflow(401, "UNAUTHENTICATED", "Invalid credentials"),
        Fault::mlflow(403, "PERMISSION_DENIED", "Permission denied"),
        Fault::html(502),
        Fault::Malformed,
        Fault::Drop,
        // Gateways that echo the request's credentials in their error.
        Fault::mlflow(
            401,
            "UNAUTHENTICATED",
            &format!("Token {TOKEN} is expired (Authorization: Bearer {TOKEN})"),
        ),
        Fault::EchoAuthorization(403),
    ] {
        fixture.fail("runs/log-batch", 1, fault);
        errors.push(
            no_retry
                .log_batch(&run, &metric, &[], &[])
                .await
                .unwrap_err(),
        );
    }
    errors.push(
        no_retry
            .log_batch(&run, &[Metric::new("bad key!", 1.0, 1)], &[], &[])
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(errors[3], MlflowError::Decode { .. }),
        "{:?}",
        errors[3]
    );
    assert!(
        matches!(errors[4], MlflowError::Transport { .. }),
        "{:?}",
        errors[4]
    );
    for e in &errors {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }
    assert!(
        errors[6].to_string().contains("Bearer ***"),
        "{}",
        errors[6]
    );

    // Basic auth: neither the password nor the encoded header shows.
    let password = "pw-0c4e77ab19";
    let basic = MlflowClient::new(&config(
        &fixture,
        &[
            ("MLFLOW_TRACKING_USERNAME", "ann"),
            ("MLFLOW_TRACKING_PASSWORD", password),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
        ],
    ))
    .unwrap();
    fixture.fail("runs/log-batch", 1, Fault::EchoAuthorization(401));
    let e = basic.log_batch(&run, &metric, &[], &[]).await.unwrap_err();
    let header = fixture
        .requests()
        .last()
        .unwrap()
        .authorization
        .clone()
        .unwrap();
    let encoded = header.strip_prefix("Basic ").expect("basic auth");
    let shown = format!("{e} {e:?} {basic:?}");
    assert!(
        !shown.contains(password) && !shown.contains(encoded),
        "{shown}"
    );
}
