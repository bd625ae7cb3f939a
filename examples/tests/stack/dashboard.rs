//! The Grafana dashboard: every panel's query and every template
//! variable's query returns data after a demo workload, and names only
//! metrics and labels the code exports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use test_support::prometheus as prom;
use test_support::wait::eventually;

use crate::promql::{exported, references};
use crate::{Demo, JOB, PUSHES, infra, read};

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
pub(crate) fn substitute(expr: &str, variables: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_owned();
    let builtins = [
        ("__rate_interval", "1m"),
        ("__interval", "10s"),
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
pub(crate) fn parse_label_values(query: &str) -> (Option<String>, String) {
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

    // This test's failed push is counted in this process's registry, which
    // the push tests read.
    let _one_at_a_time = PUSHES.lock().await;

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
    let gateway = prom::pushgateway().await;
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

    let prometheus = prom::prometheus(&format!(
        "{}{}",
        prom::scrape_job(JOB, demo.addr(), false),
        prom::scrape_job("pushgateway", gateway.addr(), true)
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
        "hyperkit_model_cost_usd_total",
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
                let samples = prom::query(&prometheus, &q.promql).await?;
                if samples.iter().any(|(_, v)| v.is_finite()) {
                    answers.push((q, samples));
                } else {
                    empty.push(format!("{}: {} → {samples:?}", q.origin, q.promql));
                }
            }
            for (name, query) in &variables {
                let (selector, label) = parse_label_values(query);
                let values = prom::label_values(&prometheus, &label, selector.as_deref()).await?;
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
