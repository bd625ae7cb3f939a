//! Real servers for integration tests: Prometheus, the Pushgateway, the demo,
//! each started on a free 127.0.0.1 port in a fresh temporary directory.
//!
//! A [`Server`] is ready when [`start`] returns (its readiness URL answered
//! 200 before a deadline, polled, never slept on blindly) and is killed by PID
//! and reaped when dropped; its stdout and stderr go to files in its directory
//! and are printed when a test fails. A server whose binary is missing fails
//! the test with the command that installs it: nothing here passes silently.
//! Every wait is bounded in time and in attempts.

#![allow(dead_code)]

#[path = "../../../tests/tests/scratch/mod.rs"]
mod scratch;
pub(crate) use scratch::{TempDir, free_port};

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The command that installs every server these tests start.
pub(crate) const INSTALL: &str =
    "apt-get install -y --no-install-recommends prometheus prometheus-pushgateway";

/// Pause between two attempts of a polled wait.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Time one HTTP request of a test may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at starting a server whose free port was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// The path of an installed server binary; panics with the install command
/// when it is missing.
pub(crate) fn require(binary: &str) -> PathBuf {
    require_installed(binary, INSTALL)
}

/// A running server process; killed by PID and reaped when dropped.
pub(crate) struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
    http: reqwest::Client,
    dir: TempDir,
}

/// Starts `program` as `name` for `port` in a fresh directory (its working
/// directory, with its stdout and stderr logs) after `configure` has added
/// arguments, environment and files; does not wait for it.
fn spawn(
    name: &str,
    program: &Path,
    port: u16,
    configure: impl FnOnce(&mut Command, u16, &Path),
) -> Server {
    let dir = TempDir::new(name);
    let log = |file: &str| {
        File::create(dir.path().join(file))
            .unwrap_or_else(|e| panic!("cannot create the {name} {file}: {e}"))
    };
    let mut cmd = Command::new(program);
    cmd.current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"));
    configure(&mut cmd, port, dir.path());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
    Server {
        name: name.to_owned(),
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        http: client(),
        dir,
    }
}

/// Starts `program` as `name` on a free port in a fresh directory (its
/// working directory too), lets `configure` add arguments, environment and
/// files (it gets the port and the directory), and waits until
/// `ready_path` answers 200 or `ready_within` passes.
pub(crate) async fn start(
    name: &str,
    program: &Path,
    ready_path: &str,
    ready_within: Duration,
    mut configure: impl FnMut(&mut Command, u16, &Path),
) -> Server {
    let mut attempt = 1;
    loop {
        let mut server = spawn(name, program, free_port(), &mut configure);
        match server.wait_ready(ready_path, ready_within).await {
            Ok(()) => return server,
            // Another process may have taken the port between our probe and
            // the server's bind: try another port, a bounded number of times.
            Err(log)
                if attempt < PORT_ATTEMPTS
                    && log.to_lowercase().contains("address already in use") =>
            {
                attempt += 1;
            }
            Err(log) => {
                // Stopped first, so the logs are not printed twice.
                drop(server);
                panic!("{log}")
            }
        }
    }
}

/// A Prometheus server with a 1 s scrape interval and these scrape jobs (the
/// YAML list under `scrape_configs:`), its TSDB in its own directory.
pub(crate) async fn prometheus(scrape_configs: &str) -> Server {
    prometheus_with(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"
        ),
        &[],
    )
    .await
}

/// One scrape job for [`prometheus`]'s `scrape_configs`.
pub(crate) fn scrape_job(name: &str, target: SocketAddr, honor_labels: bool) -> String {
    format!(
        "  - job_name: {name}\n    honor_labels: {honor_labels}\n    static_configs:\n      - targets: [\"{target}\"]\n"
    )
}

/// A Pushgateway keeping its groups in memory.
pub(crate) async fn pushgateway() -> Server {
    let program = require("prometheus-pushgateway");
    start(
        "pushgateway",
        &program,
        "/-/ready",
        Duration::from_secs(15),
        |cmd, port, _| {
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
        },
    )
    .await
}

fn arg(flag: &str, path: &Path) -> std::ffi::OsString {
    let mut a = std::ffi::OsString::from(flag);
    a.push(path.as_os_str());
    a
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .expect("build an HTTP client")
}

impl Server {
    /// `127.0.0.1:port`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`: the status and the body, or why the request failed.
    pub(crate) async fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.get_with(path, &[]).await
    }

    /// `GET path?query`.
    pub(crate) async fn get_with(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let url = self.url(path);
        let response = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        Ok((status, body))
    }

    /// The last `lines` lines of the server's stdout and stderr.
    pub(crate) fn logs(&self, lines: usize) -> String {
        let tail = |file: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- {} (pid {}) stderr, last {lines} lines ---\n{}\n--- {} stdout, last {lines} lines ---\n{}",
            self.name,
            self.child.id(),
            tail("stderr.log"),
            self.name,
            tail("stdout.log"),
        )
    }

    /// Polls `ready_path` until it answers 200; the error is a message with
    /// the server's logs.
    async fn wait_ready(&mut self, ready_path: &str, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        let max_attempts = within.as_millis() / POLL.as_millis() + 1;
        let mut last = String::from("no attempt");
        for _ in 0..max_attempts {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before it was ready\n{}",
                    self.name,
                    self.logs(40)
                ));
            }
            match self.get(ready_path).await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("{status}: {body}"),
                Err(e) => last = e,
            }
            if started.elapsed() >= within {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(format!(
            "{} was not ready at {} within {within:?}; last answer: {last}\n{}",
            self.name,
            self.url(ready_path),
            self.logs(40)
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `Child::kill` is kill(pid, SIGKILL) on this very process, then
        // `wait` reaps it, so no server outlives its test.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.logs(40));
        }
    }
}

/// Runs `attempt` until it returns `Ok`, at most for `within` (and at most
/// `within / POLL` + 1 times); panics with `what` and the last error.
pub(crate) async fn eventually<T>(
    what: &str,
    within: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let max_attempts = within.as_millis() / POLL.as_millis() + 1;
    let mut last = String::from("no attempt");
    for _ in 0..max_attempts {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => last = e,
        }
        if started.elapsed() >= within {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!(
        "{what}: still not so after {:.1} s; last: {last}",
        started.elapsed().as_secs_f64()
    )
}

/// Labels of one series, `__name__` included.
pub(crate) type Labels = BTreeMap<String, String>;

/// The `data` of a Prometheus HTTP API answer.
async fn api(
    prometheus: &Server,
    path: &str,
    query: &[(&str, &str)],
) -> Result<serde_json::Value, String> {
    let (status, body) = prometheus.get_with(path, query).await?;
    let json: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| format!("{path} answered {status}, not JSON ({e}): {body}"))?;
    if status != 200 || json["status"] != "success" {
        return Err(format!("{path} answered {status}: {body}"));
    }
    Ok(json["data"].clone())
}

fn labels(value: &serde_json::Value) -> Labels {
    value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `/api/v1/query`: every sample of an instant vector.
pub(crate) async fn query(prometheus: &Server, promql: &str) -> Result<Vec<(Labels, f64)>, String> {
    let data = api(prometheus, "/api/v1/query", &[("query", promql)]).await?;
    if data["resultType"] != "vector" {
        return Err(format!("{promql} is not an instant vector: {data}"));
    }
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sample| {
            let value = sample["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("sample without a value: {sample}"))?;
            Ok((labels(&sample["metric"]), value))
        })
        .collect()
}

/// `/api/v1/series`: the label sets of every series matching `selector`.
pub(crate) async fn series(prometheus: &Server, selector: &str) -> Result<Vec<Labels>, String> {
    let data = api(prometheus, "/api/v1/series", &[("match[]", selector)]).await?;
    Ok(data.as_array().into_iter().flatten().map(labels).collect())
}

/// The environment variables a test server must not inherit from the
/// developer's shell, e.g. `HYPERKIT_*`.
pub(crate) fn scrub_env(cmd: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(&key);
        }
    }
}

/// The command that installs Alertmanager (Debian names its binary
/// `prometheus-alertmanager`).
pub(crate) const INSTALL_ALERTMANAGER: &str =
    "apt-get install -y --no-install-recommends prometheus-alertmanager";

/// Like [`require`], for a binary that `install` installs.
pub(crate) fn require_installed(binary: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file());
    match found {
        Some(path) => path,
        None => panic!(
            "`{binary}` is not installed; this test needs it. Install it with:\n    {install}"
        ),
    }
}

/// Like [`start`], on a given port instead of a free one: restarts a server
/// where its scrapers already look. No retry on another port; a port taken
/// meanwhile fails the test.
pub(crate) async fn start_on(
    name: &str,
    program: &Path,
    port: u16,
    ready_path: &str,
    ready_within: Duration,
    configure: impl FnOnce(&mut Command, u16, &Path),
) -> Server {
    let mut server = spawn(name, program, port, configure);
    if let Err(log) = server.wait_ready(ready_path, ready_within).await {
        drop(server);
        panic!("{log}")
    }
    server
}

/// A Prometheus server running `config` (a whole prometheus.yml) with
/// `files` (rule files, say) copied beside it, so relative paths in the
/// config resolve; its TSDB in its own directory.
pub(crate) async fn prometheus_with(config: &str, files: &[PathBuf]) -> Server {
    let program = require("prometheus");
    start(
        "prometheus",
        &program,
        "/-/ready",
        Duration::from_secs(30),
        |cmd, port, dir| {
            for file in files {
                let name = file
                    .file_name()
                    .unwrap_or_else(|| panic!("{} names no file", file.display()));
                std::fs::copy(file, dir.join(name))
                    .unwrap_or_else(|e| panic!("cannot copy {}: {e}", file.display()));
            }
            let path = dir.join("prometheus.yml");
            std::fs::write(&path, config).expect("write prometheus.yml");
            cmd.arg(arg("--config.file=", &path))
                .arg(arg("--storage.tsdb.path=", &dir.join("data")))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
        },
    )
    .await
}

/// An Alertmanager running the configuration file `config` (copied into its
/// directory), alone: no cluster, silences and notification log in its own
/// directory.
pub(crate) async fn alertmanager(config: &Path) -> Server {
    let program = require_installed("prometheus-alertmanager", INSTALL_ALERTMANAGER);
    start(
        "alertmanager",
        &program,
        "/-/ready",
        Duration::from_secs(30),
        |cmd, port, dir| {
            let path = dir.join("alertmanager.yml");
            std::fs::copy(config, &path)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", config.display()));
            cmd.arg(arg("--config.file=", &path))
                .arg(arg("--storage.path=", &dir.join("data")))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // An empty address turns clustering (and its gossip port) off.
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn");
        },
    )
    .await
}

/// `/api/v1/query` at `time` (Unix seconds): every sample of an instant
/// vector, with the value as Prometheus wrote it parsed (`NaN` included).
pub(crate) async fn query_at(
    prometheus: &Server,
    promql: &str,
    time: f64,
) -> Result<Vec<(Labels, f64)>, String> {
    let time = format!("{time:.3}");
    let data = api(
        prometheus,
        "/api/v1/query",
        &[("query", promql), ("time", &time)],
    )
    .await?;
    if data["resultType"] != "vector" {
        return Err(format!("{promql} is not an instant vector: {data}"));
    }
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sample| {
            let value = sample["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("sample without a value: {sample}"))?;
            Ok((labels(&sample["metric"]), value))
        })
        .collect()
}

/// `/api/v1/query` of a range vector (`selector[range]`): each series with
/// its samples as (Unix seconds, value), oldest first.
pub(crate) async fn query_samples(
    prometheus: &Server,
    promql: &str,
) -> Result<Vec<(Labels, Vec<(f64, f64)>)>, String> {
    let data = api(prometheus, "/api/v1/query", &[("query", promql)]).await?;
    if data["resultType"] != "matrix" {
        return Err(format!("{promql} is not a range vector: {data}"));
    }
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let samples = series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|pair| {
                    let time = pair[0].as_f64();
                    let value = pair[1].as_str().and_then(|v| v.parse::<f64>().ok());
                    time.zip(value)
                        .ok_or_else(|| format!("malformed sample {pair} in {series}"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok((labels(&series["metric"]), samples))
        })
        .collect()
}

/// `/api/v1/label/<label>/values?match[]=<selector>`: the values `label`
/// takes on the series `selector` matches.
pub(crate) async fn label_values(
    prometheus: &Server,
    label: &str,
    selector: Option<&str>,
) -> Result<Vec<String>, String> {
    let path = format!("/api/v1/label/{label}/values");
    let query: Vec<(&str, &str)> = selector.map(|s| ("match[]", s)).into_iter().collect();
    let data = api(prometheus, &path, &query).await?;
    Ok(data
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}
