//! The monitoring stack end to end: the demo, a real Prometheus loading the
//! real rule files, a real Alertmanager running the real configuration, and
//! the real Grafana dashboard's queries.
//!
//! - Alerts: a breach (the demo stopped; the demo failing every build)
//!   becomes an active alert in Alertmanager's API within 60 s, measured
//!   with the deployed scrape and evaluation intervals, and resolves once
//!   the breach is cleared.
//! - Dashboard: every panel's query and every template variable's query,
//!   taken from the JSON, returns data after a demo workload, and names only
//!   metrics and labels the code exports.
//! - Uptime: with the demo stopped for a known span, the uptime the
//!   recording rule computes matches the uptime the test measured on its own
//!   clock within 0.5 percentage points.
//!
//! Needs `prometheus`, `prometheus-alertmanager` and
//! `prometheus-pushgateway` installed; fails with the install command when
//! one is missing. Prints the measured figures on stderr (`--nocapture`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Server, eventually};

/// The scrape job of the API service in the deployed prometheus.yml; the
/// alerts and the dashboard select `job=~"hyperkit-.*"`.
const JOB: &str = "hyperkit-api";

/// What the issue promises: breach to active alert in under a minute.
const ALERT_WITHIN: Duration = Duration::from_secs(60);

/// How long the tests keep polling for an alert before failing: past the
/// promise, so a late alert fails with its measured time, not a timeout.
const ALERT_DEADLINE: Duration = Duration::from_secs(120);

fn infra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infrastructure")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------

/// How a demo run is set up.
#[derive(Clone, Copy)]
struct Demo {
    speed: &'static str,
    failure_rate: &'static str,
    /// `HYPERKIT_MAX_LABEL_VALUES`, when the test wants labels to overflow.
    max_label_values: Option<&'static str>,
}

impl Demo {
    fn configure(self, cmd: &mut std::process::Command, port: u16, dir: &Path) {
        support::scrub_env(cmd, "HYPERKIT_");
        cmd.env("HYPERKIT_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("HYPERKIT_DATA_DIR", dir.join("data"))
            .env("HYPERKIT_DEMO_SPEED", self.speed)
            .env("HYPERKIT_DEMO_FAILURE_RATE", self.failure_rate)
            .env("RUST_LOG", "warn");
        if let Some(limit) = self.max_label_values {
            cmd.env("HYPERKIT_MAX_LABEL_VALUES", limit);
        }
    }

    /// The demo on a free port, ready to serve.
    async fn start(self) -> Server {
        support::start(
            "demo",
            Path::new(env!("CARGO_BIN_EXE_demo")),
            "/health/ready",
            Duration::from_secs(30),
            |cmd, port, dir| self.configure(cmd, port, dir),
        )
        .await
    }

    /// The demo on `port`, where Prometheus already scrapes: a restart.
    async fn start_on(self, port: u16) -> Server {
        support::start_on(
            "demo",
            Path::new(env!("CARGO_BIN_EXE_demo")),
            port,
            "/health/ready",
            Duration::from_secs(30),
            |cmd, port, dir| self.configure(cmd, port, dir),
        )
        .await
    }
}

/// Waits until Prometheus's latest `up` of the demo is `value`.
async fn wait_up(prometheus: &Server, value: f64, within: Duration) {
    let selector = format!("up{{job=\"{JOB}\"}}");
    eventually(
        &format!("Prometheus sees {selector} == {value}"),
        within,
        async || match support::query(prometheus, &selector).await?.as_slice() {
            [(_, v)] if *v == value => Ok(()),
            other => Err(format!("{selector}: {other:?}")),
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Alerts: Prometheus with the real rules, Alertmanager with the real config
// ---------------------------------------------------------------------------

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
    prometheus: Server,
    alertmanager: Server,
}

/// Prometheus with the deployed global intervals and the real rule files,
/// sending to an Alertmanager that runs the real alertmanager.yml, and
/// scraping the demo at `demo` as the `hyperkit-api` job. Only the targets
/// differ from the deployed prometheus.yml (static, on free ports).
async fn alert_stack(demo: std::net::SocketAddr) -> AlertStack {
    let alertmanager = support::alertmanager(&infra().join("alertmanager/alertmanager.yml")).await;
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
    let prometheus = support::prometheus_with(&config, &rules).await;

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
async fn alerts(alertmanager: &Server, name: &str) -> Result<Vec<serde_json::Value>, String> {
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
    alertmanager: &Server,
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
async fn until_resolved(alertmanager: &Server, name: &str, cleared: Instant) -> f64 {
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
        async || match support::query(&stack.prometheus, "hyperkit:threshold:build_failure_ratio")
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
            let chains = support::label_values(
                &stack.prometheus,
                "chain",
                Some(&format!("hyperkit_builds_total{{job=\"{JOB}\"}}")),
            )
            .await?;
            let samples = support::query(&stack.prometheus, &ratio).await?;
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

// ---------------------------------------------------------------------------
// Uptime
// ---------------------------------------------------------------------------

/// Scrape interval of the uptime test. An uptime computed from `up` can be
/// off by one scrape at each edge of an outage, so the interval must be
/// small beside the window: 0.25 s in a ~90 s window is at most ~0.3
/// percentage points, under the 0.5 the issue allows. (At the deployed 15 s
/// the same window would have ~6 samples.)
const UPTIME_SCRAPE: &str = "250ms";
/// The demo serves this long before and after its outage.
const UP_SPAN: Duration = Duration::from_secs(35);
/// The known outage.
const DOWN_SPAN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uptime_from_the_recording_rule_matches_the_true_uptime() {
    let calm = Demo {
        speed: "1",
        failure_rate: "0.1",
        max_label_values: None,
    };
    let demo = calm.start().await;
    let port = demo.addr().port();
    let config = format!(
        "global:\n  scrape_interval: {UPTIME_SCRAPE}\n  scrape_timeout: {UPTIME_SCRAPE}\n  evaluation_interval: 1s\n\
         rule_files: [recording.yml]\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{}\"]\n",
        demo.addr()
    );
    let prometheus =
        support::prometheus_with(&config, &[infra().join("prometheus/recording.yml")]).await;
    wait_up(&prometheus, 1.0, Duration::from_secs(30)).await;

    // Up, down for a known span, up again. These sleeps are the experiment
    // (spans of service and outage), not waits for a condition.
    tokio::time::sleep(UP_SPAN).await;
    drop(demo); // SIGKILL, reaped: no longer serving
    let down_from = Instant::now();
    tokio::time::sleep(DOWN_SPAN).await;
    let demo = calm.start_on(port).await; // serving again once ready
    // From the reaping to the first 200 of /health/ready, polled every
    // 100 ms: at most that much longer than the demo really was down.
    let down = down_from.elapsed().as_secs_f64();
    tokio::time::sleep(UP_SPAN).await;

    // The window ends at the recording rule's latest evaluation and starts
    // at Prometheus's first scrape of the demo (the series began in this
    // test, so the rule's [1h] covers exactly this window).
    let rule = format!("hyperkit:up:avg1h{{job=\"{JOB}\"}}");
    let end = match support::query(&prometheus, &format!("timestamp({rule})"))
        .await
        .expect("timestamp of the rule")
        .as_slice()
    {
        [(_, t)] => *t,
        other => panic!("timestamp({rule}): {other:?}"),
    };
    let series = support::query_samples(&prometheus, &format!("up{{job=\"{JOB}\"}}[1h]"))
        .await
        .expect("the up samples");
    let [(_, samples)] = series.as_slice() else {
        panic!("up{{job=\"{JOB}\"}}: {series:?}")
    };
    let start = samples
        .first()
        .map(|s| s.0)
        .expect("at least one up sample");
    let in_window: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t <= end)
        .map(|(_, v)| *v)
        .collect();
    let failed = in_window.iter().filter(|v| **v == 0.0).count();
    let window = end - start;
    assert!(
        window > down + UP_SPAN.as_secs_f64(),
        "the window ({window:.1} s) must hold the outage and the spans around it"
    );

    let value = |samples: Vec<(support::Labels, f64)>, what: &str| match samples.as_slice() {
        [(_, v)] => *v,
        other => panic!("{what}: {other:?}"),
    };
    let recorded = value(
        support::query_at(&prometheus, &rule, end)
            .await
            .expect("the rule"),
        &rule,
    );
    // The same expression shape over exactly the window (a millisecond
    // wider, so the first sample is in whichever way the bounds fall).
    let millis = (window * 1000.0).ceil() as u64 + 1;
    let raw_expr = format!("avg_over_time(up{{job=\"{JOB}\"}}[{millis}ms])");
    let raw = value(
        support::query_at(&prometheus, &raw_expr, end)
            .await
            .expect("avg_over_time"),
        &raw_expr,
    );
    let truth = (window - down) / window;
    eprintln!(
        "uptime over a {window:.1} s window (demo down {down:.2} s by the test's clock): \
         true {:.3} %, hyperkit:up:avg1h {:.3} %, {raw_expr} {:.3} % \
         ({failed} of {} scrapes failed)",
        truth * 100.0,
        recorded * 100.0,
        raw * 100.0,
        in_window.len(),
    );
    // Equal, but for one scrape at most: a scrape stamped before the rule's
    // evaluation can land in the TSDB just after it.
    let one_scrape = 1.0 / in_window.len() as f64;
    assert!(
        (recorded - raw).abs() <= one_scrape + 1e-12,
        "the recording rule ({recorded}) is not avg_over_time over the window ({raw})"
    );
    for (what, computed) in [("hyperkit:up:avg1h", recorded), ("avg_over_time", raw)] {
        let points = (computed - truth).abs() * 100.0;
        assert!(
            points <= 0.5,
            "{what} says {:.3} %, the true uptime is {:.3} %: {points:.3} points apart",
            computed * 100.0,
            truth * 100.0
        );
    }
    drop(demo);
}

// ---------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------

/// A lexical token of PromQL, as far as this test needs it.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Open,
    Close,
    /// `{...}`: the label names its matchers use.
    Matchers(Vec<String>),
    /// Anything else: numbers, strings, ranges, operators, commas.
    Other,
}

fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn lex(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            tokens.push(Token::Open);
            i += 1;
        } else if c == ')' {
            tokens.push(Token::Close);
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
            tokens.push(Token::Other);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            tokens.push(Token::Other);
        } else if c == '{' {
            i += 1;
            let mut names = Vec::new();
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    i += 1;
                    break;
                }
                let from = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                assert!(
                    i > from,
                    "unexpected {:?} in the matchers of {expr}",
                    chars[i]
                );
                names.push(chars[from..i].iter().collect());
                while i < chars.len() && chars[i] != '"' && chars[i] != '\'' && chars[i] != '`' {
                    i += 1;
                }
                assert!(i < chars.len(), "a matcher without a value in {expr}");
                i = skip_string(&chars, i);
            }
            tokens.push(Token::Matchers(names));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len()
                && (is_ident_char(chars[i])
                    || chars[i] == '.'
                    || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            tokens.push(Token::Other);
        } else if is_ident_char(c) {
            let from = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[from..i].iter().collect()));
        } else {
            i += 1;
            tokens.push(Token::Other);
        }
    }
    tokens
}

/// What a PromQL expression refers to.
#[derive(Debug, Default)]
struct References {
    /// Each metric selector: its name and the label names of its matchers.
    metrics: Vec<(String, Vec<String>)>,
    /// Each `by (...)`/`without (...)` list with the metrics it groups.
    groupings: Vec<(Vec<String>, Vec<String>)>,
    /// Each `on (...)`/`ignoring (...)`/`group_left|right (...)` list.
    matchings: Vec<Vec<String>>,
}

/// Keywords that are neither functions nor metric names.
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
];
const GROUPING: [&str; 2] = ["by", "without"];
const MATCHING: [&str; 4] = ["on", "ignoring", "group_left", "group_right"];

/// The index of the parenthesis matching the one at `at`: forward from an
/// `Open`, backward from a `Close`.
fn matching(tokens: &[Token], at: usize, forward: bool) -> usize {
    let mut depth = 0i32;
    let mut i = at;
    loop {
        match tokens[i] {
            Token::Open => depth += if forward { 1 } else { -1 },
            Token::Close => depth += if forward { -1 } else { 1 },
            _ => {}
        }
        if depth == 0 {
            return i;
        }
        if forward {
            i += 1;
        } else {
            i -= 1;
        }
    }
}

fn references(expr: &str) -> References {
    let tokens = lex(expr);
    // Metric selectors, by token index.
    let mut metrics: Vec<(usize, String, Vec<String>)> = Vec::new();
    let mut lists: Vec<(String, usize, Vec<String>, usize)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(word)
                if (GROUPING.contains(&word.as_str()) || MATCHING.contains(&word.as_str()))
                    && tokens.get(i + 1) == Some(&Token::Open) =>
            {
                let close = matching(&tokens, i + 1, true);
                let labels = tokens[i + 2..close]
                    .iter()
                    .filter_map(|t| match t {
                        Token::Ident(l) => Some(l.clone()),
                        _ => None,
                    })
                    .collect();
                lists.push((word.clone(), i, labels, close));
                i = close + 1;
            }
            // A function or an aggregation (`sum (…)`, `sum by (…) (…)`).
            Token::Ident(_)
                if matches!(tokens.get(i + 1), Some(Token::Open))
                    || matches!(tokens.get(i + 1), Some(Token::Ident(w)) if GROUPING.contains(&w.as_str())) =>
            {
                i += 1
            }
            Token::Ident(word) if KEYWORDS.contains(&word.as_str()) => i += 1,
            Token::Ident(name) => {
                let labels = match tokens.get(i + 1) {
                    Some(Token::Matchers(labels)) => {
                        i += 1;
                        labels.clone()
                    }
                    _ => Vec::new(),
                };
                metrics.push((i, name.clone(), labels));
                i += 1;
            }
            Token::Matchers(_) => panic!("a selector without a metric name in {expr}"),
            _ => i += 1,
        }
    }
    let mut refs = References {
        metrics: metrics
            .iter()
            .map(|(_, n, l)| (n.clone(), l.clone()))
            .collect(),
        ..References::default()
    };
    for (word, at, labels, close) in lists {
        if MATCHING.contains(&word.as_str()) {
            refs.matchings.push(labels);
            continue;
        }
        // `sum by (l) (arg)` or `sum (arg) by (l)`.
        let scope = if tokens.get(close + 1) == Some(&Token::Open) {
            close + 1..=matching(&tokens, close + 1, true)
        } else if at > 0 && tokens[at - 1] == Token::Close {
            matching(&tokens, at - 1, false)..=at - 1
        } else {
            panic!("cannot tell what `{word}` groups in {expr}")
        };
        let grouped = metrics
            .iter()
            .filter(|(i, ..)| scope.contains(i))
            .map(|(_, n, _)| n.clone())
            .collect();
        refs.groupings.push((labels, grouped));
    }
    refs
}

/// Sample names in a text exposition, each with the label names it carries.
fn exported(exposition: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = into.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            // name="value" pairs; values may hold escaped quotes.
            let chars: Vec<char> = line[end + 1..].chars().collect();
            let mut i = 0;
            while i < chars.len() && chars[i] != '}' {
                let from = i;
                while i < chars.len() && chars[i] != '=' {
                    i += 1;
                }
                labels.insert(
                    chars[from..i]
                        .iter()
                        .collect::<String>()
                        .trim_matches([',', ' '])
                        .to_owned(),
                );
                i = skip_string(&chars, i + 1);
                while i < chars.len() && matches!(chars[i], ',' | ' ') {
                    i += 1;
                }
            }
        }
    }
}

/// One query of the dashboard.
struct DashboardQuery {
    /// Where it comes from, for messages.
    origin: String,
    /// As written in the JSON.
    expr: String,
    /// With Grafana's variables substituted.
    promql: String,
    /// The labels `{{...}}` of its legend.
    legend: Vec<String>,
}

/// Replaces `$name`, `${name}` and `[[name]]` of every variable, and
/// Grafana's built-in intervals, the way Grafana would with "All" selected.
fn substitute(expr: &str, variables: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_owned();
    let builtins = [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "1h"),
    ];
    let all = variables
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(builtins);
    // Longest names first, so `$chain` never eats the start of `$chains`.
    let mut all: Vec<(&str, &str)> = all.collect();
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (name, value) in all {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("[[{name}]]"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !out.contains('$'),
        "an unknown variable is left in {expr:?}: {out:?}"
    );
    out
}

fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}

/// Every panel query and every variable query of the dashboard.
fn dashboard() -> (Vec<DashboardQuery>, Vec<(String, String)>) {
    let path = infra().join("grafana/dashboards/hyperkit.json");
    let json: serde_json::Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));

    let mut variables = BTreeMap::new();
    let mut variable_queries = Vec::new();
    for var in json["templating"]["list"].as_array().into_iter().flatten() {
        let name = var["name"]
            .as_str()
            .expect("a variable has a name")
            .to_owned();
        let all = var["allValue"].as_str().unwrap_or(".*").to_owned();
        if var["type"] == "query" {
            let query = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .or(var["definition"].as_str())
                .unwrap_or_else(|| panic!("variable {name} has no query"));
            variable_queries.push((name.clone(), query.to_owned()));
        }
        variables.insert(name, all);
    }

    let mut queries = Vec::new();
    let mut pending: Vec<&serde_json::Value> =
        json["panels"].as_array().into_iter().flatten().collect();
    while let Some(panel) = pending.pop() {
        // Rows hold panels (collapsed rows keep them inside).
        pending.extend(panel["panels"].as_array().into_iter().flatten());
        let title = panel["title"].as_str().unwrap_or("?");
        let kind = panel["type"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            // A row is a heading; the alert list panel shows Grafana's own
            // alert state and a text panel shows text: none has a query.
            assert!(
                matches!(kind, "row" | "alertlist" | "text"),
                "panel {title:?} ({kind}) has no query"
            );
            continue;
        }
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of {title:?} has no expr: {target}"));
            queries.push(DashboardQuery {
                origin: format!("panel {title:?} target {}", target["refId"]),
                expr: expr.to_owned(),
                promql: substitute(expr, &variables),
                legend: legend_labels(target["legendFormat"].as_str().unwrap_or("")),
            });
        }
    }
    assert!(!queries.is_empty(), "no panel query in {}", path.display());
    (queries, variable_queries)
}

/// `label_values(selector, label)` (or `label_values(label)`): the selector
/// and the label.
fn parse_label_values(query: &str) -> (Option<String>, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unsupported variable query {query:?}: only label_values()"));
    match inner.rsplit_once(',') {
        Some((selector, label)) => (Some(selector.trim().to_owned()), label.trim().to_owned()),
        None => (None, inner.trim().to_owned()),
    }
}

/// Labels Prometheus attaches to every scraped (or, with `honor_labels`,
/// pushed) series: present on every metric though no exposition has them.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// `up` and its labels: a series Prometheus writes for each scrape, not the
/// code.
const SYNTHETIC: (&str, [&str; 2]) = ("up", TARGET_LABELS);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_uses_only_exported_names() {
    use hyperkit_obs::push::{PushOnDrop, to_gateway};

    // The workload: builds (some failing), model calls and queries at 100x,
    // and HTTP traffic below. A limit of 5 values per label keeps the five
    // chains but makes the six HTTP routes below overflow, so the
    // exporter-health panel has its overflow data.
    let demo = Demo {
        speed: "100",
        failure_rate: "0.1",
        max_label_values: Some("5"),
    }
    .start()
    .await;

    // Exporter health: the demo ships nothing that can drop, so a batch job
    // (this test) has a push fail (counted in hyperkit_obs_dropped_total),
    // then pushes its metrics, that count included, to a Pushgateway.
    let gateway = support::pushgateway().await;
    let closed = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        format!("http://{}", probe.local_addr().expect("local addr"))
    };
    tokio::task::spawn_blocking(move || {
        drop(PushOnDrop::new(closed, "hyperkit-batch").timeout(Duration::from_secs(2)));
    })
    .await
    .expect("a failed push does not panic");
    to_gateway(
        &gateway.base_url(),
        "hyperkit-batch",
        &[("instance", "stack-test")],
    )
    .await
    .expect("push to the gateway");

    let prometheus = support::prometheus(&format!(
        "{}{}",
        support::scrape_job(JOB, demo.addr(), false),
        support::scrape_job("pushgateway", gateway.addr(), true)
    ))
    .await;

    for path in [
        "/api/status",
        "/api/builds/1",
        "/api/builds/2",
        "/api/builds/3",
        "/api/builds/not-a-number",
        "/health/live",
        "/health/ready",
        "/no-such-route",
    ] {
        demo.get(path).await.unwrap_or_else(|e| panic!("{e}"));
    }

    // What the code exports: the demo's /metrics once every family has data,
    // and this process's registry (where the failed push was counted).
    let families = [
        "hyperkit_builds_total",
        "hyperkit_model_calls_total",
        "hyperkit_model_acceptance_total",
        "hyperkit_http_requests_total",
        "hyperkit_obs_label_overflow_total",
    ];
    let exposition = eventually(
        "the demo exports every family the dashboard reads",
        Duration::from_secs(30),
        async || {
            let (_, body) = demo.get("/metrics").await?;
            let missing: Vec<&str> = families
                .iter()
                .copied()
                .filter(|f| !body.lines().any(|l| l.starts_with(&format!("{f}{{"))))
                .collect();
            if missing.is_empty() {
                Ok(body)
            } else {
                Err(format!("no {missing:?} yet"))
            }
        },
    )
    .await;
    let mut exports = BTreeMap::new();
    exported(&exposition, &mut exports);
    let own = hyperkit_obs::prometheus::TextEncoder::new()
        .encode_to_string(&hyperkit_obs::registry().gather())
        .expect("encode this process's registry");
    exported(&own, &mut exports);
    exports.insert(
        SYNTHETIC.0.to_owned(),
        SYNTHETIC.1.iter().map(|l| (*l).to_owned()).collect(),
    );
    let labels_of = |metric: &str| -> Option<BTreeSet<String>> {
        exports.get(metric).map(|labels| {
            let mut all = labels.clone();
            all.extend(TARGET_LABELS.iter().map(|l| (*l).to_owned()));
            all.insert("__name__".to_owned());
            all
        })
    };

    let (queries, variables) = dashboard();

    // Names: every metric and label a query uses is one the code exports.
    let check_names = |origin: &str, expr: &str| -> Vec<String> {
        let mut problems = Vec::new();
        let refs = references(expr);
        if refs.metrics.is_empty() {
            problems.push(format!("{origin}: names no metric: {expr}"));
        }
        for (metric, labels) in &refs.metrics {
            let Some(known) = labels_of(metric) else {
                problems.push(format!("{origin}: {metric} is not exported"));
                continue;
            };
            for label in labels.iter().filter(|l| !known.contains(*l)) {
                problems.push(format!("{origin}: {metric} has no label {label:?}"));
            }
        }
        for (labels, grouped) in &refs.groupings {
            for metric in grouped {
                let known = labels_of(metric).unwrap_or_default();
                for label in labels.iter().filter(|l| !known.contains(*l)) {
                    problems.push(format!(
                        "{origin}: groups {metric} by {label:?}, which it lacks"
                    ));
                }
            }
        }
        for labels in &refs.matchings {
            for label in labels {
                let somewhere = refs
                    .metrics
                    .iter()
                    .any(|(m, _)| labels_of(m).is_some_and(|k| k.contains(label)));
                if !somewhere {
                    problems.push(format!(
                        "{origin}: matches on {label:?}, which no metric has"
                    ));
                }
            }
        }
        problems
    };
    let mut problems = Vec::new();
    for q in &queries {
        problems.extend(check_names(&q.origin, &q.expr));
    }
    for (name, query) in &variables {
        let (selector, label) = parse_label_values(query);
        let origin = format!("variable {name}");
        match selector {
            Some(selector) => {
                problems.extend(check_names(
                    &origin,
                    &format!("count by ({label}) ({selector})"),
                ));
            }
            None => {
                if !exports.values().any(|labels| labels.contains(&label)) {
                    problems.push(format!("{origin}: no metric has the label {label:?}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the dashboard names what the code does not export:\n{}\n\nexported: {exports:#?}",
        problems.join("\n")
    );

    // Data: every query returns at least one finite sample, carrying the
    // labels its legend shows; every variable lists values.
    let answers = eventually(
        "every dashboard query returns data",
        Duration::from_secs(90),
        async || {
            let mut empty = Vec::new();
            let mut answers = Vec::new();
            for q in &queries {
                let samples = support::query(&prometheus, &q.promql).await?;
                if samples.iter().any(|(_, v)| v.is_finite()) {
                    answers.push((q, samples));
                } else {
                    empty.push(format!("{}: {} → {samples:?}", q.origin, q.promql));
                }
            }
            for (name, query) in &variables {
                let (selector, label) = parse_label_values(query);
                let values =
                    support::label_values(&prometheus, &label, selector.as_deref()).await?;
                if values.is_empty() {
                    empty.push(format!("variable {name}: {query} → no values"));
                }
            }
            if empty.is_empty() {
                Ok(answers)
            } else {
                Err(format!("no data yet:\n{}", empty.join("\n")))
            }
        },
    )
    .await;
    for (q, samples) in &answers {
        for (labels, _) in samples {
            for label in &q.legend {
                assert!(
                    labels.contains_key(label),
                    "{}: the legend shows {{{{{label}}}}}, absent from {labels:?} ({})",
                    q.origin,
                    q.promql
                );
            }
        }
    }
    eprintln!(
        "dashboard: {} panel queries and {} variable queries returned data",
        queries.len(),
        variables.len()
    );
}

#[test]
fn the_promql_reader_finds_metrics_groupings_and_matchers() {
    let refs = references(
        r#"histogram_quantile(0.95, sum by (chain, le) (rate(hyperkit_build_duration_seconds_bucket{chain=~"$chain", status!="x"}[5m]))) / on() group_left() sum(rate(b_total[1m])) by (job) or vector(1e-9)"#,
    );
    assert_eq!(
        refs.metrics,
        vec![
            (
                "hyperkit_build_duration_seconds_bucket".to_owned(),
                vec!["chain".to_owned(), "status".to_owned()]
            ),
            ("b_total".to_owned(), vec![]),
        ]
    );
    assert_eq!(
        refs.groupings,
        vec![
            (
                vec!["chain".to_owned(), "le".to_owned()],
                vec!["hyperkit_build_duration_seconds_bucket".to_owned()]
            ),
            (vec!["job".to_owned()], vec!["b_total".to_owned()]),
        ]
    );
    assert_eq!(refs.matchings, vec![Vec::<String>::new(), vec![]]);

    let mut exports = BTreeMap::new();
    exported(
        "# TYPE a counter\na_total{x=\"1\",y=\"q\\\"},z\"} 3\nb 1\n",
        &mut exports,
    );
    assert_eq!(
        exports,
        BTreeMap::from([
            (
                "a_total".to_owned(),
                BTreeSet::from(["x".to_owned(), "y".to_owned()])
            ),
            ("b".to_owned(), BTreeSet::new()),
        ])
    );
    let vars = BTreeMap::from([("chain".to_owned(), ".*".to_owned())]);
    assert_eq!(
        substitute("a{c=~\"$chain\",d=~\"${chain}\"}[$__rate_interval]", &vars),
        "a{c=~\".*\",d=~\".*\"}[1m]"
    );
    assert_eq!(
        parse_label_values("label_values(hyperkit_builds_total, chain)"),
        (Some("hyperkit_builds_total".to_owned()), "chain".to_owned())
    );
}
