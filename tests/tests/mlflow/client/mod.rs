//! `MlflowClient` and the background exporter against a local MLflow
//! PROTOCOL FIXTURE: the bad answers that servers and the proxies in front
//! of them give, which a real MLflow server cannot be made to give on
//! demand (real servers are tested in `server` and `file_store`).
//!
//! The fixture is `test_support::mlflow::fixture`; the tests are by
//! concern: retries and error typing (`retries`), `runs/log-batch` limits
//! (`limits`), paging (`pagination`), credentials (`secrets`), the
//! background exporter (`exporter`) and the background sinks' common
//! specification run against it (`sink`).
//!
//! The exporter is process-wide: its tests take turns with every other
//! test of this binary that starts one (`exporter::exporter_lock()`) and
//! shut their exporter down at the end.

mod exporter;
mod limits;
mod pagination;
mod retries;
mod secrets;
mod sink;

use std::collections::HashMap;

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::mlflow::{MlflowClient, MlflowConfig};
use test_support::mlflow::fixture;

use fixture::Fixture;

const TOKEN: &str = "mlflow-tok-8f3a2c71d9e4b605";

/// A configuration for the fixture read from MLflow's own variables, with
/// short retries; `extra` adds or overrides variables.
fn config(fixture: &Fixture, extra: &[(&str, &str)]) -> MlflowConfig {
    let mut vars: HashMap<String, String> = [
        ("MLFLOW_TRACKING_URI", fixture.url.as_str()),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.05"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.01"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "3"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    MonitoringConfig::from_lookup(|k| vars.get(k).cloned())
        .expect("a valid configuration")
        .mlflow
}

fn client(fixture: &Fixture, extra: &[(&str, &str)]) -> MlflowClient {
    MlflowClient::new(&config(fixture, extra)).unwrap()
}

/// A run to log to, created in the store directly.
fn seeded_run(fixture: &Fixture) -> String {
    let experiment = fixture.seed_experiment("logging");
    fixture.seed_run(&experiment, &[], &[])
}
