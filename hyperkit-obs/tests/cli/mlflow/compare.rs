//! `mlflow compare`: the figures of every row and verdict equal the same
//! computation done by MLflow 3's own Python client from its
//! `search_runs` pages (NumPy's percentiles and means, below), over a store
//! of 2,520 runs of three models (three pages of `runs/search`), read from
//! the file store and from a real MLflow 3 server over it; hostile values
//! (NaN, infinities, negatives, 1e300, runs that are not model calls) are
//! left out and counted the same way by both; and the rows of runs that
//! real `#[track_model]` calls logged through the exporter. A server
//! answering 500 or garbage, and a damaged store, give one line and exit 1.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use hyperkit_obs::mlflow::{
    FileStore, KeyValue, Metric, MlflowConfig, ModelRun, RunRecord, TrackingTarget,
};
use hyperkit_obs::model::{
    CallId, ModelPrice, PriceTable, current_call_id, install_prices, record_acceptance,
    record_score,
};
use hyperkit_obs::{ModelOutput, Status, track_model};
use serde_json::Value;

use super::FAST_FAIL;
use crate::support::cli;
use test_support::TempDir;
use test_support::fixture::{HttpFixture, Response};
use test_support::mlflow::{Backend, MlflowServer, Version, python, serial};

/// Reads every run of `EXPERIMENT_NAME` at `TRACKING_URI` with
/// `MlflowClient.search_runs`, page after page, and prints the comparison
/// the README specifies, computed here with NumPy, for each `[task,
/// since_ms]` of `FILTERS` (either may be null): one JSON list.
const COMPARE_PY: &str = r#"
import json, math, os
import numpy as np
from mlflow import MlflowClient

client = MlflowClient(tracking_uri=os.environ["TRACKING_URI"])
experiment = client.get_experiment_by_name(os.environ["EXPERIMENT_NAME"])
runs, token, pages = [], None, 0
while True:
    page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
    pages += 1
    runs.extend(page)
    token = page.token
    if not token:
        break

def comparison(task, since):
    CALL = {"latency_seconds", "input_tokens", "output_tokens", "accepted", "cost_usd",
            "time_to_first_token_seconds", "output_tokens_per_second"}
    LISTS = {"latency_seconds": "lat", "time_to_first_token_seconds": "ttft",
             "input_tokens": "in", "output_tokens": "out", "cost_usd": "cost"}
    out = {"runs": 0, "skipped_runs": 0, "ignored_values": 0, "pages": pages}
    groups = {}
    for run in runs:
        params, tags = run.data.params, run.data.tags
        if task is not None and params.get("task") != task:
            continue
        if since is not None and run.info.start_time < since:
            continue
        out["runs"] += 1
        if "model" not in params or "task" not in params:
            out["skipped_runs"] += 1
            continue
        g = groups.setdefault((params["model"], params["task"]), {
            "providers": set(), "calls": 0, "failures": 0, "accepted": 0, "rejected": 0,
            "lat": [], "ttft": [], "in": [], "out": [], "cost": [], "scores": {}})
        g["calls"] += 1
        if "provider" in tags:
            g["providers"].add(tags["provider"])
        if "status" in tags:
            g["failures"] += tags["status"] in ("failure", "panic")
        else:
            g["failures"] += run.info.status == "FAILED"
        for key, v in run.data.metrics.items():
            finite = math.isfinite(v)
            if key == "accepted" and finite:
                g["accepted" if v >= 0.5 else "rejected"] += 1
            elif key in LISTS and finite and v >= 0:
                g[LISTS[key]].append(v)
            elif key == "output_tokens_per_second":
                pass
            elif key not in CALL and finite:
                g["scores"].setdefault(key, []).append(v)
            else:
                out["ignored_values"] += 1

    def pct(values, q):
        return float(np.percentile(values, q)) if values else None

    def mean(values):
        return float(np.mean(values)) if values else None

    rows = []
    for (model, task_), g in groups.items():
        decided = g["accepted"] + g["rejected"]
        cost = float(sum(g["cost"])) if g["cost"] else None
        cpa = cost / g["accepted"] if cost is not None and g["accepted"] else None
        few = []
        if g["calls"] < 30: few.append("failure_rate")
        if 0 < decided < 30: few.append("acceptance_rate")
        if cpa is not None and g["accepted"] < 30: few.append("cost_per_accepted_usd")
        rows.append({
            "model": model, "task": task_, "providers": sorted(g["providers"]),
            "calls": g["calls"], "failures": g["failures"], "failure_rate": g["failures"] / g["calls"],
            "accepted": g["accepted"], "rejected": g["rejected"],
            "acceptance_rate": g["accepted"] / decided if decided else None,
            "latency_p50_seconds": pct(g["lat"], 50), "latency_p95_seconds": pct(g["lat"], 95),
            "ttft_p50_seconds": pct(g["ttft"], 50),
            "mean_input_tokens": mean(g["in"]), "mean_output_tokens": mean(g["out"]),
            "cost_usd": cost, "cost_per_accepted_usd": cpa,
            "scores": {k: mean(v) for k, v in g["scores"].items()}, "few_runs": few,
        })
    rows.sort(key=lambda r: (r["task"], r["cost_per_accepted_usd"] is None,
                             r["cost_per_accepted_usd"] or 0.0, r["model"]))
    verdicts = []
    for t in sorted({r["task"] for r in rows}):
        priced = [r for r in rows if r["task"] == t and r["cost_per_accepted_usd"] is not None]
        v = {"task": t, "best": None, "against": None, "cost_ratio": None, "acceptance_difference_pp": None}
        if priced:
            best = priced[0]
            v["best"] = best["model"]
            against = None
            for r in priced[1:]:
                if against is None or (r["acceptance_rate"] or 0) > (against["acceptance_rate"] or 0):
                    against = r
            if against is not None:
                v["against"] = against["model"]
                v["cost_ratio"] = against["cost_per_accepted_usd"] / best["cost_per_accepted_usd"]
                v["acceptance_difference_pp"] = (best["acceptance_rate"] - against["acceptance_rate"]) * 100
        verdicts.append(v)
    out["rows"] = rows
    out["verdicts"] = verdicts
    return out

print(json.dumps([comparison(task, since) for task, since in json.loads(os.environ["FILTERS"])]))
"#;

const EXPERIMENT: &str = "model comparison";
const DAY_MS: i64 = 86_400_000;
/// The models: (name, provider, base latency s, acceptance, price per
/// million input and output tokens).
const MODELS: [(&str, &str, f64, f64, f64, f64); 3] = [
    ("small-1", "acme", 0.4, 0.78, 0.15, 0.6),
    ("medium-1", "acme", 0.9, 0.85, 1.0, 4.0),
    ("large-2", "bigco", 2.0, 0.92, 2.5, 10.0),
];
/// Runs of the three models: 840 each, three pages of `runs/search`.
const RUNS: usize = 2_520;

/// A number in [0, 1) drawn from `(i, k)` (splitmix64).
fn draw(i: usize, k: u64) -> f64 {
    let mut z =
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Run `i` of the workload, as `#[track_model]` would log it, with the
/// metrics of a streamed call and scores where the workload has them. One
/// run in ten is 10 to 11 days old, the others at most 3 days.
fn workload_run(i: usize, now: i64) -> RunRecord {
    let (model, provider, base, acceptance, price_in, price_out) = MODELS[i % 3];
    let task = if (i / 3).is_multiple_of(4) {
        "review"
    } else {
        "codegen"
    };
    let age = if i % 10 == 7 {
        10 * DAY_MS + (draw(i, 1) * DAY_MS as f64) as i64
    } else {
        (draw(i, 1) * 3.0 * DAY_MS as f64) as i64
    };
    let failed = draw(i, 2) < 0.04;
    let input = 500 + (draw(i, 3) * 1000.0) as u64;
    let output = (!failed).then(|| 50 + (draw(i, 4) * 400.0) as u64);
    let accepted = (!failed && draw(i, 5) >= 0.15).then(|| draw(i, 6) < acceptance);
    let cost = (input as f64 * price_in + output.unwrap_or(0) as f64 * price_out) / 1e6;
    let mut run = ModelRun {
        model,
        task,
        provider: Some(provider),
        status: if failed {
            Status::Failure
        } else {
            Status::Success
        },
        end_ms: now - age,
        latency: Duration::from_secs_f64(base * (0.5 + draw(i, 7))),
        input_tokens: Some(input),
        output_tokens: output,
        accepted,
        cost_usd: Some(cost),
        error_type: failed.then_some("provider::Overloaded"),
        call_id: Some(format!("compare-{i}")),
        trace_id: None,
        // Logged below as a metric, at the run's end, as a streamed call's.
        time_to_first_token: None,
    }
    .record();
    let t = now - age;
    if task == "codegen" && model != "large-2" {
        run.metrics.push(Metric::new(
            "time_to_first_token_seconds",
            0.05 + draw(i, 8) * 0.4,
            t,
        ));
    }
    if draw(i, 9) < 0.5 {
        run.metrics.push(Metric::new("judge", draw(i, 10), t));
    }
    if task == "review" {
        run.metrics.push(Metric::new("relevance", draw(i, 11), t));
    }
    run
}

/// Runs no model comparison should trust: a model with 12 runs (its ratios
/// are marked), runs that are not model calls, and metric values that are
/// not numbers, negative, or absurd.
fn odd_runs(now: i64) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for i in 0..12 {
        let run = ModelRun {
            model: "tiny-0",
            task: "review",
            provider: Some("local"),
            status: Status::Success,
            end_ms: now - 1000 * i as i64,
            latency: Duration::from_millis(100 + 10 * i as u64),
            input_tokens: Some(100),
            output_tokens: Some(10),
            accepted: Some(i % 4 != 0),
            cost_usd: Some(0.0001),
            error_type: None,
            call_id: None,
            trace_id: None,
            time_to_first_token: None,
        }
        .record();
        runs.push(run);
    }
    for i in 0..3 {
        runs.push(RunRecord {
            run_name: format!("not a model call {i}"),
            start_time: now - 5000,
            end_time: Some(now - 4000),
            status: hyperkit_obs::mlflow::RunStatus::Finished,
            params: vec![KeyValue::new("learning_rate", "0.1")],
            metrics: vec![Metric::new("loss", 0.25, now)],
            tags: Vec::new(),
        });
    }
    let hostile: [&[(&str, f64)]; 4] = [
        &[("latency_seconds", f64::NAN), ("judge", f64::NAN)],
        &[("cost_usd", f64::INFINITY), ("accepted", f64::NAN)],
        &[("cost_usd", -0.5), ("input_tokens", -3.0)],
        &[("latency_seconds", 1e300), ("output_tokens", 1e300)],
    ];
    for (i, metrics) in hostile.into_iter().enumerate() {
        let mut run = workload_run(i * 3, now);
        run.start_time = now - 2000;
        // A run of its own, not a copy of the workload's call.
        run.tags
            .retain(|t| t.key != hyperkit_obs::mlflow::CALL_ID_TAG);
        for (key, v) in metrics {
            run.metrics.retain(|m| m.key != *key);
            run.metrics.push(Metric::new(*key, *v, now));
        }
        runs.push(run);
    }
    runs
}

/// Writes the workload and the odd runs into a file store at `root`.
fn write_store(root: &std::path::Path, now: i64) {
    let store = FileStore::open(root).unwrap();
    let experiment = store.get_or_create_experiment(EXPERIMENT).unwrap();
    for i in 0..RUNS {
        store.log_run(&experiment, &workload_run(i, now)).unwrap();
    }
    for run in odd_runs(now) {
        store.log_run(&experiment, &run).unwrap();
    }
}

/// What MLflow's Python client makes of the runs at `uri`, for each
/// `(task, since_ms)` filter.
fn expected(uri: &str, filters: &[(Option<&str>, Option<i64>)]) -> Vec<Value> {
    let filters = serde_json::to_string(filters).unwrap();
    let answer = python(
        Version::V3,
        COMPARE_PY,
        &[
            ("TRACKING_URI", uri),
            ("EXPERIMENT_NAME", EXPERIMENT),
            ("FILTERS", &filters),
        ],
    );
    answer
        .as_array()
        .expect("one comparison per filter")
        .clone()
}

/// Whether two figures agree: both absent, or equal within 1e-9 relative
/// (sums are added in another order).
fn same(got: &Value, want: &Value) -> bool {
    match (got.as_f64(), want.as_f64()) {
        (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1e-12),
        _ => got == want,
    }
}

/// Asserts that `compare --json`'s comparison equals Python's, figure by
/// figure.
#[track_caller]
fn assert_same(got: &Value, want: &Value, what: &str) {
    let c = &got["comparison"];
    for key in ["runs", "skipped_runs", "ignored_values"] {
        assert_eq!(c[key], want[key], "{what}: {key}");
    }
    let (rows, want_rows) = (
        c["rows"].as_array().unwrap(),
        want["rows"].as_array().unwrap(),
    );
    let names = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["task"].as_str().unwrap(),
                    r["model"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(rows),
        names(want_rows),
        "{what}: the rows and their order"
    );
    for (r, w) in rows.iter().zip(want_rows) {
        let row = format!("{what}: {}/{}", w["task"], w["model"]);
        for (key, want) in w.as_object().unwrap() {
            if key == "scores" {
                let (g, w) = (r[key].as_object().unwrap(), want.as_object().unwrap());
                assert_eq!(
                    g.keys().collect::<Vec<_>>(),
                    w.keys().collect::<Vec<_>>(),
                    "{row}: scores"
                );
                for (name, want) in w {
                    assert!(
                        same(&g[name], want),
                        "{row}: score {name}: {} != {want}",
                        g[name]
                    );
                }
            } else {
                assert!(same(&r[key], want), "{row}: {key}: {} != {want}", r[key]);
            }
        }
    }
    let verdicts = c["verdicts"].as_array().unwrap();
    assert_eq!(
        verdicts.len(),
        want["verdicts"].as_array().unwrap().len(),
        "{what}"
    );
    for (v, w) in verdicts.iter().zip(want["verdicts"].as_array().unwrap()) {
        for key in [
            "task",
            "best",
            "against",
            "cost_ratio",
            "acceptance_difference_pp",
        ] {
            assert!(
                same(&v[key], &w[key]),
                "{what}: verdict {key}: {} != {}",
                v[key],
                w[key]
            );
        }
        if let (Some(best), Some(against), Some(ratio)) = (
            w["best"].as_str(),
            w["against"].as_str(),
            w["cost_ratio"].as_f64(),
        ) {
            let text = v["text"].as_str().unwrap();
            assert!(
                text.starts_with(&format!(
                    "for {}, {best} costs $",
                    w["task"].as_str().unwrap()
                )) && text.contains(&format!("{ratio:.1}× less than {against} at ")),
                "{what}: {text}"
            );
        }
    }
}

fn compare_json(cwd: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["mlflow", "compare", "--experiment", EXPERIMENT, "--json"];
    all.extend(args);
    let out = cli(cwd, &all, env);
    assert_eq!(out.code, 0, "{all:?}: {out:?}");
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// 2,539 runs in a file store, read by `compare` from the store itself and
/// from a real MLflow 3 server over it (three pages of `runs/search`):
/// every figure equals the one MLflow 3's Python client gives through the
/// server, with `--task` and `--since` too; the table marks the 12-run
/// model's ratios. (MLflow's Python client reads the same store through
/// the server: reading it directly again would double the test's time.)
#[test]
fn compare_agrees_with_mlflows_python_client_on_a_file_store_and_an_mlflow_3_server() {
    let _turn = serial();
    let dir = TempDir::new("cli-compare");
    let root = dir.path().join("mlruns");
    let now = now_ms();
    let started = Instant::now();
    write_store(&root, now);
    eprintln!("wrote {} runs in {:?}", RUNS + 19, started.elapsed());
    let store = root.to_str().unwrap();
    let cutoff = now - 7 * DAY_MS;
    // A timestamp, not `7d`: the command's now is later than this test's.
    let since = hyperkit_obs::logs::format_timestamp(cutoff);

    let server = MlflowServer::start(Version::V3, Backend::FileStore(root.clone()));
    let url = server.url();
    let started = Instant::now();
    let want = expected(
        &url,
        &[
            (None, None),
            (Some("codegen"), Some(cutoff)),
            (Some("review"), Some(cutoff)),
        ],
    );
    eprintln!(
        "MLflow's Python client read and compared in {:?}",
        started.elapsed()
    );
    let [all, codegen, review] = &want[..] else {
        panic!("three comparisons: {want:?}");
    };
    assert_eq!(all["pages"], 3, "several pages of runs/search");
    assert_eq!(all["runs"], RUNS + 19);
    assert_eq!(all["skipped_runs"], 3);
    assert_eq!(all["ignored_values"], 6);

    // The file store, read by the command itself.
    let started = Instant::now();
    let got = compare_json(dir.path(), &["--tracking-uri", store], &[]);
    eprintln!("compare read the file store in {:?}", started.elapsed());
    assert_same(&got, all, "file store");
    let file_uri = format!("file://{store}");
    let got = compare_json(
        dir.path(),
        &["--task", "codegen", "--since", &since],
        &[("MLFLOW_TRACKING_URI", &file_uri)],
    );
    assert_same(&got, codegen, "file store, codegen since 7 days");
    let relative = compare_json(
        dir.path(),
        &[
            "--task",
            "codegen",
            "--since",
            "7d",
            "--tracking-uri",
            store,
        ],
        &[],
    );
    assert_eq!(
        relative["comparison"]["runs"], codegen["runs"],
        "--since 7d"
    );

    let out = cli(
        dir.path(),
        &[
            "mlflow",
            "compare",
            "--experiment",
            EXPERIMENT,
            "--tracking-uri",
            store,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "{} runs of experiment \"{EXPERIMENT}\" at file store {store}: 7 rows; 3 runs skipped",
            RUNS + 19
        )),
        "{}",
        out.stdout
    );
    let tiny = lines
        .iter()
        .find(|l| l.starts_with("review ") && l.contains(" tiny-0 "))
        .unwrap();
    assert!(
        tiny.contains("75.0%*") && tiny.contains(" local "),
        "{tiny}"
    );
    for v in all["verdicts"].as_array().unwrap() {
        let head = format!(
            "for {}, {} costs $",
            v["task"].as_str().unwrap(),
            v["best"].as_str().unwrap()
        );
        assert!(
            lines.iter().any(|l| l.starts_with(&head)),
            "no `{head}`: {}",
            out.stdout
        );
    }
    assert_eq!(lines.last(), Some(&"* from fewer than 30 runs"));

    // The server, page after page.
    let mut env = vec![("MLFLOW_TRACKING_URI", url.as_str())];
    env.extend(FAST_FAIL);
    let started = Instant::now();
    assert_same(&compare_json(dir.path(), &[], &env), all, "MLflow 3 server");
    eprintln!("compare read the server in {:?}", started.elapsed());
    assert_same(
        &compare_json(dir.path(), &["--task", "review", "--since", &since], &env),
        review,
        "MLflow 3 server, review since 7 days",
    );
}

/// What the tracked function returns.
struct Reply {
    input: u64,
    output: u64,
    accepted: Option<bool>,
    call: CallId,
}

impl ModelOutput for Reply {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.input)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.output)
    }
    fn accepted(&self) -> Option<bool> {
        self.accepted
    }
}

/// Call `i` of `model`: one in ten fails; the others report their tokens,
/// and every third says at return whether it was accepted.
#[track_model(model, task = "codegen", provider = provider_of(model))]
fn tracked_reply(model: &str, i: u64) -> Result<Reply, String> {
    if i % 10 == 9 {
        return Err("overloaded".into());
    }
    let call = current_call_id().expect("a tracked call has an id");
    // Scored inside the call, before its run exists.
    record_score(call, "judge", (i % 5) as f64 / 4.0).unwrap();
    Ok(Reply {
        input: 100 + i,
        output: 10 + i,
        accepted: i.is_multiple_of(3).then_some(i.is_multiple_of(2)),
        call,
    })
}

fn provider_of(model: &str) -> &'static str {
    if model == "small-1" { "acme" } else { "bigco" }
}

/// `compare` on runs written by real `#[track_model]` calls, through the
/// runtime's MLflow exporter into a file store (with acceptances and scores
/// recorded after the calls returned, a price table and a provider): the
/// rows say what the calls were.
#[test]
fn compare_shows_the_rows_of_tracked_model_calls_logged_by_the_exporter() {
    let _turn = serial();
    let dir = TempDir::new("cli-compare-tracked");
    let root = dir.path().join("mlruns");
    // Per million tokens: small-1 $1 in, $2 out; large-2 $10 in, $30 out.
    let prices = PriceTable::new()
        .with("small-1", ModelPrice::usd_per_million(1.0, 2.0).unwrap())
        .with("large-2", ModelPrice::usd_per_million(10.0, 30.0).unwrap());
    install_prices(Some(&prices));
    let mut config = MlflowConfig::default();
    config.target = TrackingTarget::FileStore(root.clone());
    config.experiment_name = "tracked calls".into();
    let guard = hyperkit_obs::mlflow::start(&config).unwrap();
    let mut expected = BTreeMap::new();
    for (model, per_in, per_out, accept_every) in
        [("small-1", 1.0, 2.0, 2), ("large-2", 10.0, 30.0, 1)]
    {
        let (mut accepted, mut rejected, mut failures, mut cost) = (0u64, 0u64, 0u64, 0.0);
        let mut judge = Vec::new();
        for i in 0..40u64 {
            match tracked_reply(model, i) {
                Err(_) => failures += 1,
                Ok(reply) => {
                    judge.push((i % 5) as f64 / 4.0);
                    cost += ((100 + i) as f64 * per_in + (10 + i) as f64 * per_out) / 1e6;
                    let decision = reply.accepted.unwrap_or_else(|| {
                        // Decided later, after the call returned.
                        let ok = i % accept_every == 0;
                        record_acceptance(reply.call, ok);
                        ok
                    });
                    if decision {
                        accepted += 1;
                    } else {
                        rejected += 1;
                    }
                }
            }
        }
        let judge_mean = judge.iter().sum::<f64>() / judge.len() as f64;
        expected.insert(model, (accepted, rejected, failures, cost, judge_mean));
    }
    guard.shutdown(Duration::from_secs(20));
    install_prices(None);

    let out = cli(
        dir.path(),
        &[
            "mlflow",
            "compare",
            "--experiment",
            "tracked calls",
            "--tracking-uri",
            root.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let got: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let c = &got["comparison"];
    assert_eq!(c["runs"], 80);
    assert_eq!(
        (c["skipped_runs"].as_u64(), c["ignored_values"].as_u64()),
        (Some(0), Some(0))
    );
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in rows {
        let model = row["model"].as_str().unwrap();
        let (accepted, rejected, failures, cost, judge) = expected[model];
        assert_eq!(row["task"], "codegen");
        assert_eq!(
            row["providers"],
            serde_json::json!([provider_of(model)]),
            "tag provider"
        );
        assert_eq!(row["calls"], 40, "{model}");
        assert_eq!(row["failures"], failures, "{model}");
        assert_eq!(row["accepted"], accepted, "{model}");
        assert_eq!(row["rejected"], rejected, "{model}");
        let got_cost = row["cost_usd"].as_f64().unwrap();
        assert!(
            (got_cost - cost).abs() < 1e-9,
            "{model}: {got_cost} != {cost}"
        );
        let per = row["cost_per_accepted_usd"].as_f64().unwrap();
        assert!((per - cost / accepted as f64).abs() < 1e-9, "{model}");
        assert!(
            (row["scores"]["judge"].as_f64().unwrap() - judge).abs() < 1e-12,
            "{model}"
        );
        assert!(row["latency_p50_seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(row["ttft_p50_seconds"], Value::Null, "no streamed calls");
        // The 36 calls that returned: i in 0..40 but 9, 19, 29, 39.
        assert_eq!(row["mean_input_tokens"], 119.0, "{model}");
        assert_eq!(row["mean_output_tokens"], 29.0, "{model}");
    }
    assert_eq!(
        rows[0]["model"], "small-1",
        "the cheaper accepted output first"
    );
    assert_eq!(c["verdicts"][0]["best"], "small-1");
    assert_eq!(c["verdicts"][0]["against"], "large-2");
}

/// A tracking server that knows experiment `odd` (id 7) and answers
/// `runs/search` with `page`.
fn odd_server(page: impl Fn() -> Response + Send + Sync + 'static) -> HttpFixture {
    HttpFixture::start(move |request| {
        if request.path.ends_with("experiments/get-by-name") {
            Response::json(
                200,
                &serde_json::json!({"experiment": {
                    "experiment_id": "7", "name": "odd", "lifecycle_stage": "active"}}),
            )
            .into()
        } else {
            page().into()
        }
    })
}

/// Hostile answers and stores: a server answering 500 or garbage, a run
/// whose metric is not a number, and a damaged file store each give one
/// line and exit 1, never a panic; NaN, infinities and 1e308 in a page the
/// server sends are left out and counted.
#[test]
fn compare_answers_hostile_servers_and_stores_with_one_line_never_a_panic() {
    let dir = TempDir::new("cli-compare-hostile");
    let run = |metrics: Value| {
        serde_json::json!({
            "info": {"run_id": "a", "experiment_id": "7", "status": "FINISHED",
                     "start_time": 1, "lifecycle_stage": "active"},
            "data": {"metrics": metrics,
                     "params": [{"key": "model", "value": "m"}, {"key": "task", "value": "t"}]}
        })
    };
    let compare = |url: &str, json: bool| {
        let mut env = vec![("MLFLOW_TRACKING_URI", url)];
        env.extend(FAST_FAIL);
        let mut args = vec!["mlflow", "compare", "--experiment", "odd"];
        if json {
            args.push("--json");
        }
        cli(dir.path(), &args, &env)
    };
    type Page = Box<dyn Fn() -> Response + Send + Sync>;
    let cases: Vec<(&str, Page)> = vec![
        (
            "HTTP 500",
            Box::new(|| {
                Response::json(
                    500,
                    &serde_json::json!({"error_code": "INTERNAL_ERROR", "message": "boom"}),
                )
            }),
        ),
        (
            "garbage",
            Box::new(|| Response::new(200, "application/json", "<html>proxy</html>")),
        ),
        (
            "a metric that is not a number",
            Box::new(move || {
                Response::json(
                    200,
                    &serde_json::json!({"runs": [run(serde_json::json!(
                    [{"key": "latency_seconds", "value": "banana", "timestamp": 1}]))]}),
                )
            }),
        ),
    ];
    for (what, page) in cases {
        let server = odd_server(page);
        let out = compare(&server.url(), false);
        assert_eq!(out.code, 1, "{what}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{what}: {out:?}");
        assert!(
            out.stderr
                .starts_with("hyperkit-obs: cannot read the runs of experiment \"odd\""),
            "{what}: {out:?}"
        );
    }

    let server = odd_server(move || {
        Response::json(
            200,
            &serde_json::json!({"runs": [
                run(serde_json::json!([
                    {"key": "latency_seconds", "value": "NaN", "timestamp": 1},
                    {"key": "cost_usd", "value": "Infinity", "timestamp": 1},
                    {"key": "judge", "value": "-Infinity", "timestamp": 1}])),
                run(serde_json::json!([
                    {"key": "latency_seconds", "value": 1e308, "timestamp": 1},
                    {"key": "accepted", "value": 1, "timestamp": 1}])),
            ]}),
        )
    });
    let out = compare(&server.url(), true);
    assert_eq!(out.code, 0, "{out:?}");
    let got: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let c = &got["comparison"];
    assert_eq!(
        (c["runs"].as_u64(), c["ignored_values"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(c["rows"][0]["latency_p95_seconds"], 1e308);
    assert_eq!(c["rows"][0]["cost_usd"], Value::Null);
    let out = compare(&server.url(), false);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("3 metric values ignored"),
        "{}",
        out.stdout
    );

    // A store with a param file that is not UTF-8.
    let root = dir.path().join("mlruns");
    let store = FileStore::open(&root).unwrap();
    let experiment = store.get_or_create_experiment("odd").unwrap();
    let run_id = store
        .log_run(&experiment, &workload_run(0, now_ms()))
        .unwrap();
    std::fs::write(
        root.join(&experiment).join(&run_id).join("params/model"),
        b"\xff\xfe",
    )
    .unwrap();
    let out = cli(
        dir.path(),
        &[
            "mlflow",
            "compare",
            "--experiment",
            "odd",
            "--tracking-uri",
            root.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.contains("params/model"),
        "names the file: {out:?}"
    );
}
