//! Prometheus, the Pushgateway and Alertmanager (Debian's packages) as
//! [`Process`]es, the demo beside them, and the Prometheus HTTP API as
//! tests read it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{self, Process, Spec};

/// The command that installs Prometheus, promtool and the Pushgateway.
pub const INSTALL: &str =
    "apt-get install -y --no-install-recommends prometheus prometheus-pushgateway";

/// The command that installs Alertmanager (Debian names its binary
/// `prometheus-alertmanager`) and amtool.
pub const INSTALL_ALERTMANAGER: &str =
    "apt-get install -y --no-install-recommends prometheus-alertmanager";

/// The path of `binary`, one of [`INSTALL`]'s; panics with that command
/// when it is missing.
pub fn require(binary: &str) -> PathBuf {
    process::require_installed(binary, INSTALL)
}

/// The demo (the `examples` crate's `demo` binary at `program`) as a
/// server: on its port, its data in its directory, logging warnings only,
/// with none of the caller's `HYPERKIT_*` settings but `settings`; ready
/// when `/health/ready` answers.
pub fn demo(program: impl Into<PathBuf>, settings: &[(&str, &str)]) -> Spec {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Spec::new("demo", program)
        .ready("/health/ready", Duration::from_secs(30))
        .configure(move |cmd, port, dir| {
            process::scrub_env(cmd, "HYPERKIT_");
            cmd.env("HYPERKIT_METRICS_ADDR", format!("127.0.0.1:{port}"))
                .env("HYPERKIT_DATA_DIR", dir.join("data"))
                .env("RUST_LOG", "warn")
                .envs(settings.iter().map(|(k, v)| (k, v)));
        })
}

/// A Prometheus server with a 1 s scrape interval and these scrape jobs (the
/// YAML list under `scrape_configs:`), its TSDB in its own directory.
pub async fn prometheus(scrape_configs: &str) -> Process {
    prometheus_with(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"
        ),
        &[],
    )
    .await
}

/// One scrape job for [`prometheus`]'s `scrape_configs`.
pub fn scrape_job(name: &str, target: SocketAddr, honor_labels: bool) -> String {
    format!(
        "  - job_name: {name}\n    honor_labels: {honor_labels}\n    static_configs:\n      - targets: [\"{target}\"]\n"
    )
}

/// A Prometheus server running `config` (a whole prometheus.yml) with
/// `files` (rule files, say) copied beside it, so relative paths in the
/// config resolve; its TSDB in its own directory.
pub async fn prometheus_with(config: &str, files: &[PathBuf]) -> Process {
    let config = config.to_owned();
    let files = files.to_vec();
    let spec = Spec::new("prometheus", require("prometheus"))
        .ready("/-/ready", Duration::from_secs(30))
        .configure(move |cmd, port, dir| {
            for file in &files {
                let name = file
                    .file_name()
                    .unwrap_or_else(|| panic!("{} names no file", file.display()));
                std::fs::copy(file, dir.join(name))
                    .unwrap_or_else(|e| panic!("cannot copy {}: {e}", file.display()));
            }
            let path = dir.join("prometheus.yml");
            std::fs::write(&path, &config).expect("write prometheus.yml");
            cmd.arg(arg("--config.file=", &path))
                .arg(arg("--storage.tsdb.path=", &dir.join("data")))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
        });
    process::start(spec).await
}

/// A Pushgateway keeping its groups in memory.
pub async fn pushgateway() -> Process {
    let spec = Spec::new("pushgateway", require("prometheus-pushgateway"))
        .ready("/-/ready", Duration::from_secs(15))
        .configure(|cmd, port, _| {
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
        });
    process::start(spec).await
}

/// An Alertmanager running the configuration file `config` (copied into its
/// directory), alone: no cluster, silences and notification log in its own
/// directory.
pub async fn alertmanager(config: &Path) -> Process {
    let config = config.to_owned();
    let program = process::require_installed("prometheus-alertmanager", INSTALL_ALERTMANAGER);
    let spec = Spec::new("alertmanager", program)
        .ready("/-/ready", Duration::from_secs(30))
        .configure(move |cmd, port, dir| {
            let path = dir.join("alertmanager.yml");
            std::fs::copy(&config, &path)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", config.display()));
            cmd.arg(arg("--config.file=", &path))
                .arg(arg("--storage.path=", &dir.join("data")))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // An empty address turns clustering (and its gossip port) off.
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn");
        });
    process::start(spec).await
}

fn arg(flag: &str, path: &Path) -> OsString {
    let mut a = OsString::from(flag);
    a.push(path.as_os_str());
    a
}

/// Labels of one series, `__name__` included.
pub type Labels = BTreeMap<String, String>;

/// The `data` of a Prometheus HTTP API answer.
async fn api(
    prometheus: &Process,
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

/// The samples of an instant vector: a query's `data`.
fn instant_vector(promql: &str, data: &serde_json::Value) -> Result<Vec<(Labels, f64)>, String> {
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

/// `/api/v1/query`: every sample of an instant vector.
pub async fn query(prometheus: &Process, promql: &str) -> Result<Vec<(Labels, f64)>, String> {
    let data = api(prometheus, "/api/v1/query", &[("query", promql)]).await?;
    instant_vector(promql, &data)
}

/// `/api/v1/query` at `time` (Unix seconds): every sample of an instant
/// vector, with the value as Prometheus wrote it parsed (`NaN` included).
pub async fn query_at(
    prometheus: &Process,
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
    instant_vector(promql, &data)
}

/// `/api/v1/query` of a range vector (`selector[range]`): each series with
/// its samples as (Unix seconds, value), oldest first.
pub async fn query_samples(
    prometheus: &Process,
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

/// `/api/v1/series`: the label sets of every series matching `selector`.
pub async fn series(prometheus: &Process, selector: &str) -> Result<Vec<Labels>, String> {
    let data = api(prometheus, "/api/v1/series", &[("match[]", selector)]).await?;
    Ok(data.as_array().into_iter().flatten().map(labels).collect())
}

/// `/api/v1/label/<label>/values?match[]=<selector>`: the values `label`
/// takes on the series `selector` matches.
pub async fn label_values(
    prometheus: &Process,
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
