//! [`MonitoringConfig`]: what hyperkit-obs reads from the environment and an
//! optional TOML file, validated before anything starts.
//!
//! Environment variables win over the file; the file (named by
//! `HYPERKIT_CONFIG`) wins over the defaults. Every error names the variable
//! (or file key), says what is wrong with the value and shows a good one. No
//! secret value is ever printed, by an error or by `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::metrics::DEFAULT_MAX_LABEL_VALUES;

/// Default address of the observability HTTP endpoint.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// The effective configuration of hyperkit-obs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MonitoringConfig {
    /// `HYPERKIT_SERVICE_NAME`: the `service.name` of logs and the `job` of
    /// pushed metrics. Default: the executable's file name.
    pub service_name: String,
    /// `HYPERKIT_ENVIRONMENT`: deployment environment (`production`,
    /// `staging`, …). Default: unset.
    pub environment: Option<String>,
    /// `HYPERKIT_MAX_LABEL_VALUES`: distinct values one runtime-fed label
    /// keeps before new ones are recorded as `__overflow__`. Default 1000.
    pub max_label_values: usize,
    /// `HYPERKIT_METRICS_ADDR`: where the `/metrics` and health endpoints
    /// listen. Default `127.0.0.1:9464`.
    pub metrics_addr: SocketAddr,
    /// `HYPERKIT_DATA_DIR`: where embedded stores keep their files. Default
    /// `./hyperkit-data`.
    pub data_dir: PathBuf,
    /// `RUST_LOG`: the log filter, in `tracing-subscriber`'s `EnvFilter`
    /// syntax. Default `info`.
    pub log_filter: String,
    /// `HYPERKIT_METRICS_TOKEN` (bearer) or `HYPERKIT_METRICS_USERNAME` and
    /// `HYPERKIT_METRICS_PASSWORD` (basic): protection of `/metrics`.
    /// Default: none.
    pub metrics_auth: Option<MetricsAuth>,
    /// `HYPERKIT_HEALTH_TIMEOUT_MS`: how long one readiness check may take.
    /// Default 2000.
    pub health_timeout: Duration,
    /// `HYPERKIT_HEALTH_CACHE_MS`: how long a readiness check's result is
    /// reused. Default 1000.
    pub health_cache: Duration,
    /// `HYPERKIT_CONFIG`: the TOML file the values came from, if any.
    pub config_file: Option<PathBuf>,
    /// Error and panic reporting to Sentry (`SENTRY_*`,
    /// `HYPERKIT_SENTRY_*`). Off unless `SENTRY_DSN` is set.
    pub sentry: SentryConfig,
    /// MLflow tracking of model calls (`MLFLOW_*`, `HYPERKIT_MLFLOW_*`).
    /// Default: on, into the local file store `./mlruns`.
    pub mlflow: crate::mlflow::MlflowConfig,
    /// `ELASTICSEARCH_URL` and `HYPERKIT_ES_*`: ship logs to Elasticsearch.
    /// Default: off.
    pub elasticsearch: Option<crate::logs::elastic::ElasticsearchConfig>,
    /// `LOGSTASH_URL` and `HYPERKIT_LOGSTASH_*`: ship logs to a Logstash
    /// `tcp` input. Default: off.
    pub logstash: Option<crate::logs::logstash::LogstashConfig>,
    /// Log format and the local log store (`HYPERKIT_LOG_*`).
    pub logs: crate::logs::LogsConfig,
}

/// Where and what hyperkit-obs reports to Sentry. Read from the environment
/// only: a DSN does not belong in a file.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SentryConfig {
    /// `SENTRY_DSN`: the project's DSN. Unset (the default) means nothing is
    /// sent and nothing is installed.
    pub dsn: Option<Secret>,
    /// `SENTRY_ENVIRONMENT`: the event's environment. Default:
    /// `HYPERKIT_ENVIRONMENT` when set, else Sentry's default (`production`
    /// or `development`).
    pub environment: Option<String>,
    /// `SENTRY_RELEASE`: the event's release. Default: what
    /// [`Builder::release`](crate::Builder::release) gave, else unset.
    pub release: Option<String>,
    /// `HYPERKIT_SENTRY_SAMPLE_RATE`: the share of error events sent, from
    /// 0.0 to 1.0. Default 1.0.
    pub sample_rate: f32,
    /// `HYPERKIT_SENTRY_SEND_PROMPTS`: attach model prompts and outputs
    /// (fields named `prompt`, `completion`, `input`, `output`, `response`,
    /// `messages`, …) to events and breadcrumbs. Default `false`: they are
    /// removed.
    pub send_prompts: bool,
}

impl Default for SentryConfig {
    fn default() -> Self {
        SentryConfig {
            dsn: None,
            environment: None,
            release: None,
            sample_rate: 1.0,
            send_prompts: false,
        }
    }
}

impl SentryConfig {
    /// The DSN with its keys replaced by `***`, or `(unset)`.
    ///
    /// ```
    /// use hyperkit_obs::config::{SentryConfig, Secret};
    ///
    /// let mut sentry = SentryConfig::default();
    /// assert_eq!(sentry.redacted_dsn(), "(unset)");
    /// sentry.dsn = Some(Secret::new("https://abc123@o1.ingest.sentry.io/42"));
    /// assert_eq!(sentry.redacted_dsn(), "https://***@o1.ingest.sentry.io/42");
    /// ```
    pub fn redacted_dsn(&self) -> String {
        let Some(dsn) = &self.dsn else {
            return "(unset)".to_owned();
        };
        match dsn.expose().parse::<::sentry::types::Dsn>() {
            Ok(d) => {
                let port = if d.port() == d.scheme().default_port() {
                    String::new()
                } else {
                    format!(":{}", d.port())
                };
                format!(
                    "{}://***@{}{port}{}{}",
                    d.scheme(),
                    d.host(),
                    d.path(),
                    d.project_id()
                )
            }
            Err(_) => "***".to_owned(),
        }
    }
}

/// A secret value: shown as `***` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Credentials a scraper must present to read `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic <base64(username:password)>`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            service_name: default_service_name(),
            environment: None,
            max_label_values: DEFAULT_MAX_LABEL_VALUES,
            metrics_addr: DEFAULT_METRICS_ADDR
                .parse()
                .unwrap_or_else(|e| unreachable!("default address parses: {e}")),
            data_dir: PathBuf::from("hyperkit-data"),
            log_filter: "info".to_owned(),
            metrics_auth: None,
            health_timeout: crate::health::DEFAULT_TIMEOUT,
            health_cache: crate::health::DEFAULT_CACHE,
            config_file: None,
            sentry: SentryConfig::default(),
            mlflow: crate::mlflow::MlflowConfig::default(),
            elasticsearch: None,
            logstash: None,
            logs: crate::logs::LogsConfig::default(),
        }
    }
}

fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hyperkit".to_owned())
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable (or file key) holds a value that cannot be used.
    #[error("{variable}={value:?} is invalid: {problem}; for example {variable}={example}")]
    Invalid {
        /// The variable or file key.
        variable: &'static str,
        /// The value as given (a secret's value is never kept here).
        value: String,
        /// What is wrong with it.
        problem: String,
        /// A value that would be accepted.
        example: &'static str,
    },
    /// The configuration file could not be read.
    #[error("HYPERKIT_CONFIG={path:?} cannot be read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this configuration.
    #[error("HYPERKIT_CONFIG={path:?} is invalid: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, naming the key.
        message: String,
    },
}

/// The keys a configuration file may hold: the variable names without the
/// `HYPERKIT_` prefix, in lower case.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    service_name: Option<String>,
    environment: Option<String>,
    max_label_values: Option<toml::Value>,
    metrics_addr: Option<String>,
    data_dir: Option<String>,
    log_filter: Option<String>,
}

impl MonitoringConfig {
    /// Reads the configuration from the process environment (and the file it
    /// names in `HYPERKIT_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's
    /// value; lets tests and embedders supply their own environment.
    ///
    /// ```
    /// use hyperkit_obs::MonitoringConfig;
    ///
    /// let err = MonitoringConfig::from_lookup(|name| {
    ///     (name == "HYPERKIT_MAX_LABEL_VALUES").then(|| "lots".to_owned())
    /// })
    /// .unwrap_err();
    /// assert!(err.to_string().starts_with("HYPERKIT_MAX_LABEL_VALUES=\"lots\" is invalid"));
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = MonitoringConfig::default();
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        if let Some(path) = var("HYPERKIT_CONFIG") {
            let path = PathBuf::from(path);
            config.apply_file(&path)?;
            config.config_file = Some(path);
        }
        if let Some(v) = var("HYPERKIT_SERVICE_NAME") {
            config.service_name = parse_service_name("HYPERKIT_SERVICE_NAME", &v)?;
        }
        if let Some(v) = var("HYPERKIT_ENVIRONMENT") {
            config.environment = Some(parse_service_name("HYPERKIT_ENVIRONMENT", &v)?);
        }
        if let Some(v) = var("HYPERKIT_MAX_LABEL_VALUES") {
            config.max_label_values = parse_limit("HYPERKIT_MAX_LABEL_VALUES", &v)?;
        }
        if let Some(v) = var("HYPERKIT_METRICS_ADDR") {
            config.metrics_addr = parse_addr("HYPERKIT_METRICS_ADDR", &v)?;
        }
        if let Some(v) = var("HYPERKIT_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("RUST_LOG") {
            config.log_filter = parse_filter("RUST_LOG", &v)?;
        }
        if let Some(v) = var("HYPERKIT_HEALTH_TIMEOUT_MS") {
            config.health_timeout = parse_millis("HYPERKIT_HEALTH_TIMEOUT_MS", &v, "2000")?;
        }
        if let Some(v) = var("HYPERKIT_HEALTH_CACHE_MS") {
            config.health_cache = parse_millis("HYPERKIT_HEALTH_CACHE_MS", &v, "1000")?;
        }
        if let Some(v) = var("SENTRY_DSN") {
            config.sentry.dsn = Some(parse_dsn("SENTRY_DSN", v)?);
        }
        if let Some(v) = var("SENTRY_ENVIRONMENT") {
            config.sentry.environment = Some(parse_service_name("SENTRY_ENVIRONMENT", &v)?);
        }
        if let Some(v) = var("SENTRY_RELEASE") {
            config.sentry.release = Some(parse_service_name("SENTRY_RELEASE", &v)?);
        }
        if let Some(v) = var("HYPERKIT_SENTRY_SAMPLE_RATE") {
            config.sentry.sample_rate = parse_rate("HYPERKIT_SENTRY_SAMPLE_RATE", &v)?;
        }
        if let Some(v) = var("HYPERKIT_SENTRY_SEND_PROMPTS") {
            config.sentry.send_prompts = parse_bool("HYPERKIT_SENTRY_SEND_PROMPTS", &v)?;
        }
        config.mlflow = crate::mlflow::MlflowConfig::from_lookup(var)?;
        config.elasticsearch = crate::logs::elastic::ElasticsearchConfig::from_lookup(var)?;
        config.logstash = crate::logs::logstash::LogstashConfig::from_lookup(var)?;
        config.logs = crate::logs::LogsConfig::from_lookup(var)?;
        let token = var("HYPERKIT_METRICS_TOKEN");
        let user = var("HYPERKIT_METRICS_USERNAME");
        let password = var("HYPERKIT_METRICS_PASSWORD");
        config.metrics_auth = match (token, user, password) {
            (None, None, None) => None,
            (Some(t), None, None) => Some(MetricsAuth::Bearer(Secret::new(t))),
            (None, Some(username), Some(p)) => Some(MetricsAuth::Basic {
                username,
                password: Secret::new(p),
            }),
            (Some(_), _, _) => {
                return Err(invalid(
                    "HYPERKIT_METRICS_TOKEN",
                    "***",
                    "cannot be combined with HYPERKIT_METRICS_USERNAME/PASSWORD; choose bearer or basic auth",
                    "<a long random token>",
                ));
            }
            (None, Some(_), None) => {
                return Err(invalid(
                    "HYPERKIT_METRICS_PASSWORD",
                    "",
                    "is required when HYPERKIT_METRICS_USERNAME is set",
                    "<the scraper's password>",
                ));
            }
            (None, None, Some(_)) => {
                return Err(invalid(
                    "HYPERKIT_METRICS_USERNAME",
                    "",
                    "is required when HYPERKIT_METRICS_PASSWORD is set",
                    "prometheus",
                ));
            }
        };
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if let Some(v) = file.service_name {
            self.service_name = parse_service_name("service_name", &v)?;
        }
        if let Some(v) = file.environment {
            self.environment = Some(parse_service_name("environment", &v)?);
        }
        if let Some(v) = file.max_label_values {
            let text = match &v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            self.max_label_values = parse_limit("max_label_values", &text)?;
        }
        if let Some(v) = file.metrics_addr {
            self.metrics_addr = parse_addr("metrics_addr", &v)?;
        }
        if let Some(v) = file.data_dir {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = file.log_filter {
            self.log_filter = parse_filter("log_filter", &v)?;
        }
        Ok(())
    }

    /// The effective configuration as `(variable, value)` pairs, secrets
    /// redacted, for `hyperkit-obs check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut described = vec![
            (
                "HYPERKIT_CONFIG",
                display_opt(self.config_file.as_deref().map(Path::display)),
            ),
            ("HYPERKIT_SERVICE_NAME", self.service_name.clone()),
            (
                "HYPERKIT_ENVIRONMENT",
                display_opt(self.environment.as_deref()),
            ),
            (
                "HYPERKIT_MAX_LABEL_VALUES",
                self.max_label_values.to_string(),
            ),
            ("HYPERKIT_METRICS_ADDR", self.metrics_addr.to_string()),
            ("HYPERKIT_DATA_DIR", self.data_dir.display().to_string()),
            ("RUST_LOG", self.log_filter.clone()),
            (
                "HYPERKIT_METRICS_TOKEN",
                match &self.metrics_auth {
                    Some(MetricsAuth::Bearer(t)) => t.to_string(),
                    _ => "(unset)".to_owned(),
                },
            ),
            (
                "HYPERKIT_METRICS_USERNAME",
                match &self.metrics_auth {
                    Some(MetricsAuth::Basic { username, .. }) => username.clone(),
                    _ => "(unset)".to_owned(),
                },
            ),
            (
                "HYPERKIT_METRICS_PASSWORD",
                match &self.metrics_auth {
                    Some(MetricsAuth::Basic { password, .. }) => password.to_string(),
                    _ => "(unset)".to_owned(),
                },
            ),
            (
                "HYPERKIT_HEALTH_TIMEOUT_MS",
                self.health_timeout.as_millis().to_string(),
            ),
            (
                "HYPERKIT_HEALTH_CACHE_MS",
                self.health_cache.as_millis().to_string(),
            ),
            ("SENTRY_DSN", self.sentry.redacted_dsn()),
            (
                "SENTRY_ENVIRONMENT",
                display_opt(self.sentry.environment.as_deref()),
            ),
            (
                "SENTRY_RELEASE",
                display_opt(self.sentry.release.as_deref()),
            ),
            (
                "HYPERKIT_SENTRY_SAMPLE_RATE",
                self.sentry.sample_rate.to_string(),
            ),
            (
                "HYPERKIT_SENTRY_SEND_PROMPTS",
                self.sentry.send_prompts.to_string(),
            ),
        ];
        described.extend(self.logs.describe());
        described.extend(self.mlflow.describe());
        match &self.elasticsearch {
            Some(es) => described.extend(es.describe()),
            None => described.push(("ELASTICSEARCH_URL", "(unset)".to_owned())),
        }
        match &self.logstash {
            Some(ls) => described.extend(ls.describe()),
            None => described.push(("LOGSTASH_URL", "(unset)".to_owned())),
        }
        described
    }

    /// Every secret value the configuration holds, for the scrubbing of
    /// error reports.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        let mut secrets = Vec::new();
        match &self.metrics_auth {
            Some(MetricsAuth::Bearer(t)) => secrets.push(t.expose()),
            Some(MetricsAuth::Basic { password, .. }) => secrets.push(password.expose()),
            None => {}
        }
        if let Some(dsn) = &self.sentry.dsn {
            secrets.push(dsn.expose());
        }
        secrets.extend(self.mlflow.secrets());
        if let Some(es) = &self.elasticsearch {
            secrets.extend(es.secrets());
        }
        secrets
    }
}

fn display_opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "(unset)".to_owned(), |v| v.to_string())
}

/// The error for `variable` holding `value`: what is wrong and a value that
/// would do. Every configuration parser of the crate builds its errors here.
pub(crate) fn invalid(
    variable: &'static str,
    value: &str,
    problem: impl Into<String>,
    example: &'static str,
) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_owned(),
        problem: problem.into(),
        example,
    }
}

fn parse_service_name(variable: &'static str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    if v.len() > 128 || v.chars().any(char::is_control) {
        return Err(invalid(
            variable,
            v,
            "must be at most 128 characters with no control characters",
            "build-agent",
        ));
    }
    Ok(v.to_owned())
}

fn parse_limit(variable: &'static str, v: &str) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Ok(_) => Err(invalid(
            variable,
            v,
            "must be between 1 and 1000000",
            "1000",
        )),
        Err(_) => Err(invalid(variable, v, "must be a whole number", "1000")),
    }
}

fn parse_millis(
    variable: &'static str,
    v: &str,
    example: &'static str,
) -> Result<Duration, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(ms) if (1..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(
            variable,
            v,
            "must be a number of milliseconds from 1 to 600000",
            example,
        )),
    }
}

fn parse_dsn(variable: &'static str, v: String) -> Result<Secret, ConfigError> {
    let v = v.trim();
    // The parser's messages never quote the input, so the key stays out of
    // the error.
    match v.parse::<::sentry::types::Dsn>() {
        Ok(_) => Ok(Secret::new(v)),
        Err(e) => Err(invalid(
            variable,
            "***",
            format!("is not a Sentry DSN ({e})"),
            "https://<public key>@o0.ingest.sentry.io/<project id>",
        )),
    }
}

fn parse_rate(variable: &'static str, v: &str) -> Result<f32, ConfigError> {
    match v.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(invalid(
            variable,
            v,
            "must be a number from 0.0 to 1.0",
            "0.25",
        )),
    }
}

/// `true`/`false` as people write them (`1`, `yes`, `on`, …).
/// A whole number from `min` to `max`.
pub(crate) fn parse_number(
    variable: &'static str,
    v: &str,
    min: u64,
    max: u64,
    example: &'static str,
) -> Result<u64, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            variable,
            v,
            format!("must be a whole number from {min} to {max}"),
            example,
        )),
    }
}

pub(crate) fn parse_bool(variable: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(variable, v, "must be true or false", "true")),
    }
}

fn parse_addr(variable: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim().parse::<SocketAddr>().map_err(|_| {
        invalid(
            variable,
            v,
            "must be an IP address and port (host names are not resolved)",
            "127.0.0.1:9464",
        )
    })
}

fn parse_filter(variable: &'static str, v: &str) -> Result<String, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(v)
        .map(|_| v.trim().to_owned())
        .map_err(|e| {
            invalid(
                variable,
                v,
                format!("is not a log filter ({e})"),
                "info,my_crate=debug",
            )
        })
}

/// A server's URL read from a variable: the base (no credentials, no
/// trailing slash) and the credentials it held, for basic auth.
pub(crate) struct ServerUrl {
    /// `http(s)://host[:port][/prefix]`.
    pub(crate) base: String,
    /// The user name and password that were in the URL.
    pub(crate) credentials: Option<(String, Secret)>,
}

/// Reads `http(s)://[user:pass@]host[:port][/prefix]`. Credentials leave the
/// URL (so it can be shown) and are percent-decoded; no error shows them.
pub(crate) fn parse_server_url(
    variable: &'static str,
    v: &str,
    example: &'static str,
) -> Result<ServerUrl, ConfigError> {
    let v = v.trim();
    let shown = redact_userinfo(v);
    let mut url = reqwest::Url::parse(v)
        .map_err(|e| invalid(variable, &shown, format!("is not a URL ({e})"), example))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            variable,
            &shown,
            "must start with http:// or https://",
            example,
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(variable, &shown, "has no host", example));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            variable,
            &shown,
            "must not have a query or fragment",
            example,
        ));
    }
    let credentials = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| invalid(variable, &shown, "has badly escaped credentials", example))
        };
        let username = decode(url.username())?;
        let password = decode(url.password().unwrap_or(""))?;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some((username, Secret::new(password)))
    };
    Ok(ServerUrl {
        base: url.as_str().trim_end_matches('/').to_owned(),
        credentials,
    })
}

/// `scheme://user:pass@host` → `scheme://***@host`, for error messages.
pub(crate) fn redact_userinfo(v: &str) -> String {
    match (v.find("://"), v.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &v[..s + 3], &v[at..]),
        _ => v.to_owned(),
    }
}

/// Decodes `%XX` escapes; `None` when one is malformed or the result is not
/// UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<MonitoringConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        MonitoringConfig::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn no_variables_give_the_documented_defaults() {
        let c = from(&[]).unwrap();
        assert_eq!(c.max_label_values, 1000);
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(c.log_filter, "info");
    }

    #[test]
    fn a_bad_value_names_the_variable_and_shows_a_good_one() {
        let e = from(&[("HYPERKIT_METRICS_ADDR", "localhost")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("HYPERKIT_METRICS_ADDR=\"localhost\""), "{e}");
        assert!(
            e.contains("for example HYPERKIT_METRICS_ADDR=127.0.0.1:9464"),
            "{e}"
        );
        let e = from(&[("HYPERKIT_MAX_LABEL_VALUES", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 1 and 1000000"), "{e}");
        let e = from(&[("RUST_LOG", "info,[")]).unwrap_err().to_string();
        assert!(e.starts_with("RUST_LOG="), "{e}");
    }

    #[test]
    fn the_file_is_read_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("hyperkit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("obs.toml");
        std::fs::write(
            &path,
            "service_name = \"from-file\"\nmax_label_values = 50\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = from(&[("HYPERKIT_CONFIG", p), ("HYPERKIT_MAX_LABEL_VALUES", "70")]).unwrap();
        assert_eq!(
            (c.service_name.as_str(), c.max_label_values),
            ("from-file", 70)
        );

        std::fs::write(&path, "servce_name = \"typo\"\n").unwrap();
        let e = from(&[("HYPERKIT_CONFIG", p)]).unwrap_err().to_string();
        assert!(e.contains("servce_name"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_never_appear_in_debug_errors_or_describe() {
        let c = from(&[
            ("HYPERKIT_METRICS_USERNAME", "prom"),
            ("HYPERKIT_METRICS_PASSWORD", "hunter2"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", c.describe()).contains("hunter2"));
        let e = from(&[
            ("HYPERKIT_METRICS_TOKEN", "s3cret"),
            ("HYPERKIT_METRICS_USERNAME", "x"),
        ])
        .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = from(&[("HYPERKIT_METRICS_USERNAME", "prom")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("HYPERKIT_METRICS_PASSWORD"), "{e}");
    }

    #[test]
    fn sentry_is_off_by_default_and_read_from_its_variables() {
        let c = from(&[]).unwrap();
        assert_eq!(c.sentry, SentryConfig::default());
        assert_eq!(c.sentry.sample_rate, 1.0);
        assert!(!c.sentry.send_prompts);

        let c = from(&[
            ("SENTRY_DSN", "https://k3y@o1.ingest.sentry.io/42"),
            ("SENTRY_ENVIRONMENT", "staging"),
            ("SENTRY_RELEASE", "build-agent@1.2.3"),
            ("HYPERKIT_SENTRY_SAMPLE_RATE", "0.5"),
            ("HYPERKIT_SENTRY_SEND_PROMPTS", "true"),
        ])
        .unwrap();
        assert_eq!(c.sentry.environment.as_deref(), Some("staging"));
        assert_eq!(c.sentry.release.as_deref(), Some("build-agent@1.2.3"));
        assert_eq!(c.sentry.sample_rate, 0.5);
        assert!(c.sentry.send_prompts);
        assert_eq!(
            c.sentry.dsn.as_ref().map(Secret::expose),
            Some("https://k3y@o1.ingest.sentry.io/42")
        );
    }

    #[test]
    fn a_bad_sentry_value_names_the_variable_and_never_echoes_the_dsn() {
        let e = from(&[("SENTRY_DSN", "https://k3y-s3cret@o1.ingest.sentry.io/")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SENTRY_DSN=\"***\" is invalid"), "{e}");
        assert!(!e.contains("k3y-s3cret"), "{e}");
        let e = from(&[("SENTRY_DSN", "k3y-s3cret")])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("k3y-s3cret"), "{e}");
        let e = from(&[("HYPERKIT_SENTRY_SAMPLE_RATE", "1.5")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 0.0 to 1.0"), "{e}");
        let e = from(&[("HYPERKIT_SENTRY_SEND_PROMPTS", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn describe_shows_the_sentry_host_but_not_its_key() {
        let c = from(&[("SENTRY_DSN", "http://k3y-s3cret@127.0.0.1:9000/42")]).unwrap();
        let described = format!("{:?}", c.describe());
        assert!(!described.contains("k3y-s3cret"), "{described}");
        assert!(!format!("{c:?}").contains("k3y-s3cret"));
        let dsn = c.describe().into_iter().find(|(k, _)| *k == "SENTRY_DSN");
        assert_eq!(
            dsn.map(|(_, v)| v).as_deref(),
            Some("http://***@127.0.0.1:9000/42")
        );
    }
}
