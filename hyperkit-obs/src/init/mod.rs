//! Start-up: [`init()`] and [`Builder`] apply a validated
//! [`MonitoringConfig`] and return the [`ObsGuard`] that owns the running
//! sinks.
//!
//! Initialisation never replaces a `tracing` subscriber the program already
//! installed, and never panics: every failure is an [`InitError`].

use std::io::IsTerminal;
use std::sync::{PoisonError, RwLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

mod config;

#[allow(unused_imports)] // the health defaults are used by `http` only
pub(crate) use config::{DEFAULT_HEALTH_CACHE, DEFAULT_HEALTH_TIMEOUT};
pub use config::{DEFAULT_METRICS_ADDR, MonitoringConfig};

use crate::config::ConfigError;
use crate::metrics;

/// Why [`init()`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Sentry client could not start (its HTTP client failed to build).
    #[cfg(feature = "sentry")]
    #[error("the Sentry client cannot start: {0}")]
    Sentry(String),
    /// The MLflow exporter could not start (e.g. the file store directory
    /// cannot be created).
    #[cfg(feature = "mlflow")]
    #[error("MLflow tracking cannot start (MLFLOW_TRACKING_URI={target}): {source}")]
    Mlflow {
        /// Where runs were to go.
        target: String,
        /// Why it failed.
        source: crate::mlflow::MlflowError,
    },
    /// The local log store could not be opened (`HYPERKIT_LOG_STORE=false`
    /// turns it off).
    #[cfg(feature = "log-store")]
    #[error("the local log store cannot start: {0}")]
    LogStore(#[from] crate::logs::store::StoreError),
    /// A span exporter could not start (OTLP, MLflow traces).
    #[cfg(any(feature = "otlp", feature = "mlflow"))]
    #[error(transparent)]
    Spans(#[from] crate::trace::OtlpError),
    /// A log shipper could not start (its HTTP client failed to build, or
    /// its index name cannot be used).
    #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
    #[error("the {sink} log shipper cannot start: {source}")]
    Shipping {
        /// `elasticsearch` or `logstash`.
        sink: &'static str,
        /// Why.
        source: crate::logs::ShippingError,
    },
}

/// Reads the configuration from the environment and starts hyperkit-obs.
///
/// Keep the returned guard alive for the life of the program: dropping it
/// flushes what the sinks still hold.
///
/// ```no_run
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let _obs = hyperkit_obs::init()?;
///     Ok(())
/// }
/// ```
pub fn init() -> Result<ObsGuard, InitError> {
    Builder::from_env()?.init()
}

/// Explicit start-up, for code that sets values itself.
///
/// ```
/// let config = hyperkit_obs::Builder::default()
///     .service_name("build-agent")
///     .max_label_values(200)
///     .install_subscriber(false)
///     .config()
///     .clone();
/// assert_eq!(config.max_label_values, 200);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Builder {
    config: MonitoringConfig,
    keep_subscriber: bool,
    text_filter: Option<String>,
}

impl Builder {
    /// Starts from the environment (see [`MonitoringConfig::from_env`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Builder::from_config(MonitoringConfig::from_env()?))
    }

    /// Starts from `config`.
    pub fn from_config(config: MonitoringConfig) -> Self {
        Builder {
            config,
            keep_subscriber: false,
            text_filter: None,
        }
    }

    /// Sets the service name.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.config.service_name = name.into();
        self
    }

    /// Sets the per-label limit on distinct values (at least 1).
    pub fn max_label_values(mut self, limit: usize) -> Self {
        self.config.max_label_values = limit.max(1);
        self
    }

    /// Sets the prices model calls are costed at (in place of
    /// `HYPERKIT_MODEL_PRICES`): see [`PriceTable`](crate::model::PriceTable).
    pub fn model_prices(mut self, table: crate::model::PriceTable) -> Self {
        self.config.model_prices = Some(table);
        self
    }

    /// Sets the per-family limit on label sets (at least 1).
    pub fn max_label_sets(mut self, limit: usize) -> Self {
        self.config.max_label_sets = limit.max(1);
        self
    }

    /// The release reported to Sentry when `SENTRY_RELEASE` is not set (the
    /// variable wins). Pass your binary's version, which only your crate can
    /// name:
    ///
    /// ```no_run
    /// let _obs = hyperkit_obs::Builder::from_env()?
    ///     .release(concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION")))
    ///     .init()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Without it and without `SENTRY_RELEASE`, events carry no release.
    #[cfg_attr(not(feature = "sentry"), allow(unused_mut))]
    pub fn release(mut self, release: impl Into<String>) -> Self {
        #[cfg(feature = "sentry")]
        if self.config.sentry.release.is_none() {
            self.config.sentry.release = Some(release.into());
        }
        #[cfg(not(feature = "sentry"))]
        let _ = release.into();
        self
    }

    /// Whether [`init`](Self::init) installs the global `tracing` subscriber
    /// (default `true`). Turn it off when the program installs its own.
    pub fn install_subscriber(mut self, install: bool) -> Self {
        self.keep_subscriber = !install;
        self
    }

    /// The filter of the human-readable stdout lines (a terminal, or
    /// `HYPERKIT_LOG_FORMAT=text`), in `RUST_LOG`'s syntax, in place of the
    /// log filter for those lines alone: the local store, the shippers,
    /// Sentry and JSON lines keep the log filter (`RUST_LOG`, default
    /// `info`). A program that draws on the terminal itself keeps the screen
    /// quiet this way while every event is still kept:
    ///
    /// ```no_run
    /// let mut builder = hyperkit_obs::Builder::from_env()?;
    /// if std::env::var_os("RUST_LOG").is_none() {
    ///     builder = builder.text_filter("warn");
    /// }
    /// let _obs = builder.init()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Directives that do not parse make [`init`](Self::init) fail.
    pub fn text_filter(mut self, directives: impl Into<String>) -> Self {
        self.text_filter = Some(directives.into());
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &MonitoringConfig {
        &self.config
    }

    /// Applies the configuration: sets the label limit, starts the Sentry
    /// client when `SENTRY_DSN` is set, and installs the log subscriber.
    pub fn init(self) -> Result<ObsGuard, InitError> {
        metrics::set_max_label_values(self.config.max_label_values);
        metrics::set_max_label_sets(self.config.max_label_sets);
        // Chooses the clock and calibrates the TSC now, so no tracked call
        // waits for it.
        crate::clock::clock_source();
        crate::trace::set_sampler(self.config.trace.sampler);
        crate::trace::enable();
        let filter = |config: &MonitoringConfig| {
            EnvFilter::try_new(&config.log_filter).map_err(|e| ConfigError::Invalid {
                variable: "RUST_LOG",
                value: config.log_filter.clone(),
                problem: e.to_string(),
                example: "info,my_crate=debug",
            })
        };
        let log_filter = filter(&self.config)?;
        let text_filter = match &self.text_filter {
            Some(directives) => {
                EnvFilter::try_new(directives).map_err(|e| ConfigError::Invalid {
                    variable: "Builder::text_filter",
                    value: directives.clone(),
                    problem: e.to_string(),
                    example: "warn",
                })?
            }
            None => log_filter,
        };
        #[cfg(feature = "sentry")]
        let sentry = crate::sentry::start(&self.config).map_err(|e| match e {
            crate::sentry::SentryError::Config(e) => InitError::Config(e),
            other => InitError::Sentry(other.to_string()),
        })?;
        // A second `init()` in one process leaves the running exporter (and
        // its guard) in charge.
        #[cfg(feature = "mlflow")]
        let mlflow = if self.config.mlflow.enabled && crate::mlflow::status().is_none() {
            let guard =
                crate::mlflow::start(&self.config.mlflow).map_err(|source| InitError::Mlflow {
                    target: self.config.mlflow.target.to_string(),
                    source,
                })?;
            Some(guard)
        } else {
            None
        };
        #[cfg(feature = "otlp")]
        let otlp = match &self.config.trace.otlp {
            Some(config) if !self.config.trace.disabled => Some(crate::trace::otlp_start(
                config,
                &self.config.service_name,
                &resource(&self.config),
            )?),
            _ => None,
        };
        // Model calls' spans to MLflow 3 when it is the only place for them.
        #[cfg(feature = "mlflow")]
        let mlflow_traces = {
            #[cfg(feature = "otlp")]
            let other_endpoint = self.config.trace.otlp.is_some();
            #[cfg(not(feature = "otlp"))]
            let other_endpoint = false;
            let server = matches!(
                self.config.mlflow.target,
                crate::mlflow::TrackingTarget::Server(_)
            );
            if self.config.mlflow.enabled
                && server
                && !other_endpoint
                && !self.config.trace.disabled
            {
                Some(crate::mlflow::start_traces(
                    &self.config.mlflow,
                    &self.config.service_name,
                    &resource(&self.config),
                )?)
            } else {
                None
            }
        };
        #[cfg(feature = "log-store")]
        let mut logstore = None;
        #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
        let mut shippers = Vec::new();
        // A subscriber the program already installed stays in charge (and
        // then no store is opened for a layer that would not be installed).
        if !self.keep_subscriber && !tracing::dispatcher::has_been_set() {
            let logs = &self.config.logs;
            #[allow(unused_mut)]
            let mut feeds = false;
            #[cfg(feature = "log-store")]
            let sink = if logs.store {
                let options = crate::logs::store::WriterOptions {
                    retention: crate::logs::store::Retention {
                        max_age_days: logs.retention_days,
                        max_bytes: logs.max_bytes,
                    },
                    cache_bytes: logs.cache_bytes,
                    ..Default::default()
                };
                let dir = crate::logs::store_dir(&self.config.data_dir);
                let (sink, guard) = crate::logs::store::start(dir, options)?;
                logstore = Some(guard);
                feeds = true;
                Some(sink)
            } else {
                None
            };
            #[cfg(feature = "elasticsearch")]
            if let Some(es) = &self.config.elasticsearch {
                // Documents Elasticsearch refuses for good stay findable in
                // the local store, with the reason.
                #[cfg(feature = "log-store")]
                let started = match &sink {
                    Some(store) => {
                        let (store, service) = (store.clone(), self.config.service_name.clone());
                        crate::logs::elastic::start_with_rejected(es, move |document, reason| {
                            store.send(rejected_entry(&service, document, reason));
                        })
                    }
                    None => crate::logs::elastic::start(es),
                };
                #[cfg(not(feature = "log-store"))]
                let started = crate::logs::elastic::start(es);
                shippers.push(started.map_err(|source| InitError::Shipping {
                    sink: "elasticsearch",
                    source,
                })?);
            }
            #[cfg(feature = "logstash")]
            if let Some(ls) = &self.config.logstash {
                shippers.push(crate::logs::logstash::start(ls).map_err(|source| {
                    InitError::Shipping {
                        sink: "logstash",
                        source,
                    }
                })?);
            }
            #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
            {
                feeds |= !shippers.is_empty();
            }
            let json = logs.format.is_json(std::io::stdout().is_terminal());
            let ecs = (json || feeds).then(|| {
                // Stdout through the export runtime: a full pipe or a slow
                // terminal never blocks a caller.
                let layer = crate::logs::layer(self.config.service_name.clone())
                    .with_writer(crate::logs::NonBlockingStdout);
                #[allow(unused_mut)]
                let mut layer = if json { layer } else { layer.without_writer() };
                #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
                for shipper in &shippers {
                    layer = layer.with_shipper(shipper.handle());
                }
                #[cfg(feature = "log-store")]
                if let Some(sink) = sink {
                    layer = layer.with_store(sink);
                }
                layer
            });
            // Per-layer filters: the Sentry layer also sees tracked spans and
            // failures that RUST_LOG hides from the log, and the log layer
            // tracked spans, so a failure's line keeps its labels.
            #[cfg(feature = "sentry")]
            let sentry_layer = match &sentry {
                Some(_) => Some(
                    crate::sentry::layer()
                        .with_filter(filter(&self.config)?.or(crate::sentry::TrackedCalls)),
                ),
                None => None,
            };
            #[cfg(not(feature = "sentry"))]
            let sentry_layer: Option<tracing_subscriber::layer::Identity> = None;
            let ecs_filter = filter(&self.config)?.or(crate::logs::TrackedSpans);
            let _ = tracing_subscriber::registry()
                .with(crate::trace::ContextLayer)
                .with(
                    (!json)
                        .then(fmt_layer)
                        .with_filter(text_filter.or(crate::logs::TrackedSpans)),
                )
                .with(ecs.with_filter(ecs_filter))
                .with(sentry_layer)
                .try_init();
        }
        // Without a configured table, a table installed in code stays.
        if let Some(table) = &self.config.model_prices {
            crate::prices::install_prices(Some(table));
        }
        // Touch the registry so every family is registered before the first
        // scrape.
        let _ = metrics::registry();
        *ACTIVE.write().unwrap_or_else(PoisonError::into_inner) = Some(self.config.clone());
        Ok(ObsGuard {
            config: self.config,
            #[cfg(feature = "otlp")]
            otlp,
            #[cfg(feature = "mlflow")]
            mlflow_traces,
            #[cfg(feature = "sentry")]
            sentry,
            #[cfg(feature = "mlflow")]
            mlflow,
            #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
            shippers,
            #[cfg(feature = "log-store")]
            logstore,
            _stdout: StdoutFlush,
        })
    }
}

/// The human-readable log lines on stdout, coloured when stdout is a
/// terminal that allows it.
fn fmt_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    crate::logs::text_layer().with_writer(crate::logs::NonBlockingStdout)
}

/// The resource attributes of this process's spans:
/// `OTEL_RESOURCE_ATTRIBUTES`, and `deployment.environment.name` from
/// `HYPERKIT_ENVIRONMENT` unless they name one.
#[cfg(any(feature = "otlp", feature = "mlflow"))]
fn resource(config: &MonitoringConfig) -> Vec<(String, String)> {
    let mut attributes = config.trace.resource.clone();
    if let Some(env) = &config.environment
        && !attributes
            .iter()
            .any(|(k, _)| k.starts_with("deployment.environment"))
    {
        attributes.push(("deployment.environment.name".to_owned(), env.clone()));
    }
    attributes
}

static ACTIVE: RwLock<Option<MonitoringConfig>> = RwLock::new(None);

/// The configuration `init()` applied, or the defaults before it ran.
#[cfg(feature = "http")]
pub(crate) fn active_config() -> MonitoringConfig {
    ACTIVE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

/// Owns what [`init()`] started; dropping it flushes the sinks, each within
/// its deadline (Sentry's 2 s, the log store's 2 s, the shippers' and
/// MLflow's 5 s).
#[derive(Debug)]
#[must_use = "dropping the guard shuts the sinks down"]
pub struct ObsGuard {
    config: MonitoringConfig,
    /// First: the spans of the last calls go out while the other sinks
    /// still run.
    #[cfg(feature = "otlp")]
    otlp: Option<crate::trace::SpanSinkGuard>,
    /// Model calls' spans to MLflow 3.
    #[cfg(feature = "mlflow")]
    mlflow_traces: Option<crate::trace::SpanSinkGuard>,
    #[cfg(feature = "sentry")]
    sentry: Option<crate::sentry::SentryGuard>,
    #[cfg(feature = "mlflow")]
    mlflow: Option<crate::mlflow::MlflowGuard>,
    /// Before the store: fields drop in order, and documents Elasticsearch
    /// refuses while its shipper flushes must still reach a running store.
    #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
    shippers: Vec<crate::logs::ShipperGuard>,
    #[cfg(feature = "log-store")]
    logstore: Option<crate::logs::LogStoreGuard>,
    /// Last: the other sinks' final words reach stdout too.
    _stdout: StdoutFlush,
}

/// Writes what is queued for stdout, within its deadline, when dropped.
#[derive(Debug)]
struct StdoutFlush;

impl Drop for StdoutFlush {
    fn drop(&mut self) {
        crate::logs::flush_stdout(crate::logs::STDOUT_FLUSH_DEADLINE);
    }
}

#[cfg(all(feature = "elasticsearch", feature = "log-store"))]
/// The local store's entry for a document Elasticsearch refused for good:
/// a warning naming the reason, with the refused document in
/// `event.original`.
fn rejected_entry(service: &str, document: &[u8], reason: &str) -> crate::logs::store::StoreEntry {
    let mut record = crate::logs::LogRecord::new(
        crate::util::unix_ms(),
        "warn",
        std::borrow::Cow::Borrowed("hyperkit_obs::logs::elastic"),
        format!("Elasticsearch refused a log event: {reason}"),
    );
    record.fields.push((
        "event.original",
        crate::logs::FieldValue::Str(String::from_utf8_lossy(document).into_owned()),
    ));
    crate::logs::store::StoreEntry::new(&record, service)
}

impl ObsGuard {
    /// The configuration in effect.
    pub fn config(&self) -> &MonitoringConfig {
        &self.config
    }

    /// The state of each log shipper `init()` started (Elasticsearch,
    /// Logstash).
    pub fn log_shippers(&self) -> Vec<crate::export::SinkStatus> {
        #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
        return self.shippers.iter().map(|g| g.handle().status()).collect();
        #[cfg(not(any(feature = "elasticsearch", feature = "logstash")))]
        Vec::new()
    }

    /// Whether model calls are being logged to MLflow.
    pub fn mlflow_enabled(&self) -> bool {
        #[cfg(feature = "mlflow")]
        return self.mlflow.is_some();
        #[cfg(not(feature = "mlflow"))]
        false
    }

    /// The state of the OTLP span exporter, when one runs.
    pub fn otlp_status(&self) -> Option<crate::export::SinkStatus> {
        #[cfg(feature = "otlp")]
        return self
            .otlp
            .as_ref()
            .and_then(crate::trace::SpanSinkGuard::status);
        #[cfg(not(feature = "otlp"))]
        None
    }

    /// The state of the sink of model calls' spans to MLflow 3, when one
    /// runs.
    pub fn mlflow_traces_status(&self) -> Option<crate::export::SinkStatus> {
        #[cfg(feature = "mlflow")]
        return self
            .mlflow_traces
            .as_ref()
            .and_then(crate::trace::SpanSinkGuard::status);
        #[cfg(not(feature = "mlflow"))]
        None
    }

    /// Whether events are being kept in the local log store.
    pub fn log_store_enabled(&self) -> bool {
        #[cfg(feature = "log-store")]
        return self.logstore.is_some();
        #[cfg(not(feature = "log-store"))]
        false
    }

    /// Whether errors and panics are being reported to Sentry (a DSN was
    /// configured).
    pub fn sentry_enabled(&self) -> bool {
        #[cfg(feature = "sentry")]
        return self.sentry.is_some();
        #[cfg(not(feature = "sentry"))]
        false
    }
}

#[cfg(all(test, feature = "sentry"))]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(feature = "sentry", feature = "mlflow"))]
    fn without_a_dsn_no_sentry_client_starts() {
        let mut config = MonitoringConfig::default();
        config.mlflow.enabled = false;
        let guard = Builder::from_config(config)
            .install_subscriber(false)
            .init()
            .unwrap();
        assert!(!guard.sentry_enabled());
        assert!(::sentry::Hub::current().client().is_none());
    }

    #[test]
    #[cfg(feature = "sentry")]
    fn the_builder_release_is_a_default_that_sentry_release_overrides() {
        let b = Builder::default().release("app@1.0.0");
        assert_eq!(b.config().sentry.release.as_deref(), Some("app@1.0.0"));
        let mut config = MonitoringConfig::default();
        config.sentry.release = Some("from-env".to_owned());
        let b = Builder::from_config(config).release("app@1.0.0");
        assert_eq!(b.config().sentry.release.as_deref(), Some("from-env"));
    }
}
