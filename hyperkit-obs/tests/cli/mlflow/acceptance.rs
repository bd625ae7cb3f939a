//! `mlflow acceptance`: a model's acceptance rate from a file store and
//! from an MLflow 2 server.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hyperkit_obs::mlflow::{ExperimentTracker, FileStore, MlflowConfig, TrackingTarget};
use serde_json::{Value, json};

use super::{FAST_FAIL, block_on};
use crate::support::cli;
use test_support::TempDir;
use test_support::mlflow::{Backend, MlflowServer, Version, serial};

/// Run `i` of an acceptance fixture: accepted for i % 3 == 0, rejected for
/// i % 3 == 1, undecided otherwise.
fn decision(i: usize) -> Option<bool> {
    match i % 3 {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    }
}

/// Logs `n` runs per `(model, task)` of `plan` with [`decision`]; returns the
/// expected `(accepted, rejected, undecided)` per `(model, task)`.
fn log_fixture(
    tracker: &ExperimentTracker,
    plan: &[(&str, &str, usize)],
) -> HashMap<(String, String), [u64; 3]> {
    let mut counts: HashMap<(String, String), [u64; 3]> = HashMap::new();
    block_on(async {
        for (model, task, n) in plan {
            for i in 0..*n {
                let d = decision(i);
                tracker
                    .log_model_run(model, task, 10, 20, Duration::from_millis(5), d)
                    .await
                    .unwrap();
                let c = counts.entry(((*model).into(), (*task).into())).or_default();
                c[match d {
                    Some(true) => 0,
                    Some(false) => 1,
                    None => 2,
                }] += 1;
            }
        }
    });
    counts
}

fn sum(counts: &HashMap<(String, String), [u64; 3]>, model: &str, task: Option<&str>) -> [u64; 3] {
    let mut total = [0; 3];
    for ((m, t), c) in counts {
        if m == model && task.is_none_or(|task| task == t) {
            for k in 0..3 {
                total[k] += c[k];
            }
        }
    }
    total
}

/// The line `mlflow acceptance` must print.
fn expected_line(
    model: &str,
    task: Option<&str>,
    experiment: &str,
    at: &str,
    c: [u64; 3],
) -> String {
    let task = task.map(|t| format!(" (task {t:?})")).unwrap_or_default();
    let head = format!("acceptance of model {model:?}{task} in experiment {experiment:?} at {at}");
    if c[0] + c[1] == 0 {
        return format!("{head}: no decisions yet ({} runs undecided)", c[2]);
    }
    let rate = c[0] as f64 / (c[0] + c[1]) as f64;
    format!(
        "{head}: {:.1}% ({} accepted, {} rejected, {} undecided; {} runs)",
        rate * 100.0,
        c[0],
        c[1],
        c[2],
        c[0] + c[1] + c[2]
    )
}

/// Checks the text and `--json` answers for each `(model, task)` asked.
fn check_answers(
    cwd: &Path,
    env: &[(&str, &str)],
    experiment: &str,
    at: &str,
    counts: &HashMap<(String, String), [u64; 3]>,
    asks: &[(&str, Option<&str>)],
) {
    for &(model, task) in asks {
        let c = sum(counts, model, task);
        let mut args = vec!["mlflow", "acceptance", "--model", model];
        if let Some(t) = task {
            args.extend(["--task", t]);
        }
        let out = cli(cwd, &args, env);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert_eq!(
            out.stdout.trim_end(),
            expected_line(model, task, experiment, at, c),
            "{args:?}"
        );
        args.push("--json");
        let out = cli(cwd, &args, env);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        let got: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
        let decided = c[0] + c[1];
        let rate = (decided > 0).then(|| c[0] as f64 / decided as f64);
        assert_eq!(
            got,
            json!({
                "model": model, "task": task, "experiment": experiment,
                "accepted": c[0], "rejected": c[1], "undecided": c[2], "rate": rate,
            }),
            "{args:?}"
        );
    }
}

/// Against a file store written with `ExperimentTracker::log_model_run`: the
/// counts are exact, `--task` filters, a model with no decision says so, an
/// unknown experiment and a bad variable exit 1 naming them.
#[test]
fn acceptance_reads_a_file_store() {
    let dir = TempDir::new("cli-acceptance");
    let root = dir.path().join("mlruns");
    let mut config = MlflowConfig::default();
    config.target = TrackingTarget::FileStore(root.clone());
    let tracker = block_on(ExperimentTracker::with_config("evals", &config)).unwrap();
    let counts = log_fixture(
        &tracker,
        &[
            ("m-a", "codegen", 10),
            ("m-a", "review", 8),
            ("m-b", "codegen", 10),
            ("m-new", "codegen", 2),
        ],
    );
    // A model whose runs are all undecided.
    block_on(tracker.log_model_run("m-quiet", "codegen", 1, 1, Duration::ZERO, None)).unwrap();
    let mut counts = counts;
    counts.insert(("m-quiet".into(), "codegen".into()), [0, 0, 1]);

    let uri = format!("file://{}", root.display());
    let env = [
        ("MLFLOW_TRACKING_URI", uri.as_str()),
        ("MLFLOW_EXPERIMENT_NAME", "evals"),
    ];
    let at = format!("file store {}", root.display());
    check_answers(
        dir.path(),
        &env,
        "evals",
        &at,
        &counts,
        &[
            ("m-a", None),
            ("m-a", Some("review")),
            ("m-a", Some("codegen")),
            ("m-b", None),
            ("m-new", None),
            ("m-quiet", None),
            ("m-unknown", None),
        ],
    );
    let out = cli(
        dir.path(),
        &["mlflow", "acceptance", "--model", "m-quiet"],
        &env,
    );
    assert!(
        out.stdout.contains("no decisions yet (1 runs undecided)"),
        "{out:?}"
    );

    // --experiment overrides MLFLOW_EXPERIMENT_NAME; a missing one is an
    // error and is not created.
    let out = cli(
        dir.path(),
        &[
            "mlflow",
            "acceptance",
            "--model",
            "m-a",
            "--experiment",
            "other evals",
        ],
        &env,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("no experiment named \"other evals\" at {at}")),
        "{out:?}"
    );
    let store = FileStore::open(&root).unwrap();
    assert_eq!(store.experiment_by_name("other evals").unwrap(), None);
    // The default experiment, in the default store (./mlruns, missing here).
    let elsewhere = TempDir::new("cli-acceptance-empty");
    let out = cli(
        elsewhere.path(),
        &["mlflow", "acceptance", "--model", "m-a"],
        &[],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("no experiment named \"hyperkit-model-calls\" at file store mlruns"),
        "{out:?}"
    );
    assert!(
        !elsewhere.path().join("mlruns").exists(),
        "./mlruns was created"
    );

    // A configuration error names the variable.
    let out = cli(
        dir.path(),
        &["mlflow", "acceptance", "--model", "m-a"],
        &[("MLFLOW_TRACKING_URI", "databricks://profile")],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("configuration error: MLFLOW_TRACKING_URI="),
        "{out:?}"
    );
    // Bad usage exits 2.
    for args in [
        &["mlflow", "acceptance"][..],
        &["mlflow", "acceptance", "--model", "m", "--model", "n"],
        &["mlflow", "acceptance", "--model", "m", "extra"],
        &["mlflow", "acceptance", "--model", "m", "--json=yes"],
    ] {
        let out = cli(dir.path(), args, &env);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
    }
}

/// Against a real MLflow 2 server (over a file store written with
/// `ExperimentTracker`) with more runs of one model than one page of
/// `runs/search` holds: every page is counted.
#[test]
fn acceptance_reads_every_page_from_an_mlflow_2_server() {
    let _turn = serial();
    let dir = TempDir::new("cli-acceptance-server");
    let root = dir.path().join("mlruns");
    let mut config = MlflowConfig::default();
    config.target = TrackingTarget::FileStore(root.clone());
    let tracker = block_on(ExperimentTracker::with_config("paged evals", &config)).unwrap();
    let counts = log_fixture(
        &tracker,
        &[
            ("big", "codegen", 700),
            ("big", "review", 420),
            ("small", "codegen", 25),
        ],
    );
    let server = MlflowServer::start(Version::V2, Backend::FileStore(root));
    let url = server.url();
    let mut env = vec![
        ("MLFLOW_TRACKING_URI", url.as_str()),
        ("MLFLOW_EXPERIMENT_NAME", "paged evals"),
    ];
    env.extend(FAST_FAIL);
    assert!(sum(&counts, "big", None).iter().sum::<u64>() > 1000);
    check_answers(
        dir.path(),
        &env,
        "paged evals",
        &url,
        &counts,
        &[("big", None), ("big", Some("review")), ("small", None)],
    );
    let out = cli(
        dir.path(),
        &[
            "mlflow",
            "acceptance",
            "--model",
            "big",
            "--experiment",
            "missing",
        ],
        &env,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("no experiment named \"missing\" at {url}")),
        "{out:?}"
    );
}
