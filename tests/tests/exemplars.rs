//! Exemplars on `/metrics`, proven with a real Prometheus 2.42 started with
//! `--enable-feature=exemplar-storage`: it scrapes an app of tracked builds
//! over OpenMetrics, `/api/v1/query_exemplars` returns a trace id for the
//! build-duration histogram, and the local log store holds lines of that
//! trace for a build of that chain. The text format stays the default and
//! `promtool check metrics` clean.
//!
//! Needs `prometheus` and `promtool` (Debian's `prometheus` package);
//! fails naming them when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyperkit_obs::logs::{LogStore, Query, SearchOptions};
use hyperkit_obs::{LabelValue, trace, track_build};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Copy, LabelValue)]
enum Chain {
    Ethereum,
}

#[track_build(chain)]
async fn exemplar_build(chain: Chain, n: u64) -> Result<u64, String> {
    tracing::info!("building {n}");
    Ok(n * 2)
}

/// A directory of its own under the target directory's tmp, removed on
/// drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "hyperkit-exemplars-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed by its PID and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(binary: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(binary);
    assert!(
        path.exists(),
        "{binary} is not installed: apt-get install --no-install-recommends prometheus"
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `probe` every 200 ms until it gives a value, failing with what it
/// said last after `within`.
async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_the_exemplars_of_a_histogram_and_the_log_store_holds_their_trace() {
    let prometheus = installed("prometheus");
    let promtool = installed("promtool");
    let store_dir = Dir::new("store");
    let (sink, store_guard) =
        hyperkit_obs::logs::store::start(&store_dir.0, Default::default()).unwrap();
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
        exemplar_build(Chain::Ethereum, n).await.unwrap();
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
    let dir = Dir::new("prometheus");
    let port = free_port();
    std::fs::write(
        dir.0.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    \
             static_configs:\n      - targets: ['{app}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
    let _prometheus = Process(
        Command::new(&prometheus)
            .current_dir(&dir.0)
            .args([
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=data",
                "--enable-feature=exemplar-storage",
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = format!("http://127.0.0.1:{port}");
    let exemplars = eventually(
        "Prometheus stores an exemplar of the build histogram",
        Duration::from_secs(60),
        async || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let body = http
                .get(format!("{api}/api/v1/query_exemplars"))
                .query(&[
                    (
                        "query",
                        "hyperkit_build_duration_seconds_bucket{chain=\"ethereum\"}",
                    ),
                    ("start", &(now - 3600).to_string()),
                    ("end", &(now + 60).to_string()),
                ])
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let body: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let found: Vec<String> = body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
                .collect();
            if found.is_empty() {
                let log = std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default();
                Err(format!(
                    "{body}; log tail: {}",
                    &log[log.len().saturating_sub(800)..]
                ))
            } else {
                Ok(found)
            }
        },
    )
    .await;

    // The trace of an exemplar is a build of that chain in the log store.
    drop(store_guard); // writes what is queued
    let store = LogStore::open(&store_dir.0).unwrap();
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
            .all(|l| l.document.contains("\"chain\":\"ethereum\""))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.document.contains("exemplar_build succeeded"))
    );
    server.shutdown().await;
}
