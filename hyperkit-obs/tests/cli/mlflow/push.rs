//! `mlflow push`: a file store replayed into MLflow 3, once; and how it
//! fails.

use std::collections::{BTreeMap, HashMap};

use hyperkit_obs::mlflow::{
    FileStore, KeyValue, Metric, MlflowClient, RunRecord, RunStatus, SOURCE_RUN_TAG,
};
use serde_json::{Value, json};

use super::{FAST_FAIL, block_on};
use crate::support::{assert_usage_error, cli};
use test_support::mlflow::{Backend, MlflowServer, Version, python, read_runs, serial};
use test_support::{TempDir, free_port};

const T0: i64 = 1_760_000_000_000;

/// Local experiments: two with runs (awkward names), one without.
const PUSHED: [&str; 2] = ["offline: codegen", "offline — évals #2"];
const EMPTY: &str = "offline: nothing yet";
const RUNS: usize = 40;

/// Run `i` of the local store: every third has a 5-value `loss` history,
/// run 3, 13, … failed, run 5 was killed, run 7 is still running.
fn record(i: usize) -> RunRecord {
    let i64_i = i64::try_from(i).unwrap();
    let start = T0 + i64_i * 1_000;
    let mut metrics = vec![Metric::new("accepted", (i % 2) as f64, start + 400)];
    if i.is_multiple_of(3) {
        for step in 0..5 {
            metrics.push(Metric {
                key: "loss".to_owned(),
                value: 1.0 / (step as f64 + 1.0) + i as f64,
                timestamp: start + 10 * step,
                step,
            });
        }
    } else {
        metrics.push(Metric::new("loss", 0.5, start + 10));
    }
    metrics.push(Metric::new("eval/score", i as f64 * 0.25, start + 20));
    // Values JSON has no number for (MLflow's JSON spells them "NaN", …).
    match i {
        4 => metrics.push(Metric::new("perplexity", f64::NAN, start + 30)),
        8 => metrics.push(Metric::new("perplexity", f64::INFINITY, start + 30)),
        9 => metrics.push(Metric::new("perplexity", f64::NEG_INFINITY, start + 30)),
        _ => {}
    }
    let status = match i {
        5 => RunStatus::Killed,
        _ if i % 10 == 3 => RunStatus::Failed,
        _ => RunStatus::Finished,
    };
    RunRecord {
        run_name: match i % 4 {
            0 => format!("it's run {i}"),
            1 => format!("ünï: run #{i}"),
            _ => format!("run-{i}"),
        },
        start_time: start,
        end_time: (i != 7).then_some(start + 500 + i64_i),
        status,
        params: vec![
            KeyValue::new("model", if i.is_multiple_of(2) { "m-a" } else { "m-b" }),
            KeyValue::new("task", "codegen"),
            KeyValue::new("opt/lr", format!("0.00{}", i % 10)),
        ],
        metrics,
        tags: vec![
            KeyValue::new("team", "ml platform"),
            KeyValue::new(
                "gen_ai.request.model",
                if i.is_multiple_of(2) { "m-a" } else { "m-b" },
            ),
        ],
    }
}

/// Writes the local store; returns each experiment's local run ids.
fn write_local_store(store: &FileStore) -> BTreeMap<&'static str, Vec<String>> {
    let ids: Vec<String> = PUSHED
        .iter()
        .map(|name| store.get_or_create_experiment(name).unwrap())
        .collect();
    store.get_or_create_experiment(EMPTY).unwrap();
    let mut runs: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for i in 0..RUNS {
        let e = i % 2;
        let run_id = store.log_run(&ids[e], &record(i)).unwrap();
        runs.entry(PUSHED[e]).or_default().push(run_id);
    }
    runs
}

/// `mlflow.MlflowClient().get_metric_history` of every `[run_id, key]` in
/// `PAIRS`: `[[step, timestamp, value], …]` sorted, per pair.
const HISTORIES_PY: &str = r#"
import json, math, os
from mlflow import MlflowClient

def number(v):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v

client = MlflowClient(tracking_uri=os.environ["TRACKING_URI"])
out = []
for run_id, key in json.loads(os.environ["PAIRS"]):
    history = client.get_metric_history(run_id, key)
    history = sorted(history, key=lambda m: (m.step, m.timestamp))
    out.append([[m.step, m.timestamp, number(m.value)] for m in history])
print(json.dumps(out))
"#;

/// A metric value as a server with a SQL backend keeps it (±infinity
/// becomes ±`f64::MAX`, as MLflow's `SqlAlchemyStore` stores it), printed
/// as `READ_RUNS_PY` and `HISTORIES_PY` print it.
fn on_server(v: f64) -> Value {
    if v.is_nan() {
        json!("nan")
    } else if v.is_infinite() {
        json!(f64::MAX.copysign(v))
    } else {
        json!(v)
    }
}

/// `[[step, timestamp, value], …]` by step, then timestamp, as on a server.
fn history_json(history: &[Metric]) -> Value {
    let mut rows: Vec<&Metric> = history.iter().collect();
    rows.sort_by_key(|m| (m.step, m.timestamp));
    json!(
        rows.iter()
            .map(|m| json!([m.step, m.timestamp, on_server(m.value)]))
            .collect::<Vec<_>>()
    )
}

/// `mlflow push` copies every run of every experiment with runs (name,
/// times, status, params, tags plus the source tag, latest metrics and the
/// whole history of every metric), finishes a run an interrupted push left
/// half done instead of duplicating it, and pushes nothing the second time.
#[test]
fn push_replays_a_file_store_into_mlflow_3_once() {
    let _turn = serial();
    let dir = TempDir::new("cli-push");
    let root = dir.path().join("mlruns");
    let store = FileStore::open(&root).unwrap();
    let local_ids = write_local_store(&store);
    let server = MlflowServer::start(Version::V3, Backend::Sqlite);
    let url = server.url();
    let root_arg = root.display().to_string();

    // An earlier push that stopped right after `runs/create` of one run:
    // the run has its name, start time and tags (the source tag among them),
    // but no params, metrics, status or end time.
    let half_done_source = &local_ids[PUSHED[0]][3];
    let local = store.run(half_done_source).unwrap().unwrap();
    let mut tags: Vec<KeyValue> = local
        .data
        .tags
        .iter()
        .filter(|t| t.key != "mlflow.runName")
        .cloned()
        .collect();
    tags.push(KeyValue::new(SOURCE_RUN_TAG, half_done_source.clone()));
    let half_done = block_on(async {
        let client = MlflowClient::from_url(&url).unwrap();
        let exp = client.get_or_create_experiment(PUSHED[0]).await.unwrap();
        client
            .create_run(
                &exp,
                local.data.tag("mlflow.runName").unwrap(),
                local.info.start_time,
                &tags,
            )
            .await
            .unwrap()
            .run_id
    });

    let out = cli(
        dir.path(),
        &["mlflow", "push", &root_arg, "--to", &url],
        &FAST_FAIL,
    );
    assert_eq!(out.code, 0, "{out:?}");
    for name in PUSHED {
        let line = format!(
            "experiment {name:?}: pushed {} runs, 0 already there",
            RUNS / 2
        );
        assert!(out.stdout.contains(&line), "no `{line}` in {out:?}");
    }
    assert!(!out.stdout.contains(EMPTY), "{out:?}");

    let mut pairs = Vec::new();
    let mut want_histories = Vec::new();
    for name in PUSHED {
        let got = read_runs(Version::V3, &url, name);
        assert_eq!(got.len(), RUNS / 2, "{name}: {got:#?}");
        let by_source: HashMap<&str, &Value> = got
            .iter()
            .map(|r| (r["tags"][SOURCE_RUN_TAG].as_str().expect("source tag"), r))
            .collect();
        assert_eq!(by_source.len(), RUNS / 2, "one server run per local run");
        for local in store
            .runs(
                &store
                    .experiment_by_name(name)
                    .unwrap()
                    .unwrap()
                    .experiment_id,
            )
            .unwrap()
        {
            let id = local.info.run_id.as_str();
            let remote = by_source
                .get(id)
                .unwrap_or_else(|| panic!("local run {id} is not on the server"));
            let what = format!("{name}/{id}");
            let name_tag = local.data.tag("mlflow.runName").unwrap();
            assert_eq!(remote["run_name"], json!(name_tag), "{what}");
            assert_eq!(
                remote["status"],
                json!(local.info.status.as_str()),
                "{what}"
            );
            assert_eq!(remote["start_time"], json!(local.info.start_time), "{what}");
            assert_eq!(remote["end_time"], json!(local.info.end_time), "{what}");
            let params: BTreeMap<_, _> = local
                .data
                .params
                .iter()
                .map(|p| (p.key.clone(), json!(p.value)))
                .collect();
            assert_eq!(remote["params"], json!(params), "{what}");
            let metrics: BTreeMap<_, _> = local
                .data
                .metrics
                .iter()
                .map(|m| (m.key.clone(), on_server(m.value)))
                .collect();
            assert_eq!(remote["metrics"], json!(metrics), "{what}");
            let mut tags: BTreeMap<_, _> = local
                .data
                .tags
                .iter()
                .map(|t| (t.key.clone(), json!(t.value)))
                .collect();
            tags.insert(SOURCE_RUN_TAG.to_owned(), json!(id));
            // Exactly: MLflow 3 adds no tag of its own to a created run.
            assert_eq!(remote["tags"], json!(tags), "{what}");
            if id == half_done_source {
                assert_eq!(
                    remote["run_id"],
                    json!(half_done),
                    "resumed, not duplicated"
                );
            }
            for m in &local.data.metrics {
                let history = store.metric_history(id, &m.key).unwrap();
                pairs.push(json!([remote["run_id"], m.key]));
                want_histories.push(history_json(&history));
            }
        }
    }
    // The whole history of every metric, as MLflow's client reads it.
    let got_histories = python(
        Version::V3,
        HISTORIES_PY,
        &[("TRACKING_URI", &url), ("PAIRS", &json!(pairs).to_string())],
    );
    assert_eq!(got_histories, json!(want_histories));
    assert!(
        want_histories
            .iter()
            .any(|h| h.as_array().unwrap().len() == 5),
        "some metric has several values"
    );

    // `push` of one experiment.
    let push_one = |name: &str| {
        cli(
            dir.path(),
            &[
                "mlflow",
                "push",
                &root_arg,
                "--to",
                &url,
                "--experiment",
                name,
            ],
            &FAST_FAIL,
        )
    };

    // Again: nothing to push, nothing added.
    let again = push_one(PUSHED[1]);
    assert_eq!(again.code, 0, "{again:?}");
    let line = format!(
        "experiment {:?}: pushed 0 runs, {} already there",
        PUSHED[1],
        RUNS / 2
    );
    assert_eq!(again.stdout.trim(), line, "{again:?}");
    let again = cli(
        dir.path(),
        &["mlflow", "push", &root_arg, "--to", &url],
        &FAST_FAIL,
    );
    assert_eq!(again.code, 0, "{again:?}");
    for name in PUSHED {
        let line = format!(
            "experiment {name:?}: pushed 0 runs, {} already there",
            RUNS / 2
        );
        assert!(again.stdout.contains(&line), "no `{line}` in {again:?}");
        assert_eq!(read_runs(Version::V3, &url, name).len(), RUNS / 2, "{name}");
    }

    // A pushed run deleted on the server, with MLflow's own client: not
    // pushed again, and said so.
    let victim = read_runs(Version::V3, &url, PUSHED[0])[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    python(
        Version::V3,
        "import os\nfrom mlflow import MlflowClient\n\
         MlflowClient(os.environ['TRACKING_URI']).delete_run(os.environ['RUN_ID'])\n\
         print('null')",
        &[("TRACKING_URI", &url), ("RUN_ID", &victim)],
    );
    let again = push_one(PUSHED[0]);
    assert_eq!(again.code, 0, "{again:?}");
    let line = format!(
        "experiment {:?}: pushed 0 runs, {} already there, 1 deleted on the server (not pushed again)",
        PUSHED[0],
        RUNS / 2 - 1
    );
    assert_eq!(again.stdout.trim(), line, "{again:?}");
    let left = read_runs(Version::V3, &url, PUSHED[0]);
    assert_eq!(left.len(), RUNS / 2 - 1, "not brought back");
    assert!(left.iter().all(|r| r["run_id"] != victim.as_str()));

    let empty_on_server = block_on(async {
        MlflowClient::from_url(&url)
            .unwrap()
            .get_experiment_by_name(EMPTY)
            .await
            .unwrap()
    });
    assert_eq!(
        empty_on_server, None,
        "an experiment without runs is not created"
    );

    // An experiment the store does not have.
    let out = push_one("nope");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("no experiment named \"nope\""),
        "{out:?}"
    );
}

/// Failures exit 1 (no store, no server) or 2 (bad command line) with a
/// message, and create nothing.
#[test]
fn push_failures_say_what_is_wrong() {
    let dir = TempDir::new("cli-push-fail");
    let nowhere = dir.path().join("no-such-store");
    let nowhere_arg = nowhere.display().to_string();
    let out = cli(
        dir.path(),
        &["mlflow", "push", &nowhere_arg, "--to", "http://127.0.0.1:9"],
        &FAST_FAIL,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("no MLflow file store at {nowhere_arg}")),
        "{out:?}"
    );
    assert!(!nowhere.exists(), "the missing store was created");
    // The default DIR is ./mlruns, which is missing here too.
    let out = cli(
        dir.path(),
        &["mlflow", "push", "--to", "http://127.0.0.1:9"],
        &FAST_FAIL,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("no MLflow file store at mlruns"),
        "{out:?}"
    );

    // A store with a run, and nothing listening at --to.
    let root = dir.path().join("mlruns");
    let store = FileStore::open(&root).unwrap();
    let exp = store.get_or_create_experiment("e").unwrap();
    store.log_run(&exp, &record(1)).unwrap();
    let unused = free_port();
    let to = format!("http://127.0.0.1:{unused}");
    let out = cli(
        dir.path(),
        &["mlflow", "push", "--to", &to],
        &[("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("experiment \"e\": pushing to")
            && out.stderr.contains("could not be reached")
            && out.stderr.contains("run the same command again"),
        "{out:?}"
    );

    for (args, message) in [
        (&["mlflow", "push", "mlruns"][..], "`--to` is required"),
        (
            &["mlflow", "push", "--to", "./elsewhere"],
            "--to must be a tracking server's http(s):// URL",
        ),
        (
            &["mlflow", "push", "a", "b", "--to", "http://x"],
            "unexpected argument `b`",
        ),
        (&["mlflow", "push", "--to"], "`--to` needs a value"),
        (
            &["mlflow", "push", "--from", "x"],
            "unknown option `--from`",
        ),
    ] {
        // One line, exit 2, no usage text (issue 18).
        let out = cli(dir.path(), args, &[]);
        assert_usage_error(&out, message);
    }
    // An unknown or missing command is followed by the usage text.
    for (args, message) in [
        (&["mlflow", "pull"][..], "unknown mlflow command `pull`"),
        (&["mlflow"], "`mlflow` needs a command"),
    ] {
        let out = cli(dir.path(), args, &[]);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(message), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("usage: hyperkit-obs"),
            "{args:?}: {out:?}"
        );
    }
    let out = cli(
        dir.path(),
        &["mlflow", "push", "--to", "sqlite:///x.db"],
        &[],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("MLFLOW_TRACKING_URI"), "{out:?}");
}
