//! The soak test: the demo at high speed for ten minutes (on embedded
//! defaults, no servers), `/metrics` scraped and the status page's history
//! polled every second, as Prometheus and a browser would. It checks that
//! the process's resident memory and open file descriptors stay flat after
//! the warm-up, that no sink drops anything, that every log line printed is
//! also in the local store and every model call is an MLflow run in
//! `./mlruns`, and that the only WARN or ERROR lines are the demo's
//! simulated failures.
//!
//! It is `#[ignore]`d (it runs for minutes); run it with
//!
//! ```text
//! cargo test --release -p examples --test demo soak -- --ignored --nocapture
//! ```
//!
//! `HYPERKIT_SOAK_SECS` sets the length (default 600 s; the warm-up is a
//! fifth of it, at most 60 s) and `HYPERKIT_SOAK_SPEED` the demo's speed
//! (default 100).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{TempDir, free_port};

/// Messages of the demo's simulated failures: the only ERROR lines allowed.
const SIMULATED: &[&str] = &[
    "out of gas during deployment",
    "linker error",
    "test suite failed",
    "deadlock detected",
    "429 rate limited",
    "health check failed",
    "stream reset by peer",
];

/// One sample of the running demo.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    series: usize,
    history_bytes: usize,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// The value of the `hyperkit_obs_dropped_total` sample of `sink` in an
/// exposition, 0 when absent.
fn dropped(exposition: &str, sink: &str) -> f64 {
    let wanted = format!("hyperkit_obs_dropped_total{{sink=\"{sink}\"}} ");
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

/// Runs in `./mlruns` with a `meta.yaml` (experiment `0` is MLflow's
/// default and holds none of ours).
fn mlflow_runs(mlruns: &Path) -> usize {
    std::fs::read_dir(mlruns)
        .expect("./mlruns was written")
        .flatten()
        .filter(|e| e.file_name() != "0" && e.path().join("meta.yaml").is_file())
        .map(|experiment| {
            std::fs::read_dir(experiment.path())
                .expect("an experiment directory")
                .flatten()
                .filter(|run| run.path().join("meta.yaml").is_file())
                .count()
        })
        .sum()
}

/// Stops the demo when a failed assertion unwinds past it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for minutes: cargo test --release -p examples --test demo soak -- --ignored --nocapture"]
async fn the_demo_at_high_speed_keeps_memory_and_descriptors_flat_and_loses_nothing() {
    let length = Duration::from_secs(env_u64("HYPERKIT_SOAK_SECS", 600).max(10));
    let warm_up = (length / 5).min(Duration::from_secs(60));
    let speed = env_u64("HYPERKIT_SOAK_SPEED", 100);
    let dir = TempDir::new("soak");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .current_dir(dir.path())
        .env("HYPERKIT_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("HYPERKIT_DEMO_SPEED", speed.to_string())
        .env("HYPERKIT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        // Every cache that fills as the demo runs is small enough to be
        // full by the end of the warm-up, so that what grows after it has
        // no bound: the store's page cache (32 MiB by default, full after
        // about 15 minutes at speed 100) and the run ids kept for late
        // acceptances (100,000 by default, about 30 minutes).
        .env("HYPERKIT_LOG_STORE_CACHE", "1MiB")
        .env("HYPERKIT_MLFLOW_REMEMBERED_RUNS", "1000")
        .env_remove("HYPERKIT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let mut demo = Running(child);
    let pid = demo.0.id();

    // Both pipes are read all along: a reader that stops would be a fault
    // of the test (the faults tests cover that one).
    let lines = crate::stdout_lines(&mut demo.0);
    let stderr = demo.0.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut scrapes = 0u64;
    let mut failed_scrapes = Vec::new();
    let mut next = started;
    while started.elapsed() < length {
        if let Ok(Some(status)) = demo.0.try_wait() {
            panic!("the demo exited early ({status}): {:?}", stderr.join());
        }
        next += Duration::from_secs(1);
        let metrics = http.get(format!("{base}/metrics")).send().await;
        let history = http
            .get(format!("{base}{}", hyperkit_obs::http::STATUS_HISTORY_PATH))
            .send()
            .await;
        match (metrics, history) {
            (Ok(m), Ok(h)) if m.status().is_success() && h.status().is_success() => {
                let exposition = m.text().await.expect("a /metrics body");
                let history = h.bytes().await.expect("a history body");
                serde_json::from_slice::<serde_json::Value>(&history).expect("the history is JSON");
                scrapes += 1;
                for sink in ["stdout", "logstore", "mlflow"] {
                    assert_eq!(
                        dropped(&exposition, sink),
                        0.0,
                        "{sink} dropped at {:?}",
                        started.elapsed()
                    );
                }
                samples.push(Sample {
                    at: started.elapsed(),
                    rss_kib: rss_kib(pid),
                    fds: fds(pid),
                    series: exposition
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.is_empty())
                        .count(),
                    history_bytes: history.len(),
                });
            }
            // Still starting (the first second or two), or a scrape that
            // failed: counted and reported, and no more than a handful.
            (m, h) => failed_scrapes.push(format!(
                "{:?}: {:?} / {:?}",
                started.elapsed(),
                m.map(|r| r.status()),
                h.map(|r| r.status())
            )),
        }
        tokio::time::sleep_until(next.into()).await;
    }

    // Stop as an operator would, and collect everything printed.
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.0.try_wait().expect("the demo can be waited for") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 60 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = stderr.join().expect("stderr is read");
    let printed: Vec<String> = lines.iter().collect();
    assert!(status.success(), "exit status {status}: {stderr:#?}");
    assert!(
        printed.iter().any(|l| l == "flushed; bye"),
        "no 'flushed; bye'"
    );
    assert!(stderr.is_empty(), "the demo wrote to stderr: {stderr:#?}");
    assert!(
        failed_scrapes.len() <= 5,
        "{} of {} scrapes failed: {failed_scrapes:#?}",
        failed_scrapes.len(),
        scrapes + failed_scrapes.len() as u64
    );

    // Flat after the warm-up: the highest figure of the rest against the
    // figure at its end. The bound leaves room for the allocator and for
    // the status page's history, which fills its hour of samples (a few
    // bytes per series per second), but not for anything that grows with
    // the number of calls.
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm_up).collect();
    let first = *steady.first().expect("samples after the warm-up");
    let last = *steady.last().expect("samples after the warm-up");
    let max_rss = steady.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_fds = steady.iter().map(|s| s.fds).max().unwrap_or(0);
    let max_history = steady.iter().map(|s| s.history_bytes).max().unwrap_or(0);

    // The accounting, from what was printed and what is on disk.
    let json: Vec<serde_json::Value> = printed
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let model_events = json.iter().filter(|d| d.get("task").is_some()).count();
    let runs = mlflow_runs(&dir.path().join("mlruns"));
    let store = hyperkit_obs::logs::LogStore::open(dir.path().join("hyperkit-data/logs"))
        .expect("the store opens");
    let stored = store.count().expect("the store counts");
    let loud: Vec<&serde_json::Value> = json
        .iter()
        .filter(|d| matches!(d["log.level"].as_str(), Some("warn" | "error")))
        .collect();
    let unexpected: Vec<&&serde_json::Value> = loud
        .iter()
        .filter(|d| {
            let message = d["message"].as_str().unwrap_or_default();
            !SIMULATED.iter().any(|s| message.contains(s))
        })
        .collect();

    println!(
        "soak: {:?} at speed {speed}, {scrapes} scrapes ({} failed), warm-up {warm_up:?}",
        length,
        failed_scrapes.len()
    );
    println!(
        "  RSS {} KiB at {:?} -> {} KiB at {:?} (max {} KiB, {:+.1}%)",
        first.rss_kib,
        first.at,
        last.rss_kib,
        last.at,
        max_rss,
        (max_rss as f64 / first.rss_kib as f64 - 1.0) * 100.0
    );
    println!(
        "  fds {} -> {} (max {max_fds}); series {} -> {}; history {} -> {} bytes (max {max_history})",
        first.fds, last.fds, first.series, last.series, first.history_bytes, last.history_bytes
    );
    println!(
        "  {} JSON lines printed, {stored} stored; {model_events} model calls, {runs} runs; {} WARN/ERROR lines, all simulated: {}",
        json.len(),
        loud.len(),
        unexpected.is_empty()
    );

    assert!(
        max_rss <= first.rss_kib + first.rss_kib / 8 + 4 * 1024,
        "RSS grew from {} KiB to {max_rss} KiB after the warm-up",
        first.rss_kib
    );
    assert!(
        max_fds <= first.fds + 8,
        "open descriptors grew from {} to {max_fds}",
        first.fds
    );
    assert!(
        last.series <= first.series + first.series / 10 + 50,
        "/metrics grew from {} to {} series",
        first.series,
        last.series
    );
    assert!(
        max_history <= 4 * 1024 * 1024,
        "the history answer reached {max_history} bytes"
    );
    assert!(
        json.len() > 1000,
        "only {} log lines in {length:?}",
        json.len()
    );
    assert_eq!(
        stored,
        json.len() as u64,
        "every printed line is in the store"
    );
    assert_eq!(runs, model_events, "every model call is a run");
    assert!(unexpected.is_empty(), "not simulated: {unexpected:#?}");
}
