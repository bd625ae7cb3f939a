//! The local file store written by Rust is read by a real `mlflow server` and
//! by MLflow's Python client with the same result, for MLflow 3 and MLflow 2.
//!
//! For each version, Rust ([`FileStore`]) writes 30 runs into a fresh store,
//! in two experiments with awkward names: params (a `/` key among them),
//! several values for some metrics (so that the latest value follows
//! MLflow's rule: greatest step, then timestamp, then value), dotted
//! `gen_ai.*` tags, a tag value cut to MLflow's limit, awkward run names
//! (`:`, `'`, `#`, a line break, a tab, non-ASCII), FINISHED, FAILED, KILLED
//! and RUNNING runs. Then:
//!
//! 1. MLflow's `MlflowClient` reads every run from `file://<store>`;
//! 2. the Python client writes a run into the Rust-created store, and Rust
//!    (`FileStore::runs`) reads it as Python does (interop the other way);
//! 3. `mlflow server --backend-store-uri <store>` serves the store and the
//!    Python client reads every run over HTTP.
//!
//! Each read must equal exactly what Rust wrote (run id and name, status,
//! start and end times, params, latest metrics, tags including
//! `mlflow.runName`), and `FileStore::runs` must read back the same.
//!
//! A third test has PyYAML (what MLflow reads `meta.yaml` with) read back
//! experiment names YAML must quote or escape, exactly as Rust wrote them.
//!
//! Needs the MLflow venvs of `test_support::mlflow` (the failure names the commands
//! that create them). The tests take turns (one server at a time).

use std::collections::BTreeMap;
use std::time::Instant;

use hyperkit_obs::mlflow::{
    FileStore, KeyValue, MAX_TAG_VALUE_LENGTH, Metric, Run, RunRecord, RunStatus,
};
use serde_json::{Value, json};
use test_support::TempDir;
use test_support::mlflow::{
    Backend, MlflowServer, Version, experiment_lifecycle, python, read_runs, serial,
};

/// Two experiments, with characters YAML and MLflow's search must cope with
/// (no `'`: MLflow's own file store cannot look such a name up).
const EXPERIMENTS: [&str; 2] = ["hyperkit: model calls", "builds #2 (ci/cd) — ünï: [x]"];
const RUNS: usize = 30;
const T0: i64 = 1_760_000_000_000;

/// Run names YAML must quote or escape.
const AWKWARD_NAMES: [&str; 8] = [
    "call: summarize 'doc' #1",
    "it's a run",
    "yes",
    "12345",
    "  leading and trailing  ",
    "line\nbreak",
    "tab\there",
    "日本語 ☃ \"quoted\"",
];

fn metric(key: &str, value: f64, timestamp: i64, step: i64) -> Metric {
    Metric {
        key: key.to_owned(),
        value,
        timestamp,
        step,
    }
}

/// The runs Rust writes: run `i` goes to experiment `i % 2`.
fn records() -> Vec<RunRecord> {
    (0..RUNS)
        .map(|i| {
            let n = i64::try_from(i).unwrap();
            let start = T0 + n * 10_000;
            let status = match i {
                3 | 17 => RunStatus::Failed,
                5 => RunStatus::Killed,
                _ => RunStatus::Finished,
            };
            let mut tags = vec![
                KeyValue::new("gen_ai.request.model", format!("model-{}", i % 3)),
                KeyValue::new("gen_ai.system", "openai"),
                KeyValue::new("hyperkit.chain", "ethereum"),
            ];
            if i == 7 {
                tags.push(KeyValue::new("hyperkit.prompt", "p".repeat(9000)));
            }
            let mut metrics = vec![metric(
                "latency_ms",
                100.0 + 1.5 * f64::from(u8::try_from(i).unwrap()),
                start + 900,
                0,
            )];
            if i % 3 == 0 {
                // Latest by step, although an older timestamp.
                metrics.extend([
                    metric("tokens/out", 10.0, start + 500, 0),
                    metric("tokens/out", 30.0, start + 100, 2),
                    metric("tokens/out", 20.0, start + 800, 1),
                ]);
            }
            if i % 4 == 0 {
                // Same step: the latest timestamp; then the greatest value.
                metrics.extend([
                    metric("cost.usd", 0.25, start + 300, 0),
                    metric("cost.usd", 0.125, start + 200, 0),
                    metric("score", 0.5, start + 400, 0),
                    metric("score", 0.75, start + 400, 0),
                    metric("score", 0.625, start + 400, 0),
                ]);
            }
            if i == 9 {
                metrics.push(metric("big", 1e300, start, 0));
                metrics.push(metric("tiny", -1.5e-300, start, 0));
            }
            RunRecord {
                run_name: AWKWARD_NAMES
                    .get(i)
                    .map_or_else(|| format!("run-{i:02}"), |s| (*s).to_owned()),
                start_time: start,
                end_time: (i != 11).then_some(start + 1_234),
                status,
                params: vec![
                    KeyValue::new("model", format!("model-{}", i % 3)),
                    KeyValue::new("temperature", format!("0.{i}")),
                    KeyValue::new("prompt/template", "Summarize: {doc}"),
                ],
                metrics,
                tags,
            }
        })
        .collect()
}

/// What MLflow must return for `record`, stored as run `run_id`: the
/// shape of `test_support::mlflow::READ_RUNS_PY`.
fn expected(run_id: &str, record: &RunRecord) -> Value {
    let mut latest: BTreeMap<&str, &Metric> = BTreeMap::new();
    for m in &record.metrics {
        let newer = latest.get(m.key.as_str()).is_none_or(|b| {
            (m.step, m.timestamp) > (b.step, b.timestamp)
                || ((m.step, m.timestamp) == (b.step, b.timestamp) && m.value > b.value)
        });
        if newer {
            latest.insert(&m.key, m);
        }
    }
    let mut tags: BTreeMap<String, String> = record
        .tags
        .iter()
        .map(|t| {
            let value = if t.value.chars().count() > MAX_TAG_VALUE_LENGTH {
                let keep: String = t.value.chars().take(MAX_TAG_VALUE_LENGTH - 3).collect();
                format!("{keep}...")
            } else {
                t.value.clone()
            };
            (t.key.clone(), value)
        })
        .collect();
    tags.insert("mlflow.runName".to_owned(), record.run_name.clone());
    let running = record.end_time.is_none();
    json!({
        "run_id": run_id,
        "run_name": record.run_name,
        "status": if running { "RUNNING" } else { record.status.as_str() },
        "start_time": record.start_time,
        "end_time": record.end_time,
        "params": record.params.iter().map(|p| (p.key.clone(), json!(p.value))).collect::<serde_json::Map<_, _>>(),
        "metrics": latest.iter().map(|(k, m)| ((*k).to_owned(), number(m.value))).collect::<serde_json::Map<_, _>>(),
        "tags": tags,
    })
}

fn number(v: f64) -> Value {
    if v.is_nan() {
        json!("nan")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "inf" } else { "-inf" })
    } else {
        json!(v)
    }
}

/// A run as Rust's `FileStore` reads it, in the shape of `READ_RUNS_PY`.
fn from_rust(run: &Run) -> Value {
    json!({
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status.as_str(),
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": run.data.params.iter().map(|p| (p.key.clone(), json!(p.value))).collect::<serde_json::Map<_, _>>(),
        "metrics": run.data.metrics.iter().map(|m| (m.key.clone(), number(m.value))).collect::<serde_json::Map<_, _>>(),
        "tags": run.data.tags.iter().map(|t| (t.key.clone(), json!(t.value))).collect::<serde_json::Map<_, _>>(),
    })
}

fn rust_runs(store: &FileStore, experiment_id: &str) -> Vec<Value> {
    let mut runs: Vec<Value> = store
        .runs(experiment_id)
        .unwrap()
        .iter()
        .map(from_rust)
        .collect();
    runs.sort_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
    runs
}

/// Panics with the first run that differs, by id, rather than two walls of
/// JSON.
fn assert_same_runs(what: &str, got: &[Value], want: &[Value]) {
    for w in want {
        let id = &w["run_id"];
        let g = got.iter().find(|g| &g["run_id"] == id);
        assert_eq!(g, Some(w), "{what}: run {id} differs");
    }
    assert_eq!(got.len(), want.len(), "{what}: extra runs: {got:#?}");
}

/// Writes one run with MLflow's Python client into the store at `uri`,
/// prints its id.
const PYTHON_WRITES_PY: &str = r#"
import json, os
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

client = MlflowClient(tracking_uri=os.environ["TRACKING_URI"])
experiment = client.get_experiment_by_name(os.environ["EXPERIMENT_NAME"])
run = client.create_run(experiment.experiment_id, start_time=1760000999000, run_name="from python: 'x' #1")
run_id = run.info.run_id
client.log_batch(
    run_id,
    metrics=[
        Metric("tokens/out", 5.0, 1760000999100, 0),
        Metric("tokens/out", 7.5, 1760000999050, 1),
        Metric("latency_ms", float("nan"), 1760000999200, 0),
    ],
    params=[Param("model", "py-model"), Param("nested/key", "v")],
    tags=[RunTag("gen_ai.request.model", "py-model")],
)
client.set_terminated(run_id, "FAILED", end_time=1760000999999)
print(json.dumps({"run_id": run_id}))
"#;

fn proof(version: Version) {
    let _turn = serial();
    let began = Instant::now();
    let dir = TempDir::new(&format!("mlflow-file-store-{version:?}"));
    let store_path = dir.path().join("mlruns");
    let store = FileStore::open(&store_path).unwrap();
    let uri = format!("file://{}", store.root().display());

    // Rust writes.
    let ids: Vec<String> = EXPERIMENTS
        .iter()
        .map(|name| store.get_or_create_experiment(name).unwrap())
        .collect();
    let mut want: Vec<Vec<Value>> = vec![Vec::new(), Vec::new()];
    for (i, record) in records().iter().enumerate() {
        let run_id = store.log_run(&ids[i % 2], record).unwrap();
        want[i % 2].push(expected(&run_id, record));
    }
    for w in &mut want {
        w.sort_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
    }
    // The tag cut to MLflow's limit, as MLflow's own client cuts it.
    let cut = want
        .iter()
        .flatten()
        .find_map(|r| r["tags"]["hyperkit.prompt"].as_str())
        .unwrap();
    assert_eq!(cut.chars().count(), MAX_TAG_VALUE_LENGTH);
    for (id, w) in ids.iter().zip(&want) {
        assert_same_runs("FileStore::runs", &rust_runs(&store, id), w);
    }
    let written = began.elapsed();

    // 1. The Python client reads the store directly.
    for (name, w) in EXPERIMENTS.iter().zip(&want) {
        assert_same_runs(
            &format!("MLflow {version:?} client, {uri}, {name:?}"),
            &read_runs(version, &uri, name),
            w,
        );
    }
    let read_by_file = began.elapsed();

    // 2. The Python client writes a run into the Rust-created store; Rust
    //    reads it.
    let wrote = python(
        version,
        PYTHON_WRITES_PY,
        &[
            ("TRACKING_URI", &uri),
            ("EXPERIMENT_NAME", EXPERIMENTS[0]),
            ("MLFLOW_ALLOW_FILE_STORE", "true"),
        ],
    );
    let py_run_id = wrote["run_id"].as_str().unwrap().to_owned();
    let py_run = json!({
        "run_id": py_run_id,
        "run_name": "from python: 'x' #1",
        "status": "FAILED",
        "start_time": 1_760_000_999_000_i64,
        "end_time": 1_760_000_999_999_i64,
        "params": {"model": "py-model", "nested/key": "v"},
        "metrics": {"tokens/out": 7.5, "latency_ms": "nan"},
        "tags": {"gen_ai.request.model": "py-model", "mlflow.runName": "from python: 'x' #1"},
    });
    want[0].push(py_run.clone());
    want[0].sort_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
    // Python's client may add tags of its own (a user, a source): the run
    // Rust reads must hold at least what Python wrote, and then every other
    // reader must agree with Rust on all of it.
    let rust_py = from_rust(&store.run(&py_run_id).unwrap().unwrap());
    for field in [
        "run_id",
        "run_name",
        "status",
        "start_time",
        "end_time",
        "params",
        "metrics",
    ] {
        assert_eq!(rust_py[field], py_run[field], "Python-written run, {field}");
    }
    for (k, v) in py_run["tags"].as_object().unwrap() {
        assert_eq!(&rust_py["tags"][k], v, "Python-written run, tag {k}");
    }
    let index = want[0]
        .iter()
        .position(|r| r["run_id"] == py_run_id)
        .unwrap();
    want[0][index] = rust_py;
    let history = store.metric_history(&py_run_id, "tokens/out").unwrap();
    assert_eq!(
        history,
        vec![
            metric("tokens/out", 5.0, 1_760_000_999_100, 0),
            metric("tokens/out", 7.5, 1_760_000_999_050, 1),
        ]
    );
    for (id, w) in ids.iter().zip(&want) {
        assert_same_runs(
            "FileStore::runs after Python wrote",
            &rust_runs(&store, id),
            w,
        );
    }
    let interop = began.elapsed();

    // 3. A real server over the store; the Python client reads over HTTP.
    let server = MlflowServer::start(version, Backend::FileStore(store.root().to_owned()));
    let server_ready = began.elapsed();
    for (name, w) in EXPERIMENTS.iter().zip(&want) {
        assert_same_runs(
            &format!("MLflow {version:?} server over the file store, {name:?}"),
            &read_runs(version, &server.url(), name),
            w,
        );
    }
    drop(server);

    // 4. MLflow 3 converts the store into a database (`mlflow
    //    migrate-filestore`), and every run comes through as written.
    if version == Version::V3 {
        let target = format!("sqlite:///{}", dir.path().join("migrated.db").display());
        let out = std::process::Command::new(version.bin("mlflow"))
            .arg("migrate-filestore")
            .arg("--source")
            .arg(store.root())
            .args(["--target", &target, "--no-progress"])
            .current_dir(dir.path())
            .env("MLFLOW_ALLOW_FILE_STORE", "true")
            .output()
            .expect("mlflow migrate-filestore runs");
        assert!(
            out.status.success(),
            "mlflow migrate-filestore failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, w) in EXPERIMENTS.iter().zip(&want) {
            assert_same_runs(
                &format!("MLflow {version:?} after migrate-filestore, {name:?}"),
                &read_runs(version, &target, name),
                w,
            );
        }
    }
    eprintln!(
        "MLflow {version:?}: {} runs written by Rust in {:.1} s; read by the Python client from the file store by {:.1} s; Python-written run read by Rust by {:.1} s; server ready by {:.1} s; read over HTTP by {:.1} s",
        RUNS,
        written.as_secs_f64(),
        read_by_file.as_secs_f64(),
        interop.as_secs_f64(),
        server_ready.as_secs_f64(),
        began.elapsed().as_secs_f64(),
    );
}

#[test]
fn mlflow_3_reads_the_rust_file_store_as_rust_wrote_it() {
    proof(Version::V3);
}

#[test]
fn mlflow_2_reads_the_rust_file_store_as_rust_wrote_it() {
    proof(Version::V2);
}

/// Strings YAML must quote or escape, written as experiment names by Rust
/// and read back with PyYAML (what MLflow's file store reads `meta.yaml`
/// with), including those MLflow's own search cannot look up (`'`).
#[test]
fn pyyaml_reads_every_awkward_name_as_rust_wrote_it() {
    let _turn = serial();
    let dir = TempDir::new("mlflow-yaml");
    let store = FileStore::open(dir.path().join("mlruns")).unwrap();
    let names: Vec<String> = [
        "it's: 'quoted' #1",
        "- dash",
        "? question",
        "yes",
        "No",
        "null",
        "~",
        "0x1F",
        "1e3",
        ".inf",
        "2024-01-01",
        " lead",
        "trail ",
        "tab\there",
        "line\nbreak",
        "a\n\nb",
        "crlf\r\n",
        "é ünï ☃ 日本 🦀",
        "back\\slash\\",
        "nul\0x",
        "bell\u{7}",
        "dq\"x",
        "\"",
        "@at",
        "%pc",
        "&anchor",
        "*alias",
        "!tag",
        "|block",
        ">fold",
        "[list]",
        "{map}",
        "a, b",
        "k: v: w",
        "colon:",
        "e\u{2028}x",
        "n\u{85}l",
        "bom\u{FEFF}",
        "nbsp\u{A0}",
        "<<",
        "=",
        "\u{1F}unit",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("long {}", "word ".repeat(60))])
    .collect();
    let mut expected = serde_json::Map::new();
    for name in &names {
        let id = store.get_or_create_experiment(name).unwrap();
        expected.insert(id, json!(name));
    }
    let read = python(
        Version::V3,
        r#"
import json, os, yaml
root = os.environ["ROOT"]
names = {}
for d in os.listdir(root):
    meta = os.path.join(root, d, "meta.yaml")
    if os.path.isfile(meta):
        with open(meta, encoding="utf-8") as f:
            names[d] = yaml.safe_load(f)["name"]
print(json.dumps(names))
"#,
        &[("ROOT", &store.root().display().to_string())],
    );
    expected.insert("0".to_owned(), json!("Default"));
    for (id, name) in &expected {
        assert_eq!(&read[id], name, "experiment {id}");
    }
    assert_eq!(read.as_object().unwrap().len(), expected.len());
}

struct Reply;

impl hyperkit_obs::ModelOutput for Reply {
    fn input_tokens(&self) -> Option<u64> {
        Some(3)
    }
}

#[hyperkit_obs::track_model(model, task = "file-store")]
fn reply(model: &str) -> Reply {
    Reply
}

#[test]
fn exporter_runs_wait_while_the_experiment_is_deleted_and_follow_it_restored_or_made_anew() {
    use hyperkit_obs::mlflow::{self, MlflowConfig, TrackingTarget};
    use std::time::Duration;

    let _serial = serial();
    let dir = TempDir::new("mlflow-file-exporter");
    let root = dir.path().join("mlruns");
    let uri = format!("file://{}", root.display());
    let name = "deleted under the exporter";
    let mut config = MlflowConfig::default();
    config.target = TrackingTarget::FileStore(root.clone());
    config.experiment_name = name.to_owned();
    let guard = mlflow::start(&config).expect("exporter starts");
    let lifecycle = |action, id: &str| experiment_lifecycle(Version::V3, &uri, &uri, action, id);

    for _ in 0..5 {
        let _ = reply("model-a");
    }
    assert!(
        mlflow::flush(Duration::from_secs(10)),
        "{:?}",
        mlflow::status()
    );
    let store = FileStore::open(&root).unwrap();
    let first = store
        .experiment_by_name(name)
        .unwrap()
        .unwrap()
        .experiment_id;

    // Deleted by MLflow's client: the runs of the calls made meanwhile wait.
    assert_eq!(lifecycle("delete", &first), "deleted");
    for _ in 0..5 {
        let _ = reply("model-b");
    }
    test_support::wait::wait_for(
        "the status to say the experiment is deleted",
        Duration::from_secs(10),
        || {
            mlflow::status()
                .and_then(|s| s.last_error)
                .is_some_and(|e| e.contains("is deleted; restore it"))
        },
    );
    let status = mlflow::status().unwrap();
    assert_eq!((status.queued, status.rejected), (5, 0), "{status:?}");

    // Restored: delivered to it.
    assert_eq!(lifecycle("restore", &first), "active");
    assert!(
        mlflow::flush(Duration::from_secs(30)),
        "{:?}",
        mlflow::status()
    );
    let runs = read_runs(Version::V3, &uri, name);
    assert_eq!(runs.len(), 10, "{runs:?}");
    let models: Vec<_> = runs.iter().map(|r| r["params"]["model"].clone()).collect();
    assert_eq!(models.iter().filter(|m| *m == "model-b").count(), 5);
    assert!(runs.iter().all(|r| r["status"] == "FINISHED"), "{runs:?}");

    // Purged by `mlflow gc`: the next runs make the experiment anew.
    assert_eq!(lifecycle("purge", &first), Value::Null);
    for _ in 0..3 {
        let _ = reply("model-c");
    }
    assert!(
        mlflow::flush(Duration::from_secs(30)),
        "{:?}",
        mlflow::status()
    );
    let status = mlflow::status().unwrap();
    guard.shutdown(Duration::from_secs(5));
    let runs = read_runs(Version::V3, &uri, name);
    assert_eq!(runs.len(), 3, "only the calls after the purge: {runs:?}");
    assert!(runs.iter().all(|r| r["params"]["model"] == "model-c"));
    assert_eq!((status.delivered, status.rejected), (13, 0), "{status:?}");
}
