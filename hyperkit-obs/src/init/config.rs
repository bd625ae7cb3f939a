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

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{
    ConfigError, CredentialVars, Credentials, credentials, describe_credentials, parse_addr,
    parse_filter, parse_limit, parse_millis, parse_service_name,
};
use crate::metrics::{DEFAULT_MAX_LABEL_SETS, DEFAULT_MAX_LABEL_VALUES};

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

/// The TOML file named by `HYPERKIT_CONFIG`.
#[cfg(feature = "config-file")]
mod file {
    use std::path::{Path, PathBuf};

    use serde::Deserialize;

    use super::MonitoringConfig;
    use crate::config::{ConfigError, parse_addr, parse_filter, parse_limit, parse_service_name};

    /// The most bytes of a configuration file read: it is a handful of
    /// keys, and a larger file is a mistake (or an attack).
    pub(super) const MAX_FILE_BYTES: u64 = 1 << 20;

    /// The keys a configuration file may hold: the variable names without
    /// the `HYPERKIT_` prefix, in lower case.
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

    pub(super) fn apply(config: &mut MonitoringConfig, path: &Path) -> Result<(), ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_FILE_BYTES {
            return Err(ConfigError::File {
                path: path.to_owned(),
                message: format!(
                    "the file is {size} bytes; a configuration file holds at most {MAX_FILE_BYTES}"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if let Some(v) = file.service_name {
            config.service_name = parse_service_name("service_name", &v)?;
        }
        if let Some(v) = file.environment {
            config.environment = Some(parse_service_name("environment", &v)?);
        }
        if let Some(v) = file.max_label_values {
            let text = match &v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            config.max_label_values = parse_limit("max_label_values", &text)?;
        }
        if let Some(v) = file.metrics_addr {
            config.metrics_addr = parse_addr("metrics_addr", &v)?;
        }
        if let Some(v) = file.data_dir {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = file.log_filter {
            config.log_filter = parse_filter("log_filter", &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<MonitoringConfig, ConfigError> {
        MonitoringConfig::from_lookup(crate::config::lookup(vars))
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
}

// Property tests as fuzzers: whatever the environment or the file holds,
// reading the configuration gives a value or a typed error naming the
// variable, never a panic. 100 times more by hand: `PROPTEST_CASES=25600
// cargo test -p hyperkit-obs --lib init::config`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const VARIABLES: &[&str] = &[
        "HYPERKIT_SERVICE_NAME",
        "HYPERKIT_ENVIRONMENT",
        "HYPERKIT_MAX_LABEL_VALUES",
        "HYPERKIT_MAX_LABEL_SETS",
        "HYPERKIT_METRICS_ADDR",
        "HYPERKIT_DATA_DIR",
        "RUST_LOG",
        "HYPERKIT_HEALTH_TIMEOUT_MS",
        "HYPERKIT_HEALTH_CACHE_MS",
        "HYPERKIT_METRICS_TOKEN",
        "HYPERKIT_METRICS_USERNAME",
        "HYPERKIT_METRICS_PASSWORD",
        "HYPERKIT_LOG_FORMAT",
        "HYPERKIT_LOG_STORE",
        "HYPERKIT_LOG_RETENTION_DAYS",
        "HYPERKIT_LOG_MAX_BYTES",
        "SENTRY_DSN",
        "HYPERKIT_SENTRY_SAMPLE_RATE",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "HYPERKIT_MLFLOW_CONCURRENCY",
        "ELASTICSEARCH_URL",
        "HYPERKIT_ES_INDEX",
        "HYPERKIT_ES_BATCH_BYTES",
        "LOGSTASH_URL",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9]{0,25}",
            "-?[0-9]+\\.[0-9]+e[0-9]{1,4}",
            "(http|https|tcp|file|ftp)://[a-z@:%.0-9/]{0,40}",
            "[a-z_=,.:\\[\\]{}]{0,60}",
        ]
    }

    proptest! {
        #[test]
        fn any_environment_reads_or_fails_naming_a_variable(
            vars in proptest::collection::hash_map(proptest::sample::select(VARIABLES), value(), 0..8)
        ) {
            let vars: HashMap<&str, String> = vars.into_iter().collect();
            match MonitoringConfig::from_lookup(|k| vars.get(k).cloned()) {
                Ok(_) => {}
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(
                        VARIABLES.iter().any(|v| text.starts_with(v)),
                        "the error names no variable: {text}"
                    );
                }
            }
        }
    }

    #[cfg(feature = "config-file")]
    proptest! {
        #[test]
        fn any_config_file_reads_or_fails_naming_the_file(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096)
        ) {
            let path = std::env::temp_dir().join(format!(
                "hyperkit-config-fuzz-{}-{}.toml",
                std::process::id(),
                crate::util::random_u64()
            ));
            std::fs::write(&path, &bytes).unwrap();
            let p = path.to_string_lossy().into_owned();
            let result = MonitoringConfig::from_lookup(|k| (k == "HYPERKIT_CONFIG").then(|| p.clone()));
            let _ = std::fs::remove_file(&path);
            if let Err(e) = result {
                prop_assert!(e.to_string().starts_with("HYPERKIT_CONFIG=") || e.to_string().contains('='), "{e}");
            }
        }
    }

    #[test]
    #[cfg(feature = "config-file")]
    fn a_config_file_nested_a_hundred_thousand_deep_is_an_error_not_a_crash() {
        let dir = std::env::temp_dir().join(format!("hyperkit-config-deep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for text in [
            format!(
                "service_name = {}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            format!("service_name = {}", "{ a = ".repeat(50_000)),
            "a.".repeat(100_000) + "b = 1",
        ] {
            let path = dir.join("deep.toml");
            std::fs::write(&path, text).unwrap();
            let p = path.to_string_lossy().into_owned();
            let e = MonitoringConfig::from_lookup(|k| (k == "HYPERKIT_CONFIG").then(|| p.clone()))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("HYPERKIT_CONFIG="), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
