//! Real MLflow for tests: `mlflow server` processes ([`MlflowServer`]) and
//! MLflow's Python client, from two pinned virtual environments
//! (`~/.cache/hyperkit-obs/mlflow/v3` with `mlflow==3.17.2`, `…/v2` with
//! `mlflow==2.22.5`), which `scripts/test` creates.
//!
//! - [`MlflowServer::start`] runs `mlflow server` on a free 127.0.0.1 port in
//!   a fresh temporary directory (its SQLite database, artifacts and logs)
//!   or over a given file store, in its own process group; it returns once
//!   `GET /health` answered 200 (polled every 200 ms, 90 s at most). It is
//!   stopped by signalling that process group (SIGTERM, then SIGKILL after a
//!   deadline) when dropped, and its log is printed when the test panics.
//! - [`python`] runs a Python snippet with a venv's interpreter, bounded in
//!   time, and parses the last line it printed as JSON; [`READ_RUNS_PY`] and
//!   [`read_runs`] read every run of an experiment through MLflow's own
//!   `MlflowClient`.
//! - [`serial`] lets the tests of one binary take turns, so that two servers
//!   do not start at once on a small machine.
//! - [`fixture`]: MLflow's REST API as a protocol fixture, for the answers a
//!   real server cannot be made to give, and for a server that goes down and
//!   comes back on the same port.
//!
//! Everything is synchronous; from an async test, call it from
//! `tokio::task::spawn_blocking` or a multi-threaded runtime so that it does
//! not stall the tasks under test. A missing venv fails the test with the
//! commands that create it: nothing here passes silently.

pub mod fixture;
mod server;

pub use server::{Backend, MlflowServer, READY_POLL, READY_WITHIN};

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::process;

/// How long a Python snippet may run before it is killed.
pub const PYTHON_WITHIN: Duration = Duration::from_secs(300);

/// An installed MLflow, each in its own virtual environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `mlflow==3.17.2`.
    V3,
    /// `mlflow==2.22.5` (with `sqlalchemy<2.1`, which it needs).
    V2,
}

impl Version {
    /// Both, newest first.
    pub const ALL: [Version; 2] = [Version::V3, Version::V2];

    /// `3.17.2` or `2.22.5`.
    pub fn mlflow_version(self) -> &'static str {
        match self {
            Version::V3 => "3.17.2",
            Version::V2 => "2.22.5",
        }
    }

    /// What `pip install` needs.
    fn requirements(self) -> &'static str {
        match self {
            Version::V3 => "'mlflow==3.17.2'",
            Version::V2 => "'mlflow==2.22.5' 'sqlalchemy<2.1'",
        }
    }

    pub(crate) fn dir_name(self) -> &'static str {
        match self {
            Version::V3 => "v3",
            Version::V2 => "v2",
        }
    }

    /// `~/.cache/hyperkit-obs/mlflow/v3` or `…/v2`.
    pub fn venv_path(self) -> PathBuf {
        let home = std::env::var_os("HOME").expect("HOME is not set: cannot find the MLflow venvs");
        PathBuf::from(home)
            .join(".cache/hyperkit-obs/mlflow")
            .join(self.dir_name())
    }

    /// The shell commands that create this venv.
    pub fn install_commands(self) -> String {
        let venv = format!("~/.cache/hyperkit-obs/mlflow/{}", self.dir_name());
        format!(
            "python3 -m venv {venv} && {venv}/bin/pip install {}",
            self.requirements()
        )
    }

    /// The venv, checked to hold this MLflow; panics with the commands that
    /// create it when it does not.
    pub fn venv(self) -> PathBuf {
        let venv = self.venv_path();
        let installed = std::fs::read_dir(venv.join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|python| {
                python
                    .path()
                    .join("site-packages")
                    .join(format!("mlflow-{}.dist-info", self.mlflow_version()))
                    .is_dir()
            });
        if !installed || !venv.join("bin/python").is_file() || !venv.join("bin/mlflow").is_file() {
            panic!(
                "MLflow {} is not installed in {}; this test needs it. Create it with:\n    {}",
                self.mlflow_version(),
                venv.display(),
                self.install_commands()
            );
        }
        venv
    }

    /// A program of the venv (`python`, `mlflow`).
    pub fn bin(self, program: &str) -> PathBuf {
        self.venv().join("bin").join(program)
    }
}

/// Makes the tests of one binary take turns: hold the guard for the whole
/// test. A test that panicked does not block the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `script` with the venv's `python -c` (environment: the test's,
/// without `MLFLOW_*`, plus `env`), at most [`PYTHON_WITHIN`]; panics with
/// its stderr if it fails or takes longer, and returns the last line it
/// printed, parsed as JSON.
pub fn python(version: Version, script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = Command::new(version.bin("python"));
    cmd.arg("-c").arg(script);
    process::scrub_env(&mut cmd, "MLFLOW_");
    cmd.env("PYTHONUNBUFFERED", "1")
        .env("GIT_PYTHON_REFRESH", "quiet")
        .envs(env.iter().copied());
    let what = format!("python (MLflow {})", version.mlflow_version());
    let process::Finished {
        status,
        stdout,
        stderr,
    } = process::run(&what, &mut cmd, PYTHON_WITHIN);
    assert!(
        status.success(),
        "{what} exited with {status}\n--- script ---\n{script}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("python printed nothing\n--- stderr ---\n{stderr}"));
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("python's last line is not JSON ({e}): {last}\n--- stderr ---\n{stderr}")
    })
}

/// Reads every run of experiment `EXPERIMENT_NAME` at `TRACKING_URI` (both
/// from the environment) with `MlflowClient.search_runs`, page after page,
/// and prints one JSON line: a list of `{run_id, run_name, status,
/// start_time, end_time, params: {k: v}, metrics: {k: latest value}, tags:
/// {k: v}}`. A metric value that JSON cannot hold (NaN, ±infinity) is the
/// string `"nan"`, `"inf"` or `"-inf"`.
pub const READ_RUNS_PY: &str = r#"
import json, math, os
from mlflow import MlflowClient

client = MlflowClient(tracking_uri=os.environ["TRACKING_URI"])
name = os.environ["EXPERIMENT_NAME"]
experiment = client.get_experiment_by_name(name)
if experiment is None:
    raise SystemExit(f"no experiment named {name!r} at {os.environ['TRACKING_URI']}")

def number(v):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v

runs, token = [], None
while True:
    page = client.search_runs(
        experiment_ids=[experiment.experiment_id], max_results=1000, page_token=token
    )
    for run in page:
        runs.append({
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "params": dict(run.data.params),
            "metrics": {k: number(v) for k, v in run.data.metrics.items()},
            "tags": dict(run.data.tags),
        })
    token = page.token
    if not token:
        break
print(json.dumps(runs))
"#;

/// Deletes, restores or purges (`mlflow gc`) experiment `ID` at
/// `TRACKING_URI`, whose store is `BACKEND_URI`, as a user of MLflow's
/// Python client and CLI does; prints its lifecycle stage afterwards (null
/// once purged).
const EXPERIMENT_LIFECYCLE_PY: &str = r#"
import json, os, subprocess, sys
import mlflow
from mlflow import MlflowClient

uri = os.environ["TRACKING_URI"]
client = MlflowClient(tracking_uri=uri)
action, experiment_id = os.environ["ACTION"], os.environ["ID"]
if action in ("delete", "purge"):
    client.delete_experiment(experiment_id)
if action == "restore":
    client.restore_experiment(experiment_id)
if action == "purge":
    cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    gc = [cli, "gc", "--backend-store-uri", os.environ["BACKEND_URI"],
          "--experiment-ids", experiment_id]
    if int(mlflow.__version__.split(".")[0]) >= 3:
        # MLflow 3 resolves artifact locations through the server.
        gc += ["--tracking-uri", uri]
    subprocess.run(gc, check=True)
print(json.dumps(None if action == "purge" else client.get_experiment(experiment_id).lifecycle_stage))
"#;

/// `action` (`delete`, `restore` or `purge`) on experiment `id` with
/// MLflow's Python client and CLI of `version` ([`EXPERIMENT_LIFECYCLE_PY`]).
/// Returns its lifecycle stage afterwards, `null` once purged.
pub fn experiment_lifecycle(
    version: Version,
    tracking_uri: &str,
    backend_uri: &str,
    action: &str,
    id: &str,
) -> serde_json::Value {
    python(
        version,
        EXPERIMENT_LIFECYCLE_PY,
        &[
            ("TRACKING_URI", tracking_uri),
            ("BACKEND_URI", backend_uri),
            ("ACTION", action),
            ("ID", id),
            ("MLFLOW_ALLOW_FILE_STORE", "true"),
        ],
    )
}

/// Every run of `experiment` at `tracking_uri` (`http://…` or `file://…`)
/// as MLflow's Python client of `version` reads it ([`READ_RUNS_PY`]),
/// sorted by run id.
pub fn read_runs(version: Version, tracking_uri: &str, experiment: &str) -> Vec<serde_json::Value> {
    let value = python(
        version,
        READ_RUNS_PY,
        &[
            ("TRACKING_URI", tracking_uri),
            ("EXPERIMENT_NAME", experiment),
            ("MLFLOW_ALLOW_FILE_STORE", "true"),
        ],
    );
    let mut runs = match value {
        serde_json::Value::Array(runs) => runs,
        other => panic!("READ_RUNS_PY printed {other}, not a list"),
    };
    runs.sort_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
    runs
}
