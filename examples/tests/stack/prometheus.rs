//! The demo's metrics as real Prometheus tooling sees them: `promtool`'s
//! lint, a Prometheus server scraping the demo, and a Pushgateway fed by a
//! batch job and scraped by Prometheus.
//!
//! Needs `prometheus`, `promtool` and `prometheus-pushgateway` installed
//! (see `test_support::prometheus::INSTALL`); fails with that command when
//! they are not.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyperkit_obs::push::{PushError, PushOnDrop, to_gateway};
use test_support::process::{self, Process};
use test_support::prometheus as prom;
use test_support::wait::eventually;

use crate::PUSHES;

/// How long Prometheus may take to show what was scraped or pushed.
const SCRAPE_WITHIN: Duration = Duration::from_secs(30);

/// The demo at 100x speed on a free port, ready to serve.
async fn demo() -> Process {
    process::start(prom::demo(
        env!("CARGO_BIN_EXE_demo"),
        &[("HYPERKIT_DEMO_SPEED", "100")],
    ))
    .await
}

/// The sum of every sample of `family` in a text exposition.
fn sum(exposition: &str, family: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the demo has finished builds, model calls (with tokens and
/// acceptance) and queries, and returns its `/metrics` then.
async fn after_workload(demo: &Process) -> String {
    eventually(
        "the demo has run builds, model calls and queries",
        SCRAPE_WITHIN,
        async || {
            let (status, body) = demo.get("/metrics").await?;
            let missing: Vec<&str> = [
                "hyperkit_builds_total",
                "hyperkit_model_calls_total",
                "hyperkit_model_tokens_total",
                "hyperkit_model_acceptance_total",
                "hyperkit_db_queries_total",
            ]
            .into_iter()
            .filter(|f| sum(&body, f) <= 0.0)
            .collect();
            if status == 200 && missing.is_empty() {
                Ok(body)
            } else {
                Err(format!(
                    "/metrics answered {status}; nothing yet in {missing:?}"
                ))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_lint_in_the_demo_metrics() {
    let promtool = prom::require("promtool");
    let demo = demo().await;
    let exposition = after_workload(&demo).await;

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    {
        use std::io::Write as _;
        let mut stdin = check.stdin.take().expect("promtool stdin");
        stdin
            .write_all(exposition.as_bytes())
            .expect("exposition written to promtool");
    }
    let out = check.wait_with_output().expect("promtool finishes");

    // A lint is acceptable only when the README quotes it and says why.
    let readme = include_str!("../../../README.md");
    let lints: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !readme.contains(*l))
        .map(str::to_owned)
        .collect();
    assert!(
        lints.is_empty(),
        "promtool check metrics ({}) reports problems the README does not explain:\n{}\n\nexposition:\n{exposition}",
        out.status,
        lints.join("\n")
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {}",
        out.status
    );
}

/// The label names of a series, without the ones Prometheus adds.
fn own_label_names(labels: &prom::Labels) -> BTreeSet<&str> {
    labels
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "__name__" | "job" | "instance"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_demo_family_and_counts_each_request() {
    let demo = demo().await;
    after_workload(&demo).await;
    // The HTTP families appear with the first request through the layer;
    // this one goes to another route than the one counted below.
    let (status, _) = demo.get("/api/status").await.expect("GET /api/status");
    assert_eq!(status, 200);
    let prometheus = prom::prometheus(&prom::scrape_job("hyperkit-demo", demo.addr(), false)).await;

    let expected: [(&str, &[&str]); 12] = [
        ("hyperkit_builds_total", &["status", "chain"]),
        ("hyperkit_build_duration_seconds_bucket", &["chain", "le"]),
        ("hyperkit_active_builds", &["chain"]),
        ("hyperkit_model_calls_total", &["model", "task", "status"]),
        (
            "hyperkit_model_latency_seconds_bucket",
            &["model", "task", "le"],
        ),
        ("hyperkit_model_tokens_total", &["model", "task", "type"]),
        (
            "hyperkit_model_acceptance_total",
            &["model", "task", "accepted"],
        ),
        ("hyperkit_db_queries_total", &["operation", "status"]),
        (
            "hyperkit_db_query_duration_seconds_bucket",
            &["operation", "le"],
        ),
        (
            "hyperkit_http_requests_total",
            &["method", "route", "status"],
        ),
        (
            "hyperkit_http_request_duration_seconds_bucket",
            &["method", "route", "le"],
        ),
        ("hyperkit_http_requests_in_flight", &[]),
    ];
    let process = [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ];
    eventually(
        "Prometheus has every family the demo feeds",
        SCRAPE_WITHIN,
        async || {
            let series = prom::series(
                &prometheus,
                r#"{job="hyperkit-demo",__name__=~"hyperkit_.+|process_.+"}"#,
            )
            .await?;
            let mut names: BTreeMap<&str, BTreeSet<BTreeSet<&str>>> = BTreeMap::new();
            for labels in &series {
                let name = labels.get("__name__").map_or("", String::as_str);
                names
                    .entry(name)
                    .or_default()
                    .insert(own_label_names(labels));
            }
            let mut problems = Vec::new();
            for (family, want) in expected {
                let want: BTreeSet<&str> = want.iter().copied().collect();
                match names.get(family) {
                    None => problems.push(format!("{family}: no series")),
                    Some(sets) if sets.iter().any(|s| *s != want) => {
                        problems.push(format!("{family}: label names {sets:?}, want {want:?}"))
                    }
                    Some(_) => {}
                }
            }
            for family in process {
                if !names.contains_key(family) {
                    problems.push(format!("{family}: no series"));
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        },
    )
    .await;

    const N: u64 = 37;
    for id in 1000..1000 + N {
        let (status, body) = demo
            .get(&format!("/api/builds/{id}"))
            .await
            .expect("GET /api/builds/{id}");
        assert_eq!(
            (status, body.contains(&format!("\"id\":{id}"))),
            (200, true),
            "{body}"
        );
    }
    let selector = r#"hyperkit_http_requests_total{job="hyperkit-demo",route="/api/builds/{id}",status="200"}"#;
    let seen = eventually(
        &format!("Prometheus counts exactly {N} requests"),
        SCRAPE_WITHIN,
        async || {
            let samples = prom::query(&prometheus, selector).await?;
            match samples.as_slice() {
                [(labels, value)] => {
                    assert!(
                        *value <= N as f64,
                        "{selector} = {value}, more than the {N} requests made"
                    );
                    if *value == N as f64 {
                        Ok(labels.clone())
                    } else {
                        Err(format!("{selector} = {value}"))
                    }
                }
                [] => Err(format!("{selector}: no sample yet")),
                more => panic!("{selector} has several series: {more:?}"),
            }
        },
    )
    .await;
    assert_eq!(seen.get("method").map(String::as_str), Some("GET"));
}

/// `hyperkit_obs_dropped_total{sink="pushgateway"}` in this process.
fn dropped_pushes() -> f64 {
    test_support::metrics::total("hyperkit_obs_dropped_total", &[("sink", "pushgateway")])
}

/// The batch job's build, tracked in this test process.
#[hyperkit_obs::track_build(chain = "pushed-chain")]
fn pushed_build(step: u32) -> Result<u32, String> {
    Ok(step * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_builds_reach_prometheus_through_the_pushgateway() {
    let _one_at_a_time = PUSHES.lock().await;
    let gateway = prom::pushgateway().await;
    let prometheus = prom::prometheus(&prom::scrape_job("pushgateway", gateway.addr(), true)).await;
    let dropped = dropped_pushes();

    for step in 0..3 {
        pushed_build(step).expect("build");
    }
    to_gateway(
        &gateway.base_url(),
        "batch_build_test",
        &[("instance", "batch-runner")],
    )
    .await
    .expect("push to the gateway");
    // Two more builds, then the guard pushes as the job's scope ends.
    let url = gateway.base_url();
    tokio::task::spawn_blocking(move || {
        let _push = PushOnDrop::new(url, "batch_build_test").grouping("instance", "drop-guard");
        for step in 3..5 {
            pushed_build(step).expect("build");
        }
    })
    .await
    .expect("the batch job scope finishes without panicking");

    let selector = r#"hyperkit_builds_total{job="batch_build_test",status="success"}"#;
    let by_group = eventually(
        "Prometheus has both pushed groups",
        SCRAPE_WITHIN,
        async || {
            let samples = prom::query(&prometheus, selector).await?;
            let by_group: BTreeMap<String, (String, f64)> = samples
                .into_iter()
                .map(|(l, v)| {
                    let get = |k: &str| l.get(k).cloned().unwrap_or_default();
                    (get("instance"), (get("chain"), v))
                })
                .collect();
            if by_group.len() == 2 {
                Ok(by_group)
            } else {
                Err(format!("{selector}: {by_group:?}"))
            }
        },
    )
    .await;
    // Each group holds the registry as it was pushed, under the tracked
    // chain: 3 calls before the first push, 5 when the guard pushed.
    assert_eq!(
        by_group.get("batch-runner"),
        Some(&("pushed-chain".to_owned(), 3.0)),
        "{by_group:?}"
    );
    assert_eq!(
        by_group.get("drop-guard"),
        Some(&("pushed-chain".to_owned(), 5.0)),
        "{by_group:?}"
    );
    assert_eq!(
        dropped_pushes(),
        dropped,
        "a successful push counted as dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_stopped_gateway_fails_and_counts_a_drop_within_its_timeout() {
    let _one_at_a_time = PUSHES.lock().await;
    let gateway = prom::pushgateway().await;
    let url = gateway.base_url();
    drop(gateway);

    let err = to_gateway(&url, "batch_build_test", &[("instance", "batch-runner")])
        .await
        .expect_err("a push to a stopped gateway fails");
    assert!(matches!(err, PushError::Request(_)), "{err:?}");

    let timeout = Duration::from_secs(2);
    let dropped = dropped_pushes();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        drop(PushOnDrop::new(url, "batch_build_test").timeout(timeout));
    })
    .await
    .expect("dropping the guard does not panic");
    assert!(
        started.elapsed() < timeout + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(dropped_pushes(), dropped + 1.0);

    // A gateway that accepts the connection and never answers: the guard
    // gives up at its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", silent.local_addr().expect("local addr"));
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        drop(PushOnDrop::new(url, "batch_build_test").timeout(timeout));
    })
    .await
    .expect("dropping the guard does not panic");
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "a push with a {timeout:?} timeout took {took:?}"
    );
    assert_eq!(dropped_pushes(), dropped + 2.0);
    drop(silent);
}
