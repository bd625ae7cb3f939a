//! Real MLflow for integration tests: `mlflow server` processes and MLflow's
//! Python client, from two pinned virtual environments
//! (`~/.cache/hyperkit-obs/mlflow/v3` with `mlflow==3.17.2`, `…/v2` with
//! `mlflow==2.22.5`).
//!
//! Use it from a test file with `mod mlflow_support;`.
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
//!
//! Everything is synchronous; from an async test, call it from
//! `tokio::task::spawn_blocking` or a multi-threaded runtime so that it does
//! not stall the tasks under test. A missing venv fails the test with the
//! commands that create it: nothing here passes silently.

#![allow(dead_code)]

#[path = "../scratch/mod.rs"]
mod scratch;
pub(crate) use scratch::{TempDir, free_port};

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long `mlflow server` may take to answer `/health` (7 to 25 s here).
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(90);
/// Pause between two readiness probes.
pub(crate) const READY_POLL: Duration = Duration::from_millis(200);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(20);
/// How long a Python snippet may run before it is killed.
pub(crate) const PYTHON_WITHIN: Duration = Duration::from_secs(300);
/// Pause between two checks of a running process.
const POLL: Duration = Duration::from_millis(100);

/// An installed MLflow, each in its own virtual environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// `mlflow==3.17.2`.
    V3,
    /// `mlflow==2.22.5` (with `sqlalchemy<2.1`, which it needs).
    V2,
}

impl Version {
    /// Both, newest first.
    pub(crate) const ALL: [Version; 2] = [Version::V3, Version::V2];

    /// `3.17.2` or `2.22.5`.
    pub(crate) fn mlflow_version(self) -> &'static str {
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

    fn dir_name(self) -> &'static str {
        match self {
            Version::V3 => "v3",
            Version::V2 => "v2",
        }
    }

    /// `~/.cache/hyperkit-obs/mlflow/v3` or `…/v2`.
    pub(crate) fn venv_path(self) -> PathBuf {
        let home = std::env::var_os("HOME").expect("HOME is not set: cannot find the MLflow venvs");
        PathBuf::from(home)
            .join(".cache/hyperkit-obs/mlflow")
            .join(self.dir_name())
    }

    /// The shell commands that create this venv.
    pub(crate) fn install_commands(self) -> String {
        let venv = format!("~/.cache/hyperkit-obs/mlflow/{}", self.dir_name());
        format!(
            "python3 -m venv {venv} && {venv}/bin/pip install {}",
            self.requirements()
        )
    }

    /// The venv, checked to hold this MLflow; panics with the commands that
    /// create it when it does not.
    pub(crate) fn venv(self) -> PathBuf {
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
    pub(crate) fn bin(self, program: &str) -> PathBuf {
        self.venv().join("bin").join(program)
    }
}

/// Makes the tests of one binary take turns: hold the guard for the whole
/// test. A test that panicked does not block the others.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a server keeps its runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A fresh SQLite database in the server's temporary directory.
    Sqlite,
    /// An MLflow file store (`mlruns`) at this absolute path.
    FileStore(PathBuf),
}

/// A running `mlflow server` on 127.0.0.1; stopped when dropped.
pub(crate) struct MlflowServer {
    version: Version,
    backend_uri: String,
    port: u16,
    /// `--workers`, when given.
    workers: Option<u32>,
    dir: TempDir,
    child: Option<Child>,
}

impl MlflowServer {
    /// Starts `mlflow server` of `version` over `backend` on a free port
    /// (one worker, job execution off) and waits until `GET /health`
    /// answers 200; panics with the server's log if it does not within
    /// [`READY_WITHIN`].
    pub(crate) fn start(version: Version, backend: Backend) -> MlflowServer {
        MlflowServer::start_with_workers(version, backend, Some(1))
    }

    /// [`MlflowServer::start`] with `--workers N`, or without the flag
    /// (MLflow's default, 4 worker processes) when `None`.
    pub(crate) fn start_with_workers(
        version: Version,
        backend: Backend,
        workers: Option<u32>,
    ) -> MlflowServer {
        let dir = TempDir::new(&format!("mlflow-{}", version.dir_name()));
        let backend_uri = match backend {
            Backend::Sqlite => format!("sqlite:///{}", dir.path().join("mlflow.db").display()),
            Backend::FileStore(path) => {
                assert!(
                    path.is_absolute(),
                    "a file store path must be absolute: {}",
                    path.display()
                );
                path.display().to_string()
            }
        };
        let mut server = MlflowServer {
            version,
            backend_uri,
            port: free_port(),
            workers,
            dir,
            child: None,
        };
        // Another process may take the free port before the server binds
        // it: try other ports, a bounded number of times.
        for attempt in 1..=3 {
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) if attempt < 3 && e.to_lowercase().contains("address already in use") => {
                    server.port = free_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `http://127.0.0.1:<port>`, the tracking URI.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `--backend-store-uri`.
    pub(crate) fn backend_uri(&self) -> &str {
        &self.backend_uri
    }

    /// The MLflow version it runs.
    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// The PID of the server's main process (also its process group id),
    /// while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server (SIGTERM to its process group, SIGKILL after
    /// [`STOP_WITHIN`]) and reaps it. Does nothing when it is not running.
    /// Its database and artifacts stay, for [`MlflowServer::restart`].
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = child.id();
        signal_group("TERM", group);
        let deadline = Instant::now() + STOP_WITHIN;
        // Waited for without reaping it: while the leader is a zombie its pid,
        // hence the group id, cannot be reused, so that the last SIGKILL
        // reaches only workers that outlived it.
        while !exited(group) {
            if Instant::now() >= deadline {
                eprintln!(
                    "mlflow server (pid {group}) still running {STOP_WITHIN:?} after SIGTERM: SIGKILL"
                );
                break;
            }
            std::thread::sleep(POLL);
        }
        signal_group("KILL", group);
        let _ = child.wait();
    }

    /// Stops the server if it runs and starts it again on the same port
    /// over the same database and artifacts (a server crash or restart in a
    /// fault test); returns once it is ready.
    pub(crate) fn restart(&mut self) {
        self.stop();
        // The old process's socket may take a moment to be released.
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STOP_WITHIN;
        while TcpListener::bind(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {} still taken {STOP_WITHIN:?} after the server stopped",
                self.port
            );
            std::thread::sleep(POLL);
        }
        if let Err(e) = self.spawn_and_wait() {
            panic!("{e}");
        }
    }

    /// The last `lines` lines of the server's stdout and stderr (of every
    /// start).
    pub(crate) fn logs(&self, lines: usize) -> String {
        let tail = |file: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- mlflow {} server on port {} ({}) stderr, last {lines} lines ---\n{}\n--- stdout, last {lines} lines ---\n{}",
            self.version.mlflow_version(),
            self.port,
            self.backend_uri,
            tail("stderr.log"),
            tail("stdout.log"),
        )
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = |file: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(file))
                .unwrap_or_else(|e| panic!("cannot open the server's {file}: {e}"))
        };
        let mut cmd = Command::new(self.version.bin("mlflow"));
        cmd.arg("server")
            .arg("--backend-store-uri")
            .arg(&self.backend_uri)
            .arg("--default-artifact-root")
            .arg(self.dir.path().join("artifacts"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"));
        if let Some(n) = self.workers {
            cmd.args(["--workers", &n.to_string()]);
        }
        clean_env(&mut cmd);
        cmd.env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .env("MLFLOW_ALLOW_FILE_STORE", "true");
        // Its own process group, so that stopping it reaches the gunicorn or
        // uvicorn workers it forks.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start mlflow server: {e}"))?;
        self.child = Some(child);

        let started = Instant::now();
        loop {
            let Some(pid) = self.child.as_ref().map(Child::id) else {
                return Err("mlflow server is not running".to_owned());
            };
            if exited(pid) {
                // Its workers too, before the leader is reaped.
                signal_group("KILL", pid);
                let status = self.child.take().map(|mut c| c.wait());
                return Err(format!(
                    "mlflow server exited ({status:?}) before it was ready\n{}",
                    self.logs(60)
                ));
            }
            let last = match http_status(self.port, "/health") {
                Ok(200) => return Ok(()),
                Ok(status) => format!("HTTP {status}"),
                Err(e) => e,
            };
            if started.elapsed() >= READY_WITHIN {
                let logs = self.logs(60);
                self.stop();
                return Err(format!(
                    "mlflow server was not ready at {}/health within {READY_WITHIN:?}; last: {last}\n{logs}",
                    self.url()
                ));
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.logs(60));
        }
    }
}

/// Whether process `pid` (a child not yet reaped) has exited: it is a
/// zombie, or gone.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// `kill -<signal> -- -<group>`; errors (no such group) are ignored.
fn signal_group(signal: &str, group: u32) {
    // `-0` or `-1` would signal this test's own group, or every process.
    if group <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{group}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The status of `GET path` on 127.0.0.1:`port`, over a plain socket.
fn http_status(port: u16, path: &str) -> Result<u16, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..got]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

/// Removes what the developer's shell may set for MLflow, so that a test
/// runs against what it configures and nothing else.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MLFLOW_") {
            cmd.env_remove(key);
        }
    }
}

/// Runs `script` with the venv's `python -c` (environment: the test's,
/// without `MLFLOW_*`, plus `env`), at most [`PYTHON_WITHIN`]; panics with
/// its stderr if it fails or takes longer, and returns the last line it
/// printed, parsed as JSON.
pub(crate) fn python(version: Version, script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let dir = TempDir::new("mlflow-python");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let create = |path: &Path| {
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
    };
    let mut cmd = Command::new(version.bin("python"));
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(create(&out_path))
        .stderr(create(&err_path));
    clean_env(&mut cmd);
    cmd.env("PYTHONUNBUFFERED", "1")
        .env("GIT_PYTHON_REFRESH", "quiet");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", version.bin("python").display()));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PYTHON_WITHIN => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "python (MLflow {}) still running after {PYTHON_WITHIN:?}; killed. stderr:\n{}",
                    version.mlflow_version(),
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            Err(e) => panic!("waiting for python: {e}"),
        }
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "python (MLflow {}) exited with {status}\n--- script ---\n{script}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        version.mlflow_version()
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
pub(crate) const READ_RUNS_PY: &str = r#"
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
pub(crate) fn experiment_lifecycle(
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
pub(crate) fn read_runs(
    version: Version,
    tracking_uri: &str,
    experiment: &str,
) -> Vec<serde_json::Value> {
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
