//! Alerts: a breach becomes an active alert in Alertmanager within a
//! minute, with the deployed intervals, rules and routing, and resolves
//! once cleared.

use std::time::{Duration, Instant};

use test_support::process::Process;
use test_support::prometheus as prom;
use test_support::wait::eventually;

use crate::{Demo, JOB, infra, read, wait_up};

/// What the issue promises: breach to active alert in under a minute.
const ALERT_WITHIN: Duration = Duration::from_secs(60);

/// How long the tests keep polling for an alert before failing: past the
/// promise, so a late alert fails with its measured time, not a timeout.
const ALERT_DEADLINE: Duration = Duration::from_secs(120);

/// A setting of the `global:` block of the deployed prometheus.yml, so the
/// test runs with the intervals an operator gets.
fn deployed_global(key: &str) -> String {
    let path = infra().join("prometheus/prometheus.yml");
    let text = read(&path);
    let mut in_global = false;
    for line in text.lines() {
        let starts_block = !line.starts_with([' ', '#']) && !line.trim().is_empty();
        if starts_block {
            in_global = line.trim_end() == "global:";
        } else if in_global
            && let Some(value) = line
                .trim()
                .strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
        {
            return value.split('#').next().unwrap_or("").trim().to_owned();
        }
    }
    panic!("{} sets no global {key}", path.display())
}

/// Prometheus and Alertmanager as deployed, around one demo.
struct AlertStack {
    prometheus: Process,
    alertmanager: Process,
}

/// Prometheus with the deployed global intervals and the real rule files,
/// sending to an Alertmanager that runs the real alertmanager.yml, and
/// scraping the demo at `demo` as the `hyperkit-api` job. Only the targets
/// differ from the deployed prometheus.yml (static, on free ports).
async fn alert_stack(demo: std::net::SocketAddr) -> AlertStack {
    let alertmanager = prom::alertmanager(&infra().join("alertmanager/alertmanager.yml")).await;
    let rules = ["thresholds.yml", "recording.yml", "alerts.yml"]
        .map(|f| infra().join("prometheus").join(f))
        .to_vec();
    let config = format!(
        "global:\n  scrape_interval: {scrape}\n  scrape_timeout: {timeout}\n  evaluation_interval: {evaluation}\n\
         rule_files: [thresholds.yml, recording.yml, alerts.yml]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{am}\"]\n\
         scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{demo}\"]\n",
        scrape = deployed_global("scrape_interval"),
        timeout = deployed_global("scrape_timeout"),
        evaluation = deployed_global("evaluation_interval"),
        am = alertmanager.addr(),
    );
    let prometheus = prom::prometheus_with(&config, &rules).await;

    // The rules are loaded and Alertmanager is discovered, or nothing below
    // could mean anything.
    let (status, body) = prometheus
        .get("/api/v1/rules")
        .await
        .expect("GET /api/v1/rules");
    assert_eq!(status, 200, "{body}");
    for name in [
        "HyperkitServiceDown",
        "HyperkitBuildFailureRateHigh",
        "HyperkitModelSpendHigh",
        "hyperkit:up:avg1h",
    ] {
        assert!(
            body.contains(&format!("\"{name}\"")),
            "rule {name} not loaded: {body}"
        );
    }
    let am_url = alertmanager.base_url();
    eventually(
        "Prometheus has discovered Alertmanager",
        Duration::from_secs(30),
        async || {
            let (status, body) = prometheus.get("/api/v1/alertmanagers").await?;
            if status == 200 && body.contains(&am_url) {
                Ok(())
            } else {
                Err(format!("{status}: {body}"))
            }
        },
    )
    .await;
    AlertStack {
        prometheus,
        alertmanager,
    }
}

/// The alerts named `name` that Alertmanager's API lists (it leaves out
/// resolved ones).
async fn alerts(alertmanager: &Process, name: &str) -> Result<Vec<serde_json::Value>, String> {
    let filter = format!("alertname=\"{name}\"");
    let (status, body) = alertmanager
        .get_with("/api/v2/alerts", &[("filter", &filter)])
        .await?;
    if status != 200 {
        return Err(format!("/api/v2/alerts answered {status}: {body}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("/api/v2/alerts: {e}: {body}"))?;
    json.as_array()
        .cloned()
        .ok_or_else(|| format!("/api/v2/alerts is not a list: {body}"))
}

fn state(alert: &serde_json::Value) -> &str {
    alert["status"]["state"].as_str().unwrap_or("?")
}

/// Polls until Alertmanager holds `name` as active; returns the seconds
/// since `breach` and the alert.
async fn until_active(
    alertmanager: &Process,
    name: &str,
    breach: Instant,
) -> (f64, serde_json::Value) {
    let alert = eventually(
        &format!("{name} is active in Alertmanager"),
        ALERT_DEADLINE,
        async || {
            let found = alerts(alertmanager, name).await?;
            found
                .iter()
                .find(|a| state(a) == "active")
                .cloned()
                .ok_or_else(|| format!("{name}: {found:?}"))
        },
    )
    .await;
    (breach.elapsed().as_secs_f64(), alert)
}

/// Polls until Alertmanager lists no `name` alert any more (Prometheus sent
/// it resolved); returns the seconds since `cleared`.
async fn until_resolved(alertmanager: &Process, name: &str, cleared: Instant) -> f64 {
    eventually(
        &format!("{name} is resolved in Alertmanager"),
        ALERT_DEADLINE,
        async || {
            let found = alerts(alertmanager, name).await?;
            if found.is_empty() {
                Ok(())
            } else {
                let states: Vec<&str> = found.iter().map(state).collect();
                Err(format!("{name} still listed: {states:?}"))
            }
        },
    )
    .await;
    cleared.elapsed().as_secs_f64()
}

/// The alert carries the labels and annotations the routing and the
/// on-call person rely on.
fn assert_routable(alert: &serde_json::Value, severity: &str) {
    assert_eq!(alert["labels"]["job"], JOB, "{alert}");
    assert_eq!(alert["labels"]["severity"], severity, "{alert}");
    for annotation in ["summary", "description", "runbook"] {
        let text = alert["annotations"][annotation].as_str().unwrap_or("");
        assert!(!text.is_empty(), "no {annotation} annotation: {alert}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_down_is_active_in_alertmanager_within_a_minute_then_resolves() {
    let healthy = Demo {
        speed: "20",
        failure_rate: "0.01",
        max_label_values: None,
    };
    let demo = healthy.start().await;
    let port = demo.addr().port();
    let stack = alert_stack(demo.addr()).await;
    const NAME: &str = "HyperkitServiceDown";

    // Healthy first: scraped, and nothing down.
    wait_up(&stack.prometheus, 1.0, Duration::from_secs(60)).await;
    let before = alerts(&stack.alertmanager, NAME).await.expect("alerts");
    assert!(before.is_empty(), "{NAME} before any breach: {before:?}");

    // The breach: the service dies (SIGKILL; the port is closed when `drop`
    // has reaped it).
    drop(demo);
    let breach = Instant::now();
    let (secs, alert) = until_active(&stack.alertmanager, NAME, breach).await;
    eprintln!("{NAME}: breach → active in Alertmanager: {secs:.1} s");
    assert_routable(&alert, "critical");
    assert!(
        secs < ALERT_WITHIN.as_secs_f64(),
        "{NAME} became active {secs:.1} s after the breach, over the promised {ALERT_WITHIN:?}"
    );

    // Cleared: the service is back where Prometheus looks for it.
    let demo = healthy.start_on(port).await;
    let cleared = Instant::now();
    let secs = until_resolved(&stack.alertmanager, NAME, cleared).await;
    eprintln!("{NAME}: cleared → resolved in Alertmanager: {secs:.1} s");
    drop(demo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_failure_rate_is_active_in_alertmanager_within_a_minute_then_resolves() {
    let healthy = Demo {
        speed: "50",
        failure_rate: "0.01",
        max_label_values: None,
    };
    let failing = Demo {
        failure_rate: "1",
        ..healthy
    };
    let demo = healthy.start().await;
    let port = demo.addr().port();
    let stack = alert_stack(demo.addr()).await;
    const NAME: &str = "HyperkitBuildFailureRateHigh";

    // A baseline first: the ratio the alert compares is recorded for every
    // chain and is under the deployed threshold, so the breach below is what
    // moves it.
    let threshold = eventually(
        "the threshold is recorded",
        Duration::from_secs(60),
        async || match prom::query(&stack.prometheus, "hyperkit:threshold:build_failure_ratio")
            .await?
            .as_slice()
        {
            [(_, v)] => Ok(*v),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let ratio = format!("hyperkit:build_failure_ratio:rate1m{{job=\"{JOB}\"}}");
    let baseline = eventually(
        "the failure ratio of every chain is recorded",
        Duration::from_secs(90),
        async || {
            let chains = prom::label_values(
                &stack.prometheus,
                "chain",
                Some(&format!("hyperkit_builds_total{{job=\"{JOB}\"}}")),
            )
            .await?;
            let samples = prom::query(&stack.prometheus, &ratio).await?;
            if !chains.is_empty()
                && samples.len() == chains.len()
                && samples.iter().all(|(_, v)| v.is_finite())
            {
                Ok(samples)
            } else {
                Err(format!("{ratio}: {samples:?}"))
            }
        },
    )
    .await;
    for (labels, value) in &baseline {
        assert!(
            *value < threshold,
            "baseline {labels:?} = {value}, not under {threshold}"
        );
    }
    let before = alerts(&stack.alertmanager, NAME).await.expect("alerts");
    assert!(before.is_empty(), "{NAME} before any breach: {before:?}");

    // The breach: the service comes back on the same port failing every
    // build. Counted from before the switch, so the restart is included.
    let breach = Instant::now();
    drop(demo);
    let demo = failing.start_on(port).await;
    let (secs, alert) = until_active(&stack.alertmanager, NAME, breach).await;
    eprintln!(
        "{NAME} ({}): breach → active in Alertmanager: {secs:.1} s",
        alert["labels"]["chain"].as_str().unwrap_or("?")
    );
    assert_routable(&alert, "warning");
    assert!(
        secs < ALERT_WITHIN.as_secs_f64(),
        "{NAME} became active {secs:.1} s after the breach, over the promised {ALERT_WITHIN:?}"
    );

    // Cleared: healthy again; the alert resolves once the failures leave the
    // rule's one-minute window.
    drop(demo);
    let demo = healthy.start_on(port).await;
    let cleared = Instant::now();
    let secs = until_resolved(&stack.alertmanager, NAME, cleared).await;
    eprintln!("{NAME}: cleared → resolved in Alertmanager: {secs:.1} s");
    drop(demo);
}
