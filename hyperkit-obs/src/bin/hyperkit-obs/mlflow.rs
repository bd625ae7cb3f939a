//! `hyperkit-obs mlflow acceptance` and `mlflow push`: a model's
//! acceptance rate read from MLflow, and a local file store replayed into a
//! tracking server. Both are the library's ([`ExperimentTracker`],
//! [`push`](hyperkit_obs::mlflow::push)); this module reads their options
//! and prints.

use std::path::PathBuf;

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::mlflow::{
    ExperimentPush, ExperimentTracker, FileStore, MlflowClient, MlflowConfig, PushError,
    TrackingTarget, push_store_with,
};

use crate::args::{Operands, Opt, Spec};
use crate::{Args, Failure, block_on, config_error};

/// `--experiment E`, as both commands take it.
pub(crate) const fn experiment(help: &'static str) -> Opt {
    Opt {
        name: "experiment",
        value: Some("E"),
        example: "hyperkit-model-calls",
        required: false,
        help,
    }
}

/// `mlflow acceptance`.
pub(crate) const ACCEPTANCE: Spec = Spec {
    words: "mlflow acceptance",
    about: "print the acceptance rate of model M, from MLflow",
    operands: Operands::None,
    options: &[
        Opt {
            name: "model",
            value: Some("M"),
            example: "small-1",
            required: true,
            help: "the model's runs (param `model`)",
        },
        Opt {
            name: "task",
            value: Some("T"),
            example: "codegen",
            required: false,
            help: "only the runs of task T (param `task`)",
        },
        experiment("the experiment (default: MLFLOW_EXPERIMENT_NAME, or hyperkit-model-calls)"),
        Opt {
            name: "json",
            value: None,
            example: "",
            required: false,
            help: "print one JSON object",
        },
    ],
    notes: "\
The runs are read from the tracking server or file store MLFLOW_TRACKING_URI
names (default ./mlruns), every page of them. A run is accepted when its metric
`accepted` is 1, rejected when it is 0, undecided without it; the rate is
accepted / (accepted + rejected). An experiment that does not exist is an
error (exit status 1), and is not created.",
};

/// `mlflow push`.
pub(crate) const PUSH: Spec = Spec {
    words: "mlflow push",
    about: "copy the runs of a local file store to a tracking server, once",
    operands: Operands::Dir,
    options: &[
        Opt {
            name: "to",
            value: Some("URL"),
            example: "http://127.0.0.1:5000",
            required: true,
            help: "the tracking server (replaces MLFLOW_TRACKING_URI)",
        },
        experiment("only the runs of experiment E (default: every experiment with runs)"),
    ],
    notes: "\
DIR is the file store (default ./mlruns); it is only read. Each experiment goes
to the server's experiment of the same name, created when missing. Runs pushed
before are skipped (tag hyperkit.source_run_id), a run a stopped push left half
done is finished, and a run deleted on the server since is not pushed again: it
is safe to run again after an interruption. MLFLOW_TRACKING_TOKEN and the other
MLFLOW_* variables apply to the server at URL.",
};

/// Opens `experiment` where `config` points and reads it with `read`; a
/// missing experiment or a failure is one line naming the experiment and
/// where it was looked for.
pub(crate) fn read_experiment<T, E: std::fmt::Display>(
    experiment: &str,
    config: &MlflowConfig,
    read: impl AsyncFnOnce(&ExperimentTracker) -> Result<T, E>,
) -> Result<T, Failure> {
    let target = &config.target;
    block_on(async {
        let tracker = ExperimentTracker::open(experiment, config)
            .await
            .map_err(|e| {
                Failure::Failed(format!(
                    "cannot look up experiment {experiment:?} at {target}: {e}"
                ))
            })?
            .ok_or_else(|| {
                Failure::Failed(format!("no experiment named {experiment:?} at {target}"))
            })?;
        read(&tracker).await.map_err(|e| {
            Failure::Failed(format!(
                "cannot read the runs of experiment {experiment:?} at {target}: {e}"
            ))
        })
    })
}

/// `hyperkit-obs mlflow acceptance`.
pub(crate) fn acceptance(args: &Args) -> Result<(), Failure> {
    let model = args.required("--model");
    let task = args.value("--task");
    let config = MonitoringConfig::from_env().map_err(config_error)?.mlflow;
    let experiment = args
        .value("--experiment")
        .unwrap_or(&config.experiment_name);
    let rate = read_experiment(experiment, &config, async |tracker| {
        tracker.acceptance_rate_for(model, task).await
    })?;
    if args.switch("--json") {
        let json = serde_json::json!({
            "model": model,
            "task": task,
            "experiment": experiment,
            "accepted": rate.accepted,
            "rejected": rate.rejected,
            "undecided": rate.undecided,
            "rate": rate.rate(),
        });
        println!("{json}");
        return Ok(());
    }
    let task = task.map(|t| format!(" (task {t:?})")).unwrap_or_default();
    let head = format!(
        "acceptance of model {model:?}{task} in experiment {experiment:?} at {}",
        config.target
    );
    match rate.rate() {
        Some(r) => println!(
            "{head}: {:.1}% ({} accepted, {} rejected, {} undecided; {} runs)",
            r * 100.0,
            rate.accepted,
            rate.rejected,
            rate.undecided,
            rate.accepted + rate.rejected + rate.undecided
        ),
        None => println!(
            "{head}: no decisions yet ({} runs undecided)",
            rate.undecided
        ),
    }
    Ok(())
}

/// `hyperkit-obs mlflow push`.
pub(crate) fn push(args: &Args) -> Result<(), Failure> {
    let to = args.required("--to");
    let dir = PathBuf::from(args.operands().first().map_or("mlruns", String::as_str));
    // The environment as it is, with --to as the tracking URI.
    let config = MonitoringConfig::from_lookup(|name| {
        if name == "MLFLOW_TRACKING_URI" {
            Some(to.to_owned())
        } else {
            std::env::var(name).ok()
        }
    })
    .map_err(|e| Failure::Failed(format!("--to: {e}")))?
    .mlflow;
    if !matches!(config.target, TrackingTarget::Server(_)) {
        return Err(Failure::Usage(format!(
            "--to must be a tracking server's http(s):// URL, not `{}`: write e.g. `--to http://127.0.0.1:5000`",
            crate::shown(to)
        )));
    }
    // Checked first: opening a file store creates a missing one.
    if !dir.is_dir() {
        return Err(Failure::Failed(format!(
            "no MLflow file store at {}: it is not a directory",
            dir.display()
        )));
    }
    let store = FileStore::open(&dir)
        .map_err(|e| Failure::Failed(format!("reading {}: {e}", dir.display())))?;
    let client = MlflowClient::new(&config).map_err(config_error)?;
    let print = |e: &ExperimentPush| {
        let deleted = match e.deleted {
            0 => String::new(),
            n => format!(", {n} deleted on the server (not pushed again)"),
        };
        println!(
            "experiment {:?}: pushed {} runs, {} already there{deleted}",
            e.name, e.pushed, e.already
        );
    };
    let only = args.value("--experiment");
    let report = block_on(async {
        push_store_with(&store, &client, only, print)
            .await
            .map_err(|e| match e {
                PushError::Experiment { .. } => Failure::Failed(format!(
                    "{e}; what was pushed stays: run the same command again to push the rest"
                )),
                other => Failure::Failed(other.to_string()),
            })
    })?;
    if report.is_empty() {
        println!(
            "nothing to push: no experiment in {} has runs",
            store.root().display()
        );
    }
    Ok(())
}
