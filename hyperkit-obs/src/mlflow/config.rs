//! [`MlflowConfig`]: MLflow's own environment variables, read the way
//! MLflow's Python client reads them, plus hyperkit-obs's queue settings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{
    ConfigError, CredentialVars, Credentials, credentials, describe_credentials, invalid,
    parse_bool, parse_server_url, percent_decode, redact_userinfo,
};

/// The experiment `#[track_model]` logs to when `MLFLOW_EXPERIMENT_NAME` is
/// not set.
pub const DEFAULT_EXPERIMENT: &str = "hyperkit-model-calls";

/// Where runs go.
#[derive(Clone, PartialEq, Eq)]
pub enum TrackingTarget {
    /// A tracking server's base URL (`http(s)://host:port[/prefix]`), without
    /// credentials.
    Server(String),
    /// A local file store directory (`./mlruns` by default).
    FileStore(PathBuf),
}

impl fmt::Debug for TrackingTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackingTarget::Server(url) => write!(f, "Server({url})"),
            TrackingTarget::FileStore(p) => write!(f, "FileStore({})", p.display()),
        }
    }
}

impl fmt::Display for TrackingTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackingTarget::Server(url) => f.write_str(url),
            TrackingTarget::FileStore(p) => write!(f, "file store {}", p.display()),
        }
    }
}

/// Credentials for a tracking server: `MLFLOW_TRACKING_TOKEN` (bearer), or
/// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (or credentials
/// in the URI: basic).
pub type MlflowAuth = Credentials;

/// The variables a tracking server's credentials are read from.
const CREDENTIALS: CredentialVars = CredentialVars {
    token: "MLFLOW_TRACKING_TOKEN",
    username: "MLFLOW_TRACKING_USERNAME",
    password: "MLFLOW_TRACKING_PASSWORD",
    token_kind: Credentials::Bearer,
    token_example: "<token>",
};

/// How requests to a tracking server are retried: MLflow's
/// `MLFLOW_HTTP_REQUEST_*` variables, with MLflow's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// `MLFLOW_HTTP_REQUEST_MAX_RETRIES` (default 7).
    pub max_retries: u32,
    /// `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` (default 2): retry `n` waits
    /// `factor × 2^(n-1)` seconds, as urllib3 does, at most 120 s.
    pub backoff_factor: f64,
    /// `MLFLOW_HTTP_REQUEST_BACKOFF_JITTER` (default 1.0): up to this many
    /// seconds added at random to each wait.
    pub backoff_jitter: f64,
    /// `MLFLOW_HTTP_REQUEST_TIMEOUT` (default 120 s): one request's limit.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 7,
            backoff_factor: 2.0,
            backoff_jitter: 1.0,
            timeout: Duration::from_secs(120),
        }
    }
}

/// MLflow tracking configuration.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MlflowConfig {
    /// `HYPERKIT_MLFLOW_ENABLED` (default `true`): whether `init()` starts
    /// the exporter that logs every `#[track_model]` call as a run.
    pub enabled: bool,
    /// `MLFLOW_TRACKING_URI`: `http(s)://…` for a server; `file:…`, a path,
    /// or unset for the local file store (default `./mlruns`).
    pub target: TrackingTarget,
    /// `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`PASSWORD`.
    pub auth: Option<MlflowAuth>,
    /// `MLFLOW_TRACKING_INSECURE_TLS` (default `false`): accept any server
    /// certificate.
    pub insecure_tls: bool,
    /// `MLFLOW_HTTP_REQUEST_*`: retries, backoff and timeout.
    pub retry: RetryPolicy,
    /// `MLFLOW_EXPERIMENT_NAME` (default `hyperkit-model-calls`): the
    /// experiment of `#[track_model]` runs.
    pub experiment_name: String,
    /// `HYPERKIT_MLFLOW_QUEUE_CAPACITY` (default 10000): runs waiting for
    /// delivery; a call that finds the queue full is dropped and counted in
    /// `hyperkit_obs_dropped_total{sink="mlflow"}`.
    pub queue_capacity: usize,
    /// `HYPERKIT_MLFLOW_CONCURRENCY` (default 8, at most 64): runs delivered
    /// to a server at once. Enough to hide the wait for each answer
    /// (MLflow's default server, with 4 workers, takes about 50 ms per
    /// request on a kept-alive connection), without slowing a one-worker
    /// server, whose CPU is the bound either way.
    pub concurrency: usize,
    /// `HYPERKIT_MLFLOW_REMEMBERED_RUNS` (default 100000): the most recent
    /// runs whose id the exporter keeps, so that an acceptance recorded after
    /// its call finished ([`record_acceptance`](crate::record_acceptance))
    /// still finds its run; about 100 bytes each. An acceptance for an older
    /// call is not recorded. It also bounds the acceptances kept for calls
    /// that have not finished yet.
    pub remembered_runs: usize,
}

impl Default for MlflowConfig {
    fn default() -> Self {
        MlflowConfig {
            enabled: true,
            target: TrackingTarget::FileStore(PathBuf::from("mlruns")),
            auth: None,
            insecure_tls: false,
            retry: RetryPolicy::default(),
            experiment_name: DEFAULT_EXPERIMENT.to_owned(),
            queue_capacity: 10_000,
            concurrency: 8,
            remembered_runs: 100_000,
        }
    }
}

impl MlflowConfig {
    /// Reads MLflow's variables through `var` (which returns a set,
    /// non-blank variable), as `init()` reads the environment.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = MlflowConfig::default();
        if let Some(v) = var("HYPERKIT_MLFLOW_ENABLED") {
            c.enabled = parse_bool("HYPERKIT_MLFLOW_ENABLED", &v)?;
        }
        let mut uri_auth = None;
        if let Some(v) = var("MLFLOW_TRACKING_URI") {
            let (target, auth) = parse_uri(&v)?;
            c.target = target;
            uri_auth = auth;
        }
        c.auth = credentials(&var, CREDENTIALS, uri_auth)?;
        if let Some(v) = var("MLFLOW_TRACKING_INSECURE_TLS") {
            c.insecure_tls = parse_bool("MLFLOW_TRACKING_INSECURE_TLS", &v)?;
        }
        if let Some(v) = var("MLFLOW_HTTP_REQUEST_MAX_RETRIES") {
            c.retry.max_retries = match v.trim().parse::<u32>() {
                Ok(n) if n <= 20 => n,
                _ => {
                    return Err(invalid(
                        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                        &v,
                        "must be a whole number from 0 to 20",
                        "7",
                    ));
                }
            };
        }
        if let Some(v) = var("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR") {
            c.retry.backoff_factor =
                parse_seconds("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", &v, 0.0, 120.0, "2")?;
        }
        if let Some(v) = var("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER") {
            c.retry.backoff_jitter =
                parse_seconds("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", &v, 0.0, 60.0, "1.0")?;
        }
        if let Some(v) = var("MLFLOW_HTTP_REQUEST_TIMEOUT") {
            let secs = parse_seconds("MLFLOW_HTTP_REQUEST_TIMEOUT", &v, 0.001, 3600.0, "120")?;
            c.retry.timeout = Duration::from_secs_f64(secs);
        }
        if let Some(v) = var("MLFLOW_EXPERIMENT_NAME") {
            let v = v.trim();
            if v.chars().count() > 500 || v.chars().any(char::is_control) {
                return Err(invalid(
                    "MLFLOW_EXPERIMENT_NAME",
                    v,
                    "must be at most 500 characters with no control characters",
                    DEFAULT_EXPERIMENT,
                ));
            }
            c.experiment_name = v.to_owned();
        }
        if let Some(v) = var("HYPERKIT_MLFLOW_QUEUE_CAPACITY") {
            c.queue_capacity = parse_count("HYPERKIT_MLFLOW_QUEUE_CAPACITY", &v, "10000")?;
        }
        if let Some(v) = var("HYPERKIT_MLFLOW_CONCURRENCY") {
            c.concurrency = parse_count("HYPERKIT_MLFLOW_CONCURRENCY", &v, "8")?.min(64);
        }
        if let Some(v) = var("HYPERKIT_MLFLOW_REMEMBERED_RUNS") {
            c.remembered_runs = parse_count("HYPERKIT_MLFLOW_REMEMBERED_RUNS", &v, "100000")?;
        }
        Ok(c)
    }

    /// The values as `(variable, value)` pairs, secrets redacted.
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let mut described = vec![
            ("HYPERKIT_MLFLOW_ENABLED", self.enabled.to_string()),
            ("MLFLOW_TRACKING_URI", self.target.to_string()),
        ];
        described.extend(describe_credentials(CREDENTIALS, self.auth.as_ref()));
        described.extend([
            (
                "MLFLOW_TRACKING_INSECURE_TLS",
                self.insecure_tls.to_string(),
            ),
            (
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                self.retry.max_retries.to_string(),
            ),
            (
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                self.retry.backoff_factor.to_string(),
            ),
            (
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
                self.retry.backoff_jitter.to_string(),
            ),
            (
                "MLFLOW_HTTP_REQUEST_TIMEOUT",
                self.retry.timeout.as_secs_f64().to_string(),
            ),
            ("MLFLOW_EXPERIMENT_NAME", self.experiment_name.clone()),
            (
                "HYPERKIT_MLFLOW_QUEUE_CAPACITY",
                self.queue_capacity.to_string(),
            ),
            ("HYPERKIT_MLFLOW_CONCURRENCY", self.concurrency.to_string()),
            (
                "HYPERKIT_MLFLOW_REMEMBERED_RUNS",
                self.remembered_runs.to_string(),
            ),
        ]);
        described
    }

    /// The secret values, for scrubbing.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        self.auth.iter().map(Credentials::secret).collect()
    }
}

/// Reads `MLFLOW_TRACKING_URI`. Credentials in an `http(s)` URI become basic
/// auth and leave the URL, so the URL can be logged.
fn parse_uri(v: &str) -> Result<(TrackingTarget, Option<MlflowAuth>), ConfigError> {
    const VAR: &str = "MLFLOW_TRACKING_URI";
    let v = v.trim();
    let lower = v.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let url = parse_server_url(VAR, v, "http://127.0.0.1:5000")?;
        let auth = url
            .credentials
            .map(|(username, password)| Credentials::Basic { username, password });
        return Ok((TrackingTarget::Server(url.base), auth));
    }
    if let Some(rest) = lower.strip_prefix("file:") {
        let path = &v[v.len() - rest.len()..];
        // file:///abs, file://localhost/abs, file:relative
        let path = path
            .strip_prefix("//localhost")
            .or_else(|| path.strip_prefix("//"))
            .unwrap_or(path);
        if path.is_empty() {
            return Err(invalid(VAR, v, "names no directory", "file:./mlruns"));
        }
        let path = percent_decode(path)
            .ok_or_else(|| invalid(VAR, v, "is badly escaped", "file:./mlruns"))?;
        return Ok((TrackingTarget::FileStore(PathBuf::from(path)), None));
    }
    if let Some((scheme, _)) = v.split_once("://").or_else(|| {
        v.split_once(':').filter(|(s, _)| {
            s.len() > 1 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
        })
    }) {
        return Err(invalid(
            VAR,
            &redact_userinfo(v),
            format!(
                "uses the scheme `{scheme}`, which hyperkit-obs does not speak: give a tracking \
                 server's http(s) URL (e.g. `mlflow server --backend-store-uri {scheme}:…` in \
                 front of that store) or a file store path"
            ),
            "http://127.0.0.1:5000",
        ));
    }
    // A plain path, as MLflow also accepts.
    Ok((TrackingTarget::FileStore(PathBuf::from(v)), None))
}

fn parse_seconds(
    variable: &'static str,
    v: &str,
    min: f64,
    max: f64,
    example: &'static str,
) -> Result<f64, ConfigError> {
    match v.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (min..=max).contains(&x) => Ok(x),
        _ => Err(invalid(
            variable,
            v,
            format!("must be a number of seconds from {min} to {max}"),
            example,
        )),
    }
}

/// A queue size or a count: a whole number from 1 to 1,000,000.
fn parse_count(
    variable: &'static str,
    v: &str,
    example: &'static str,
) -> Result<usize, ConfigError> {
    crate::config::parse_number(variable, v, 1, 1_000_000, example).map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn from(vars: &[(&str, &str)]) -> Result<MlflowConfig, ConfigError> {
        MlflowConfig::from_lookup(crate::config::lookup(vars))
    }

    #[test]
    fn unset_means_the_local_file_store_with_mlflow_defaults() {
        let c = from(&[]).unwrap();
        assert_eq!(c.target, TrackingTarget::FileStore(PathBuf::from("mlruns")));
        assert_eq!(c.retry, RetryPolicy::default());
        assert_eq!(c.experiment_name, DEFAULT_EXPERIMENT);
    }

    #[test]
    fn uris_are_read_as_mlflow_reads_them() {
        let c = from(&[("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")]).unwrap();
        assert_eq!(
            c.target,
            TrackingTarget::Server("http://127.0.0.1:5000".into())
        );
        let c = from(&[("MLFLOW_TRACKING_URI", "file:///tmp/ml%20runs")]).unwrap();
        assert_eq!(c.target, TrackingTarget::FileStore("/tmp/ml runs".into()));
        let c = from(&[("MLFLOW_TRACKING_URI", "file:./here")]).unwrap();
        assert_eq!(c.target, TrackingTarget::FileStore("./here".into()));
        let c = from(&[("MLFLOW_TRACKING_URI", "./there")]).unwrap();
        assert_eq!(c.target, TrackingTarget::FileStore("./there".into()));
    }

    #[test]
    fn credentials_in_the_uri_become_basic_auth_and_never_show() {
        let c = from(&[(
            "MLFLOW_TRACKING_URI",
            "https://ann:s%40cret@ml.example.com/p",
        )])
        .unwrap();
        assert_eq!(
            c.target,
            TrackingTarget::Server("https://ml.example.com/p".into())
        );
        assert_eq!(
            c.auth,
            Some(MlflowAuth::Basic {
                username: "ann".into(),
                password: Secret::new("s@cret")
            })
        );
        let shown = format!("{c:?} {:?}", c.describe());
        assert!(
            !shown.contains("s@cret") && !shown.contains("s%40cret"),
            "{shown}"
        );
        let c = from(&[("MLFLOW_TRACKING_TOKEN", "tok-123456")]).unwrap();
        assert!(!format!("{c:?} {:?}", c.describe()).contains("tok-123456"));
        let c = from(&[("HYPERKIT_MLFLOW_REMEMBERED_RUNS", "500")]).unwrap();
        assert_eq!(c.remembered_runs, 500);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("MLFLOW_TRACKING_URI", "databricks://profile"),
            ("MLFLOW_TRACKING_URI", "sqlite:///x.db"),
            ("MLFLOW_TRACKING_URI", "http://"),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "many"),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "-1"),
            ("MLFLOW_TRACKING_INSECURE_TLS", "maybe"),
            ("HYPERKIT_MLFLOW_QUEUE_CAPACITY", "0"),
            ("HYPERKIT_MLFLOW_REMEMBERED_RUNS", "lots"),
        ] {
            let e = from(&[(var, value)]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{var}=")), "{var}: {e}");
        }
        let e = from(&[("MLFLOW_TRACKING_URI", "postgresql://u:pw@db/x")])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw"), "{e}");
        let e = from(&[("MLFLOW_TRACKING_USERNAME", "u")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("MLFLOW_TRACKING_PASSWORD="), "{e}");
    }
}
