//! `mlflow server` as a [`Process`]: one worker (unless asked otherwise),
//! job execution off, SIGTERM to its process group when it stops (gunicorn
//! or uvicorn workers go with it), SIGKILL after a deadline.

use std::path::PathBuf;
use std::time::Duration;

use super::Version;
use crate::process::{self, Process, Spec, Stop};

/// How long `mlflow server` may take to answer `/health` (7 to 25 s here).
pub const READY_WITHIN: Duration = Duration::from_secs(90);
/// Pause between two readiness probes.
pub const READY_POLL: Duration = Duration::from_millis(200);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// Where a server keeps its runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite database in the server's temporary directory.
    Sqlite,
    /// An MLflow file store (`mlruns`) at this absolute path.
    FileStore(PathBuf),
}

/// A running `mlflow server` on 127.0.0.1; stopped when dropped.
#[derive(Debug)]
pub struct MlflowServer {
    version: Version,
    backend_uri: String,
    process: Process,
}

impl MlflowServer {
    /// Starts `mlflow server` of `version` over `backend` on a free port
    /// (one worker, job execution off) and waits until `GET /health`
    /// answers 200; panics with the server's log if it does not within
    /// [`READY_WITHIN`].
    pub fn start(version: Version, backend: Backend) -> MlflowServer {
        MlflowServer::start_with_workers(version, backend, Some(1))
    }

    /// [`MlflowServer::start`] with `--workers N`, or without the flag
    /// (MLflow's default, 4 worker processes) when `None`.
    pub fn start_with_workers(
        version: Version,
        backend: Backend,
        workers: Option<u32>,
    ) -> MlflowServer {
        if let Backend::FileStore(path) = &backend {
            assert!(
                path.is_absolute(),
                "a file store path must be absolute: {}",
                path.display()
            );
        }
        let store = backend.clone();
        let spec = Spec::new(
            &format!("mlflow-{}", version.dir_name()),
            version.bin("mlflow"),
        )
        .ready("/health", READY_WITHIN)
        .poll(READY_POLL)
        .stop(Stop::Term(STOP_WITHIN))
        .configure(move |cmd, port, dir| {
            cmd.arg("server")
                .arg("--backend-store-uri")
                .arg(backend_uri(&store, dir))
                .arg("--default-artifact-root")
                .arg(dir.join("artifacts"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            if let Some(n) = workers {
                cmd.args(["--workers", &n.to_string()]);
            }
            process::scrub_env(cmd, "MLFLOW_");
            cmd.env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
                .env("MLFLOW_ALLOW_FILE_STORE", "true");
        });
        let process = Process::start(spec);
        MlflowServer {
            version,
            backend_uri: backend_uri(&backend, process.dir()),
            process,
        }
    }

    /// `http://127.0.0.1:<port>`, the tracking URI.
    pub fn url(&self) -> String {
        self.process.base_url()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// `--backend-store-uri`.
    pub fn backend_uri(&self) -> &str {
        &self.backend_uri
    }

    /// The MLflow version it runs.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The PID of the server's main process (also its process group id),
    /// while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Stops the server (SIGTERM to its process group, SIGKILL after a
    /// deadline) and reaps it. Does nothing when it is not running. Its
    /// database and artifacts stay, for [`MlflowServer::restart`].
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops the server if it runs and starts it again on the same port
    /// over the same database and artifacts (a server crash or restart in a
    /// fault test); returns once it is ready.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    /// The last `lines` lines of the server's stdout and stderr (of every
    /// start).
    pub fn logs(&self, lines: usize) -> String {
        format!(
            "mlflow {} over {}\n{}",
            self.version.mlflow_version(),
            self.backend_uri,
            self.process.logs(lines)
        )
    }
}

/// The `--backend-store-uri` of `backend` for a server in `dir`.
fn backend_uri(backend: &Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite:///{}", dir.join("mlflow.db").display()),
        Backend::FileStore(path) => path.display().to_string(),
    }
}
