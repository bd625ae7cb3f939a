//! [`MonitoringConfig`]: what hyperkit-obs reads from the environment and an
//! optional TOML file, validated before anything starts. This is the one
//! place that knows every sink: each sink reads its own variables
//! (`MlflowConfig::from_lookup`, …) with the helpers of [`crate::config`].
//!
//! Environment variables win over the file; the file (named by
//! `HYPERKIT_CONFIG`) wins over the defaults. Every error names the variable
//! (or file key), says what is wrong with the value and shows a good one. A
//! variable that configures a sink compiled out of this build is an error
//! naming the cargo feature to enable, never silently ignored. No secret
//! value is ever printed, by an error or by `Debug`.
//!
//! This module holds the configuration, its defaults and the environment;
//! `file` reads the TOML file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{
    ConfigError, CredentialVars, Credentials, credentials, describe_credentials, parse_addr,
    parse_filter, parse_limit, parse_millis, parse_service_name,
};
use crate::metrics::{DEFAULT_MAX_LABEL_SETS, DEFAULT_MAX_LABEL_VALUES};

#[cfg(feature = "config-file")]
mod file;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

/// Default address of the observability HTTP endpoint.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
/// Default for how long a readiness check may take before it counts as
/// failed (`HYPERKIT_HEALTH_TIMEOUT_MS`).
pub(crate) const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default for how long a readiness check's result is reused
/// (`HYPERKIT_HEALTH_CACHE_MS`).
pub(crate) const DEFAULT_HEALTH_CACHE: Duration = Duration::from_secs(1);

/// The credentials a scraper must present to read `/metrics`.
const METRICS_CREDENTIALS: CredentialVars = CredentialVars {
    token: "HYPERKIT_METRICS_TOKEN",
    username: "HYPERKIT_METRICS_USERNAME",
    password: "HYPERKIT_METRICS_PASSWORD",
    token_kind: Credentials::Bearer,
    token_example: "<a long random token>",
};

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
    /// `HYPERKIT_MAX_LABEL_SETS`: label sets one family keeps before a new
    /// tuple is recorded with its runtime labels as `__overflow__`. Default
    /// 10,000.
    pub max_label_sets: usize,
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
    pub metrics_auth: Option<Credentials>,
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
    #[cfg(feature = "sentry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentry")))]
    pub sentry: crate::sentry::SentryConfig,
    /// MLflow tracking of model calls (`MLFLOW_*`, `HYPERKIT_MLFLOW_*`).
    /// Default: on, into the local file store `./mlruns`.
    #[cfg(feature = "mlflow")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mlflow")))]
    pub mlflow: crate::mlflow::MlflowConfig,
    /// `ELASTICSEARCH_URL` and `HYPERKIT_ES_*`: ship logs to Elasticsearch.
    /// Default: off.
    #[cfg(feature = "elasticsearch")]
    #[cfg_attr(docsrs, doc(cfg(feature = "elasticsearch")))]
    pub elasticsearch: Option<crate::logs::elastic::ElasticsearchConfig>,
    /// `LOGSTASH_URL` and `HYPERKIT_LOGSTASH_*`: ship logs to a Logstash
    /// `tcp` input. Default: off.
    #[cfg(feature = "logstash")]
    #[cfg_attr(docsrs, doc(cfg(feature = "logstash")))]
    pub logstash: Option<crate::logs::logstash::LogstashConfig>,
    /// Log format and the local log store (`HYPERKIT_LOG_*`).
    pub logs: crate::logs::LogsConfig,
    /// `HYPERKIT_MODEL_PRICES` (a TOML file), or `[model_prices]` in the
    /// `HYPERKIT_CONFIG` file (the variable wins): the prices model calls
    /// are costed at. Default: none (no cost is counted). Reading a file
    /// needs the `config-file` feature.
    pub model_prices: Option<crate::model::PriceTable>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            service_name: default_service_name(),
            environment: None,
            max_label_values: DEFAULT_MAX_LABEL_VALUES,
            max_label_sets: DEFAULT_MAX_LABEL_SETS,
            metrics_addr: DEFAULT_METRICS_ADDR
                .parse()
                .unwrap_or_else(|e| unreachable!("default address parses: {e}")),
            data_dir: PathBuf::from("hyperkit-data"),
            log_filter: "info".to_owned(),
            metrics_auth: None,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            health_cache: DEFAULT_HEALTH_CACHE,
            config_file: None,
            #[cfg(feature = "sentry")]
            sentry: crate::sentry::SentryConfig::default(),
            #[cfg(feature = "mlflow")]
            mlflow: crate::mlflow::MlflowConfig::default(),
            #[cfg(feature = "elasticsearch")]
            elasticsearch: None,
            #[cfg(feature = "logstash")]
            logstash: None,
            logs: crate::logs::LogsConfig::default(),
            model_prices: None,
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

/// Fails when one of `variables` is set: they configure a sink this build
/// does not have.
#[allow(dead_code)] // unused when every feature is on
fn compiled_out(
    var: &impl Fn(&str) -> Option<String>,
    variables: &[&'static str],
    feature: &'static str,
) -> Result<(), ConfigError> {
    match variables.iter().find(|v| var(v).is_some()) {
        Some(variable) => Err(ConfigError::FeatureDisabled { variable, feature }),
        None => Ok(()),
    }
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
        if let Some(v) = var("HYPERKIT_MAX_LABEL_SETS") {
            config.max_label_sets = parse_limit("HYPERKIT_MAX_LABEL_SETS", &v)?;
        }
        if let Some(v) = var(crate::clock::CLOCK_VAR) {
            // Read again where the clock is chosen (on its first use, which
            // may come before `init()`); checked here so a typo fails.
            crate::clock::ClockChoice::parse(Some(&v)).map_err(|problem| {
                crate::config::invalid(crate::clock::CLOCK_VAR, &v, problem, "auto")
            })?;
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
        #[cfg(feature = "sentry")]
        {
            config.sentry = crate::sentry::SentryConfig::from_lookup(var)?;
        }
        #[cfg(not(feature = "sentry"))]
        compiled_out(&var, &["SENTRY_DSN"], "sentry")?;
        #[cfg(feature = "mlflow")]
        {
            config.mlflow = crate::mlflow::MlflowConfig::from_lookup(var)?;
        }
        #[cfg(not(feature = "mlflow"))]
        compiled_out(&var, &["MLFLOW_TRACKING_URI"], "mlflow")?;
        #[cfg(feature = "elasticsearch")]
        {
            config.elasticsearch = crate::logs::elastic::ElasticsearchConfig::from_lookup(var)?;
        }
        #[cfg(not(feature = "elasticsearch"))]
        compiled_out(&var, &["ELASTICSEARCH_URL"], "elasticsearch")?;
        #[cfg(feature = "logstash")]
        {
            config.logstash = crate::logs::logstash::LogstashConfig::from_lookup(var)?;
        }
        #[cfg(not(feature = "logstash"))]
        compiled_out(&var, &["LOGSTASH_URL"], "logstash")?;
        config.logs = crate::logs::LogsConfig::from_lookup(var)?;
        #[cfg(feature = "config-file")]
        if let Some(path) = var(crate::prices::PRICES_VAR) {
            config.model_prices = Some(crate::prices::file::read_file(Path::new(&path))?);
        }
        #[cfg(not(feature = "config-file"))]
        compiled_out(&var, &[crate::prices::PRICES_VAR], "config-file")?;
        #[cfg(not(feature = "http"))]
        compiled_out(
            &var,
            &[
                METRICS_CREDENTIALS.token,
                METRICS_CREDENTIALS.username,
                METRICS_CREDENTIALS.password,
            ],
            "http",
        )?;
        config.metrics_auth = credentials(var, METRICS_CREDENTIALS, None)?;
        Ok(config)
    }

    #[cfg(not(feature = "config-file"))]
    fn apply_file(&mut self, _path: &Path) -> Result<(), ConfigError> {
        Err(ConfigError::FeatureDisabled {
            variable: "HYPERKIT_CONFIG",
            feature: "config-file",
        })
    }

    #[cfg(feature = "config-file")]
    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        file::apply(self, path)
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
            ("HYPERKIT_MAX_LABEL_SETS", self.max_label_sets.to_string()),
            (
                crate::clock::CLOCK_VAR,
                format!("{} in use", crate::clock::clock_source()),
            ),
            ("HYPERKIT_METRICS_ADDR", self.metrics_addr.to_string()),
            ("HYPERKIT_DATA_DIR", self.data_dir.display().to_string()),
            ("RUST_LOG", self.log_filter.clone()),
        ];
        described.extend(describe_credentials(
            METRICS_CREDENTIALS,
            self.metrics_auth.as_ref(),
        ));
        described.extend([
            (
                "HYPERKIT_HEALTH_TIMEOUT_MS",
                self.health_timeout.as_millis().to_string(),
            ),
            (
                "HYPERKIT_HEALTH_CACHE_MS",
                self.health_cache.as_millis().to_string(),
            ),
        ]);
        #[cfg(feature = "sentry")]
        described.extend(self.sentry.describe());
        described.extend(self.logs.describe());
        #[cfg(feature = "mlflow")]
        described.extend(self.mlflow.describe());
        #[cfg(feature = "elasticsearch")]
        match &self.elasticsearch {
            Some(es) => described.extend(es.describe()),
            None => described.push(("ELASTICSEARCH_URL", "(unset)".to_owned())),
        }
        #[cfg(feature = "logstash")]
        match &self.logstash {
            Some(ls) => described.extend(ls.describe()),
            None => described.push(("LOGSTASH_URL", "(unset)".to_owned())),
        }
        described.push((
            crate::prices::PRICES_VAR,
            match &self.model_prices {
                Some(table) => format!("{} models priced", table.len()),
                None => "(unset)".to_owned(),
            },
        ));
        described
    }

    /// Every secret value the configuration holds, for the scrubbing of
    /// error reports.
    #[allow(dead_code)] // used by the Sentry scrubber only
    pub(crate) fn secrets(&self) -> Vec<&str> {
        #[allow(unused_mut)]
        let mut secrets: Vec<&str> = self.metrics_auth.iter().map(Credentials::secret).collect();
        #[cfg(feature = "sentry")]
        secrets.extend(self.sentry.dsn.as_ref().map(crate::config::Secret::expose));
        #[cfg(feature = "mlflow")]
        secrets.extend(self.mlflow.secrets());
        #[cfg(feature = "elasticsearch")]
        if let Some(es) = &self.elasticsearch {
            secrets.extend(es.secrets());
        }
        secrets
    }
}

fn display_opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "(unset)".to_owned(), |v| v.to_string())
}
