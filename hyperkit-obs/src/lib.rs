//! Observability for builds, AI model calls and database queries, from one
//! attribute.
//!
//! ```
//! use hyperkit_obs::{track_build, LabelValue};
//!
//! #[derive(Clone, Copy, LabelValue)]
//! enum Chain { Ethereum, Solana }
//!
//! #[derive(Debug)]
//! struct BuildError;
//! impl std::fmt::Display for BuildError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("out of gas") }
//! }
//!
//! #[track_build(chain)]
//! fn build(chain: Chain, size: u32) -> Result<u32, BuildError> {
//!     if size == 0 { return Err(BuildError) }
//!     Ok(size * 2)
//! }
//!
//! assert_eq!(build(Chain::Ethereum, 21).unwrap(), 42);
//! assert!(build(Chain::Solana, 0).is_err());
//!
//! let families = hyperkit_obs::registry().gather();
//! assert!(families.iter().any(|f| f.name() == "hyperkit_builds_total"));
//! ```
//!
//! `#[track_build(chain)]`, `#[track_model(model, task)]` and
//! `#[track_query(operation)]` keep the function's signature, `Send`-ness and
//! behaviour, and add:
//!
//! | macro | metrics |
//! |---|---|
//! | `track_build` | `hyperkit_builds_total{status,chain}`, `hyperkit_build_duration_seconds{chain}`, `hyperkit_active_builds{chain}` |
//! | `track_model` | `hyperkit_model_calls_total{model,task,status}`, `hyperkit_model_latency_seconds{model,task}`, `hyperkit_model_tokens_total{model,task,type}`, `hyperkit_model_acceptance_total{model,task,accepted}` |
//! | `track_query` | `hyperkit_db_queries_total{operation,status}`, `hyperkit_db_query_duration_seconds{operation}` |
//!
//! plus a `tracing` span named after the function that carries the labels, and
//! a closing event: INFO on success (DEBUG with `level = "debug"`), ERROR with
//! the error's `Display` on failure or panic.
//!
//! A label is given as a parameter name (`chain`), a string literal
//! (`chain = "ethereum"`) or an expression over the parameters
//! (`chain = spec.chain`, evaluated once before the body). Its value's type
//! must implement [`LabelValue`]. `status` is `success`, `failure` (an `Err`),
//! `panic` (the panic continues) or `cancelled` (an async call dropped before
//! it finished).
//!
//! Call [`init()`] once at start-up to read the configuration and install the
//! log subscriber (and, with `SENTRY_DSN` set, report failures and panics to
//! Sentry: see [`sentry`]); metrics work without it.

//! ## Cargo features
//!
//! Each sink is a feature; `default` has them all, so [`init()`] gives the
//! embedded experience with no configuration (logs on stdout and in a local
//! store, MLflow runs in `./mlruns`) and every backend the environment
//! names. With `default-features = false` a crate gets the macros, the
//! registry, the label machinery and `tracing` spans and events only: no
//! HTTP stack, no SQLite, no TLS.
//!
//! | feature | what it adds |
//! |---|---|
//! | `http` | [`http`]: `/metrics`, [`health`] checks, the RED layer, the status page (axum) |
//! | `log-store` | the local log store [`logs::store`] (SQLite FTS5) |
//! | `elasticsearch` | [`logs::elastic`]: shipping to Elasticsearch, and its search |
//! | `logstash` | [`logs::logstash`]: shipping to a Logstash `tcp` input |
//! | `mlflow` | [`mlflow`]: a run per model call, file store or tracking server |
//! | `sentry` | [`sentry`]: failures and panics reported to Sentry |
//! | `push` | [`push`]: pushing to a Prometheus Pushgateway |
//! | `config-file` | the TOML file named by `HYPERKIT_CONFIG` |
//! | `cli` | the `hyperkit-obs` command |
//!
//! A variable that configures a sink left out of the build (`SENTRY_DSN`
//! without `sentry`, …) makes [`init()`] fail with a message naming the
//! feature, never silently.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod calls;
mod clock;
pub mod config;
pub mod export;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod health;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod init;
mod label;
pub mod logs;
pub mod metrics;
#[cfg(feature = "mlflow")]
#[cfg_attr(docsrs, doc(cfg(feature = "mlflow")))]
pub mod mlflow;
pub mod model;
#[cfg(any(
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "push",
    feature = "otlp"
))]
mod net;
mod prices;
#[cfg(feature = "push")]
#[cfg_attr(docsrs, doc(cfg(feature = "push")))]
pub mod push;
#[cfg(feature = "sentry")]
#[cfg_attr(docsrs, doc(cfg(feature = "sentry")))]
pub mod sentry;
pub mod trace;
mod track;
mod util;

pub use clock::{ClockSource, clock_source};
pub use config::{ConfigError, Credentials, MetricsAuth, Secret};
pub use hyperkit_obs_macros::{Domain, LabelValue, track, track_build, track_model, track_query};
pub use init::{Builder, DEFAULT_METRICS_ADDR, InitError, MonitoringConfig, ObsGuard, init};
pub use label::{LabelValue, MAX_LABEL_LEN, OVERFLOW_VALUE, sanitize};
pub use metrics::registry;
pub use model::{ModelChunk, ModelOutput};
#[cfg(feature = "sentry")]
pub use sentry::SentryConfig;
pub use track::Status;
pub use track::domain::{DEFAULT_BUCKETS, Domain};

/// The `prometheus` crate, at the version hyperkit-obs registers its metrics
/// with; register your own metrics against it.
pub use prometheus;

/// Support for the code the macros generate. Not a public API: it may change
/// in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::label::{LabelRef, Literal};
    pub use crate::metrics::{DomainHandles, DomainMetrics, DomainSpec, Entry, SpecParts};
    pub use crate::track::domain::builtin as domains;
    pub use crate::track::domain::{
        AnyLabel, DomainLabels, Field, Fits, TakesLiteral, Undecided, any_field, field,
        literal_field,
    };
    pub use crate::track::future::{InCall, Tracked};
    pub use crate::track::outcome::{
        NoUsage, NoValueLabel, ResultDisplayOutcome, ResultOutcome, ResultUsage, ValueLabel,
        ValueOutcome, ValueUsage, Wrap,
    };
    pub use crate::track::site::{Site, resolve};
    pub use crate::track::spans::MARKER;
    pub use crate::track::stream::{Step, StreamItem, TrackedStream, chunk};
    pub use crate::track::{Call, Current, Finished, LogFn, Outcome, Prepared, Status, call};
    /// For the `hyperkit-obs` binary: quotes its messages as the library's
    /// errors do.
    pub use crate::util::shown;
    pub use tracing;

    /// Type-checks a label value where the user wrote it, once, so a type
    /// that is not a `LabelValue` is one error at that expression.
    #[inline(always)]
    pub fn label<L: crate::LabelValue>(value: &L) -> LabelRef<'_> {
        LabelRef::new(value)
    }

    /// The closing event of a tracked call, expanded in the user's crate so its
    /// target is the user's module.
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __hyperkit_finished_event {
        ($finished:expr, $ok_level:ident, $name:literal) => {{
            let finished: &$crate::__private::Finished<'_> = $finished;
            let duration = finished.duration_ns();
            match (finished.status, finished.error) {
                ($crate::__private::Status::Success, _) => $crate::__private::tracing::event!(
                    target: module_path!(),
                    $crate::__private::tracing::Level::$ok_level,
                    status = "success",
                    event.duration = duration,
                    concat!($name, " succeeded")
                ),
                ($crate::__private::Status::Failure, Some(error)) => {
                    $crate::__private::tracing::event!(
                        target: module_path!(),
                        $crate::__private::tracing::Level::ERROR,
                        status = "failure",
                        event.duration = duration,
                        error.message = %error,
                        concat!($name, " failed: {}"),
                        error
                    )
                }
                ($crate::__private::Status::Failure, None) => $crate::__private::tracing::event!(
                    target: module_path!(),
                    $crate::__private::tracing::Level::ERROR,
                    status = "failure",
                    event.duration = duration,
                    concat!($name, " failed")
                ),
                ($crate::__private::Status::Panic, _) => $crate::__private::tracing::event!(
                    target: module_path!(),
                    $crate::__private::tracing::Level::ERROR,
                    status = "panic",
                    event.duration = duration,
                    concat!($name, " panicked")
                ),
                ($crate::__private::Status::Cancelled, _) => $crate::__private::tracing::event!(
                    target: module_path!(),
                    $crate::__private::tracing::Level::INFO,
                    status = "cancelled",
                    event.duration = duration,
                    concat!($name, " was cancelled")
                ),
            }
        }};
    }
    pub use crate::__hyperkit_finished_event as finished_event;
}
