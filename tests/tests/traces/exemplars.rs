//! Exemplars on `/metrics`, proven with a real Prometheus 2.42 started with
//! `--enable-feature=exemplar-storage`: it scrapes an app of tracked builds
//! over OpenMetrics, `/api/v1/query_exemplars` returns a trace id for the
//! build-duration histogram, and the local log store holds lines of that
//! trace for a build of that chain. The text format stays the default and
//! `promtool check metrics` clean.
//!
//! Needs `prometheus` and `promtool` (Debian's `prometheus` package);
//! fails naming them when they are missing. The chain is this module's own
//! (`cardano`): the last sampled call of a series is its exemplar, and the
//! binary's other tests build other chains meanwhile.

use std::process::{Command, Stdio};
use std::time::Duration;

use hyperkit_obs::logs::{LogStore, Query, SearchOptions};
use hyperkit_obs::{LabelValue, trace, track_build};
use test_support::TempDir;
use test_support::prometheus::{self, prometheus_with_flags};
use test_support::wait::eventually;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Copy, LabelValue)]
enum Chain {
    Cardano,
}

#[track_build(chain)]
async fn exemplar_build(chain: Chain, n: u64) -> Result<u64, String> {
    tracing::info!("building {n}");
    Ok(n * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_the_exemplars_of_a_histogram_and_the_log_store_holds_their_trace() {
    let _sampling = super::sampling().await;
    let promtool = prometheus::require("promtool");
    let store_dir = TempDir::new("exemplars-store");
    let (sink, store_guard) =
        hyperkit_obs::logs::store::start(store_dir.path(), Default::default()).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(trace::ContextLayer)
        .with(
            hyperkit_obs::logs::layer("exemplar-test")
                .without_writer()
                .with_store(sink),
        );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = hyperkit_obs::http::serve_router(
        "127.0.0.1:0".parse().unwrap(),
        hyperkit_obs::http::router(),
    )
    .await
    .unwrap();
    let app = server.local_addr();
    for n in 0..5 {
        exemplar_build(Chain::Cardano, n).await.unwrap();
    }

    // The text format stays the default and lint-clean.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let text = http
        .get(format!("http://{app}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = text.text().await.unwrap();
    assert!(!text.contains("trace_id"), "no exemplar in the text format");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let lint = check.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Prometheus with exemplar storage scrapes it over OpenMetrics.
    let prometheus = prometheus_with_flags(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    \
             static_configs:\n      - targets: ['{app}']\n"
        ),
        &[],
        &["--enable-feature=exemplar-storage"],
    )
    .await;
    let exemplars = eventually(
        "Prometheus stores an exemplar of the build histogram",
        Duration::from_secs(60),
        async || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let (_, body) = prometheus
                .get_with(
                    "/api/v1/query_exemplars",
                    &[
                        (
                            "query",
                            "hyperkit_build_duration_seconds_bucket{chain=\"cardano\"}",
                        ),
                        ("start", &(now - 3600).to_string()),
                        ("end", &(now + 60).to_string()),
                    ],
                )
                .await?;
            let body: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let found: Vec<String> = body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
                .collect();
            if found.is_empty() {
                Err(format!("{body}; {}", prometheus.logs(10)))
            } else {
                Ok(found)
            }
        },
    )
    .await;

    // The trace of an exemplar is a build of that chain in the log store.
    drop(store_guard); // writes what is queued
    let store = LogStore::open(store_dir.path()).unwrap();
    let trace_id = &exemplars[0];
    assert_eq!(trace_id.len(), 32);
    let query = Query::parse(&format!("trace.id:{trace_id}")).unwrap();
    let lines = store.search(&query, &SearchOptions::default()).unwrap();
    assert!(
        !lines.is_empty(),
        "no line of trace {trace_id} in the store"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.document.contains("\"chain\":\"cardano\""))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.document.contains("exemplar_build succeeded"))
    );
    server.shutdown().await;
}
