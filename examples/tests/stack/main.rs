//! The monitoring stack end to end: the demo, a real Prometheus loading the
//! real rule files, a real Alertmanager running the real configuration, and
//! the real Grafana dashboard's queries.
//!
//! - Alerts (`alerts`): a breach (the demo stopped; the demo failing every build)
//!   becomes an active alert in Alertmanager's API within 60 s, measured
//!   with the deployed scrape and evaluation intervals, and resolves once
//!   the breach is cleared.
//! - Dashboard (`dashboard`, reading PromQL with `promql`): every panel's query and every template variable's query,
//!   taken from the JSON, returns data after a demo workload, and names only
//!   metrics and labels the code exports.
//! - Uptime (`uptime`): with the demo stopped for a known span, the uptime the
//!   recording rule computes matches the uptime the test measured on its own
//!   clock within 0.5 percentage points.
//!
//! Needs `prometheus`, `prometheus-alertmanager` and
//! `prometheus-pushgateway` installed; fails with the install command when
//! one is missing. Prints the measured figures on stderr (`--nocapture`).
//! - Prometheus tooling (`prometheus`): promtool's lint of the demo's
//!   metrics, a Prometheus scraping every family, a batch job's pushes
//!   through a Pushgateway.
//! - The files themselves (`infrastructure`): every file under
//!   infrastructure/ passes the real tool that reads it.
//!
//! In-process state: the push tests and the dashboard's batch job push this
//! process's registry and count its failed pushes, so they take turns
//! (`PUSHES`).

mod alerts;
mod dashboard;
mod infrastructure;
mod prometheus;
mod promql;
mod uptime;

use std::path::{Path, PathBuf};
use std::time::Duration;

use test_support::process::{self, Process};
use test_support::prometheus as prom;
use test_support::wait::eventually;

/// The scrape job of the API service in the deployed prometheus.yml; the
/// alerts and the dashboard select `job=~"hyperkit-.*"`.
const JOB: &str = "hyperkit-api";

/// Pushes share the process-wide registry and its drop counter: one at a
/// time.
static PUSHES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn infra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infrastructure")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// How a demo run is set up.
#[derive(Clone, Copy)]
struct Demo {
    speed: &'static str,
    failure_rate: &'static str,
    /// `HYPERKIT_MAX_LABEL_VALUES`, when the test wants labels to overflow.
    max_label_values: Option<&'static str>,
}

impl Demo {
    fn spec(self) -> process::Spec {
        let mut settings = vec![
            ("HYPERKIT_DEMO_SPEED", self.speed),
            ("HYPERKIT_DEMO_FAILURE_RATE", self.failure_rate),
        ];
        if let Some(limit) = self.max_label_values {
            settings.push(("HYPERKIT_MAX_LABEL_VALUES", limit));
        }
        prom::demo(env!("CARGO_BIN_EXE_demo"), &settings)
    }

    /// The demo on a free port, ready to serve.
    async fn start(self) -> Process {
        process::start(self.spec()).await
    }

    /// The demo on `port`, where Prometheus already scrapes: a restart.
    async fn start_on(self, port: u16) -> Process {
        process::start_on(self.spec(), port).await
    }
}

/// Waits until Prometheus's latest `up` of the demo is `value`.
async fn wait_up(prometheus: &Process, value: f64, within: Duration) {
    let selector = format!("up{{job=\"{JOB}\"}}");
    eventually(
        &format!("Prometheus sees {selector} == {value}"),
        within,
        async || match prom::query(prometheus, &selector).await?.as_slice() {
            [(_, v)] if *v == value => Ok(()),
            other => Err(format!("{selector}: {other:?}")),
        },
    )
    .await;
}
