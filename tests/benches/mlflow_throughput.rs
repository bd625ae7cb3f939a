//! Sustained runs per second delivered to one real MLflow 3 server: this
//! crate's exporter against MLflow's Python client logging the same runs
//! the way the original design does (`with mlflow.start_run():
//! log_params(...); log_metrics(...)`), one after the other in one process.
//!
//! Two servers, each over a fresh SQLite database:
//!
//! 1. the one the tests start (`--workers 1`): one Python process, so its CPU
//!    bounds every client; the benchmark reads that CPU from `/proc` and
//!    prints the ceiling it sets;
//! 2. MLflow's default (`mlflow server --backend-store-uri sqlite:///…`, 4
//!    worker processes), as a user runs it.
//!
//! For each, the time of one request at a time is printed too: it is what a
//! client that waits for every answer, as Python's does, is bound by.
//!
//! Needs the MLflow 3 venv that `.ci/run` creates
//! (`~/.cache/hyperkit-obs/mlflow/v3`). Run with
//! `cargo bench -p tests --bench mlflow_throughput`. With
//! `HYPERKIT_BENCH_MLFLOW_URI=http://…` it measures that server instead;
//! `HYPERKIT_MLFLOW_CONCURRENCY` sets the exporter's runs in flight.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hyperkit_obs::mlflow::{
    self, KeyValue, Metric, MlflowClient, MlflowConfig, RunStatus, TrackingTarget,
};
use hyperkit_obs::{ModelOutput, track_model};
use test_support::bench::median;
use test_support::mlflow::{Backend, MlflowServer, Version, python};

/// Runs each client logs.
const RUNS: u64 = 400;
/// Runs timed request by request for the server's floor.
const FLOOR_RUNS: u64 = 50;

/// CPU seconds (user and system) used so far by the processes of one
/// process group: the MLflow server and its uvicorn worker.
fn group_cpu_seconds(group: u32, ticks_per_second: f64) -> f64 {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, pgrp,
        // ..., utime (12th), stime (13th).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(group) {
            ticks +=
                fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        }
    }
    ticks as f64 / ticks_per_second
}

/// `getconf CLK_TCK`: the unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

struct Completion(u64);

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.0)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(2 * self.0)
    }
    fn accepted(&self) -> Option<bool> {
        Some(self.0.is_multiple_of(2))
    }
}

#[derive(Debug)]
struct ModelError;

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("model error")
    }
}

#[track_model(model, task = "codegen")]
fn complete(model: &str, i: u64) -> Result<Completion, ModelError> {
    Ok(Completion(black_box(i)))
}

/// The Python client, the original design's way: one `start_run` block per
/// call with `log_params` and `log_metrics`. Times itself after
/// `set_experiment`.
const PYTHON_CLIENT: &str = r#"
import json, os, time
import mlflow

def server_cpu(group=int(os.environ["SERVER_PGID"]), tick=os.sysconf("SC_CLK_TCK")):
    total = 0
    if group == 0:
        return 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / tick

mlflow.set_tracking_uri(os.environ["TRACKING_URI"])
mlflow.set_experiment(os.environ["EXPERIMENT_NAME"])
n = int(os.environ["RUNS"])
cpu = server_cpu()
start = time.perf_counter()
for i in range(n):
    model = f"model-{i % 2}"
    with mlflow.start_run(run_name=f"codegen-{model}"):
        mlflow.log_params({"model": model, "task": "codegen"})
        mlflow.log_metrics({
            "input_tokens": i,
            "output_tokens": 2 * i,
            "latency_seconds": 1.5,
            "accepted": i % 2,
        })
seconds = time.perf_counter() - start
print(json.dumps({"runs": n, "seconds": seconds, "server_cpu": server_cpu() - cpu}))
"#;

/// What one server gave each client.
struct Measured {
    python_rate: f64,
    python_seconds: f64,
    exporter_rate: f64,
    exporter_seconds: f64,
    /// Server CPU seconds (all its processes) during each client's runs,
    /// when the server is one this benchmark started.
    server_cpu: Option<(f64, f64)>,
    concurrency: usize,
}

/// Runs [`RUNS`] runs through the Python client, then through the
/// exporter, against the server at `url`; `group` is the server's process
/// group, to read its CPU time.
fn measure(url: &str, group: Option<u32>, concurrency: Option<usize>, tag: &str) -> Measured {
    let ticks = clock_ticks();
    let server_cpu = || group.map_or(0.0, |g| group_cpu_seconds(g, ticks));

    let py = python(
        Version::V3,
        PYTHON_CLIENT,
        &[
            ("TRACKING_URI", url),
            ("EXPERIMENT_NAME", &format!("throughput-python-{tag}")),
            ("RUNS", &RUNS.to_string()),
            ("SERVER_PGID", &group.unwrap_or(0).to_string()),
        ],
    );
    let python_seconds = py["seconds"].as_f64().expect("python reports its time");
    let python_cpu = py["server_cpu"]
        .as_f64()
        .expect("python reports server CPU");

    let mut config = MlflowConfig::default();
    config.target = TrackingTarget::Server(url.to_owned());
    config.experiment_name = format!("throughput-hyperkit-{tag}");
    if let Some(n) = concurrency {
        config.concurrency = n;
    }
    let guard = mlflow::start(&config).expect("exporter starts");
    // The experiment is resolved before timing, as `set_experiment` is.
    let _ = complete("model-0", 0);
    assert!(mlflow::flush(Duration::from_secs(60)));
    let cpu = server_cpu();
    let start = Instant::now();
    for i in 0..RUNS {
        let _ = complete(
            if i.is_multiple_of(2) {
                "model-0"
            } else {
                "model-1"
            },
            i,
        );
    }
    assert!(
        mlflow::flush(Duration::from_secs(600)),
        "delivered: {:?}",
        mlflow::status()
    );
    let exporter_seconds = start.elapsed().as_secs_f64();
    let exporter_cpu = server_cpu() - cpu;
    guard.shutdown(Duration::from_secs(5));
    Measured {
        python_rate: RUNS as f64 / python_seconds,
        python_seconds,
        exporter_rate: RUNS as f64 / exporter_seconds,
        exporter_seconds,
        server_cpu: group.map(|_| (python_cpu, exporter_cpu)),
        concurrency: config.concurrency,
    }
}

/// The server's floor: the three requests of one run, sent one at a time
/// with nothing else in flight; the median time of each, in seconds.
fn floor(url: &str) -> [f64; 3] {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = MlflowClient::from_url(url).unwrap();
    let (mut create, mut batch, mut update) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let experiment = client
            .get_or_create_experiment("throughput-floor")
            .await
            .unwrap();
        for i in 0..FLOOR_RUNS {
            let t = Instant::now();
            let run = client
                .create_run(
                    &experiment,
                    "floor",
                    0,
                    &[KeyValue::new("status", "success")],
                )
                .await
                .unwrap();
            create.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            client
                .log_batch(
                    &run.run_id,
                    &[Metric::new("input_tokens", i as f64, 0)],
                    &[KeyValue::new("model", "m"), KeyValue::new("task", "t")],
                    &[],
                )
                .await
                .unwrap();
            batch.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            client
                .update_run(&run.run_id, RunStatus::Finished, Some(1))
                .await
                .unwrap();
            update.push(t.elapsed().as_secs_f64());
        }
    });
    [median(create), median(batch), median(update)]
}

fn report(title: &str, m: &Measured, floor: [f64; 3], one_worker: bool) {
    let ratio = m.exporter_rate / m.python_rate;
    println!("{title} ({RUNS} runs each, one after the other):");
    println!(
        "  Python client (start_run; log_params; log_metrics)   {:6.1} runs/s  ({:6.2} s)  1.00x",
        m.python_rate, m.python_seconds
    );
    println!(
        "  hyperkit-obs exporter ({} runs in flight)             {:6.1} runs/s  ({:6.2} s)  {ratio:.2}x  target >= 5x: {}",
        m.concurrency,
        m.exporter_rate,
        m.exporter_seconds,
        if ratio >= 5.0 { "PASS" } else { "MISS" }
    );
    if let Some((python_cpu, exporter_cpu)) = m.server_cpu {
        let per_run = |cpu: f64| cpu / RUNS as f64 * 1e3;
        println!(
            "  server CPU per run: {:.1} ms under Python, {:.1} ms under the exporter ({:.2} cores busy)",
            per_run(python_cpu),
            per_run(exporter_cpu),
            exporter_cpu / m.exporter_seconds
        );
        // One worker runs Python under one GIL: the CPU it spends per run
        // bounds what any client can get out of it.
        if one_worker {
            println!(
                "  server ceiling at one busy core: {:.1} runs/s  ({:.2}x Python)",
                RUNS as f64 / exporter_cpu,
                RUNS as f64 / exporter_cpu / m.python_rate
            );
        }
    }
    let [create, batch, update] = floor;
    let floor_rate = 1.0 / (create + batch + update);
    println!(
        "  one request at a time: create {:.1} ms + log-batch {:.1} ms + update {:.1} ms = {floor_rate:.1} runs/s  ({:.2}x Python)",
        create * 1e3,
        batch * 1e3,
        update * 1e3,
        floor_rate / m.python_rate
    );
}

fn main() {
    // `cargo test --benches` runs benches once without `--bench`: this one
    // needs a server, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let concurrency = std::env::var("HYPERKIT_MLFLOW_CONCURRENCY")
        .ok()
        .map(|n| n.parse().expect("HYPERKIT_MLFLOW_CONCURRENCY is a number"));
    let version = Version::V3.mlflow_version();
    if let Ok(url) = std::env::var("HYPERKIT_BENCH_MLFLOW_URI") {
        let m = measure(&url, None, concurrency, "external");
        report(
            &format!("The MLflow server at {url}"),
            &m,
            floor(&url),
            false,
        );
        return;
    }

    // The server the tests start: SQLite, one worker.
    let server = MlflowServer::start(Version::V3, Backend::Sqlite);
    let m = measure(&server.url(), server.pid(), concurrency, "one-worker");
    let f = floor(&server.url());
    drop(server);
    report(
        &format!("MLflow {version} server, SQLite, --workers 1 (the tests' server)"),
        &m,
        f,
        true,
    );

    // MLflow's default: `mlflow server --backend-store-uri sqlite:///…`,
    // which runs 4 worker processes.
    let server = MlflowServer::start_with_workers(Version::V3, Backend::Sqlite, None);
    let m = measure(&server.url(), server.pid(), concurrency, "default");
    let f = floor(&server.url());
    drop(server);
    report(
        &format!("MLflow {version} server, SQLite, MLflow's default workers (4)"),
        &m,
        f,
        false,
    );
}
