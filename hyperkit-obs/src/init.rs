//! Start-up: [`init()`] and [`Builder`] apply a validated
//! [`MonitoringConfig`] and return the [`ObsGuard`] that owns the running
//! sinks.
//!
//! Initialisation never replaces a `tracing` subscriber the program already
//! installed, and never panics: every failure is an [`InitError`].

use std::io::IsTerminal;
use std::sync::{PoisonError, RwLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, MonitoringConfig};
use crate::metrics;

/// Why [`init()`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
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

    /// Whether [`init`](Self::init) installs the global `tracing` subscriber
    /// (default `true`). Turn it off when the program installs its own.
    pub fn install_subscriber(mut self, install: bool) -> Self {
        self.keep_subscriber = !install;
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &MonitoringConfig {
        &self.config
    }

    /// Applies the configuration.
    pub fn init(self) -> Result<ObsGuard, InitError> {
        metrics::set_max_label_values(self.config.max_label_values);
        if !self.keep_subscriber {
            let filter =
                EnvFilter::try_new(&self.config.log_filter).map_err(|e| ConfigError::Invalid {
                    variable: "RUST_LOG",
                    value: self.config.log_filter.clone(),
                    problem: e.to_string(),
                    example: "info,my_crate=debug",
                })?;
            // Fails only when the program already installed a subscriber,
            // which then stays in charge.
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_target(true)
                        .with_ansi(std::io::stdout().is_terminal()),
                )
                .try_init();
        }
        // Touch the registry so every family is registered before the first
        // scrape.
        let _ = metrics::registry();
        *ACTIVE.write().unwrap_or_else(PoisonError::into_inner) = Some(self.config.clone());
        Ok(ObsGuard {
            config: self.config,
        })
    }
}

static ACTIVE: RwLock<Option<MonitoringConfig>> = RwLock::new(None);

/// The configuration `init()` applied, or the defaults before it ran.
pub(crate) fn active_config() -> MonitoringConfig {
    ACTIVE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

/// Owns what [`init()`] started; dropping it flushes the sinks.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the sinks down"]
pub struct ObsGuard {
    config: MonitoringConfig,
}

impl ObsGuard {
    /// The configuration in effect.
    pub fn config(&self) -> &MonitoringConfig {
        &self.config
    }
}
