//! Error and panic reporting to Sentry.
//!
//! With `SENTRY_DSN` set, [`init()`](crate::init) starts the official
//! `sentry` client with its panic and context integrations, and adds
//! [`SentryLayer`] to the `tracing` subscriber:
//!
//! - the ERROR event that closes a failed tracked call becomes one Sentry
//!   event: message = the error's `Display`; tags = the call's labels
//!   (`chain`, `model`, `task`, `operation`, `db`), `status` and `function`;
//!   fingerprint = `hyperkit`, the function's path, the status and the
//!   message with label values and numbers replaced by placeholders, so the
//!   same error from the same function is one issue whatever the labels;
//! - any other ERROR event becomes a Sentry event (default grouping), tagged
//!   with the tracked call it happened in, if any;
//! - INFO and WARN events (as `RUST_LOG` lets them through) become
//!   breadcrumbs: the recent log lines attached to the next event;
//! - a panic is captured once, by the panic integration, with its stack
//!   trace and the tags of the tracked call it happened in. The tracked
//!   call's own "panicked" ERROR event is turned into a breadcrumb, not a
//!   second event.
//!
//! Every event and breadcrumb passes the scrubber (`before_send`,
//! `before_breadcrumb`) before it is queued: configured secrets, DSNs,
//! credentials in URLs, `Authorization` values, `Bearer`/`Basic` tokens and
//! the values of fields named like a secret are replaced by `[Filtered]`;
//! model prompts and outputs (fields named `prompt`, `completion`, `input`,
//! `output`, `response`, `messages`, …) are removed unless
//! `HYPERKIT_SENTRY_SEND_PROMPTS` is on.
//!
//! Events are sent by this module's transport over the workspace's `reqwest`
//! (rustls) from a thread of its own, with the `sentry` crate's own
//! `RateLimiter` reading `429`, `Retry-After` and `X-Sentry-Rate-Limits`.
//! An envelope that could not reach Sentry waits in the bounded queue and is
//! sent again; one refused, rate limited, or over the queue's bound is
//! dropped and counted in `hyperkit_obs_dropped_total{sink="sentry"}` (and in
//! Sentry's client reports).
//!
//! This module never blocks the caller (the queue is bounded and never waited
//! for; only a panic waits, up to [`FLUSH_DEADLINE`], as Sentry's panic hook
//! does, so the report leaves before the process may end), never panics, and
//! never lets a secret or, unless asked, a prompt leave the process. Without
//! a DSN none of it runs.

mod config;
mod layer;
mod scrub;
mod transport;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::sentry::types::Dsn;
use ::sentry::{ClientInitGuard, ClientOptions};

pub use config::SentryConfig;
pub use layer::{SentryLayer, TrackedCalls, layer};

use crate::MonitoringConfig;
use crate::config::ConfigError;
use crate::metrics::record_dropped;

/// How long dropping the [`ObsGuard`](crate::ObsGuard) waits for queued
/// events to be sent.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// The sink name of the transport: its `sink` label, readiness check and
/// thread.
pub const SINK: &str = "sentry";

/// Frames of these crates are not the user's code: stack traces and their
/// grouping start below them.
const NOT_IN_APP: &[&str] = &[
    "hyperkit_obs::",
    "sentry_panic::",
    "tracing::",
    "tracing_subscriber::",
    "__rustc::",
];

/// Why the Sentry client could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SentryError {
    /// `SENTRY_DSN` or another `SENTRY_*` value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Its HTTP client could not be built.
    #[error("the Sentry client cannot start: {0}")]
    Setup(String),
}

/// Keeps the Sentry client running; dropping it sends what is queued, for at
/// most [`FLUSH_DEADLINE`], and shuts the client down.
pub(crate) struct SentryGuard {
    guard: ClientInitGuard,
}

impl fmt::Debug for SentryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentryGuard")
            .field("enabled", &self.guard.is_enabled())
            .finish()
    }
}

impl Drop for SentryGuard {
    fn drop(&mut self) {
        self.guard.close(Some(FLUSH_DEADLINE));
    }
}

/// Starts the Sentry client when the configuration has a DSN; `Ok(None)`
/// otherwise, having touched nothing.
pub(crate) fn start(config: &MonitoringConfig) -> Result<Option<SentryGuard>, SentryError> {
    let Some(dsn_secret) = &config.sentry.dsn else {
        return Ok(None);
    };
    let dsn: Dsn = dsn_secret
        .expose()
        .parse()
        .map_err(|e| ConfigError::Invalid {
            variable: "SENTRY_DSN",
            value: "***".to_owned(),
            problem: format!("is not a Sentry DSN ({e})"),
            example: "https://<public key>@o0.ingest.sentry.io/<project id>",
        })?;
    if !(0.0..=1.0).contains(&config.sentry.sample_rate) {
        return Err(ConfigError::Invalid {
            variable: "HYPERKIT_SENTRY_SAMPLE_RATE",
            value: config.sentry.sample_rate.to_string(),
            problem: "must be a number from 0.0 to 1.0".to_owned(),
            example: "0.25",
        }
        .into());
    }
    let factory = transport_factory()?;

    let mut secrets: Vec<String> = config.secrets().into_iter().map(str::to_owned).collect();
    secrets.push(dsn.public_key().to_owned());
    secrets.extend(dsn.secret_key().map(str::to_owned));
    secrets.extend(secrets_in_environment());
    let scrubber = Arc::new(scrub::Scrubber::new(secrets, config.sentry.send_prompts));

    let mut options = ClientOptions::new().sample_rate(config.sentry.sample_rate);
    options.dsn = Some(dsn);
    options.release = config.sentry.release.clone().map(Cow::Owned);
    options.environment = config
        .sentry
        .environment
        .clone()
        .or_else(|| config.environment.clone())
        .map(Cow::Owned);
    options.shutdown_timeout = FLUSH_DEADLINE;
    options.integrations = vec![Arc::new(layer::TrackedCallTags)];
    options.transport = Some(factory);
    let on_event = Arc::clone(&scrubber);
    options.in_app_exclude = NOT_IN_APP.to_vec();
    options.before_send = Some(Arc::new(move |event| {
        let Some(scrubbed) = on_event.scrub_event(event) else {
            record_dropped(SINK, 1);
            return None;
        };
        Some(layer::finish_fingerprint(scrubbed))
    }));
    options.before_breadcrumb = Some(Arc::new(move |crumb| {
        Some(scrubber.scrub_breadcrumb(crumb))
    }));

    let guard = ::sentry::init(options);
    // `init` binds the client to this thread's hub; threads started later
    // inherit from the process hub, so bind it there too.
    let main = ::sentry::Hub::main();
    if !Arc::ptr_eq(&main, &::sentry::Hub::current()) {
        main.bind_client(::sentry::Hub::current().client());
    }
    Ok(Some(SentryGuard { guard }))
}

/// The transport `init()` gives the Sentry client it starts, for a client
/// set up by hand: envelopes go out from the shared export runtime's worker
/// thread over the workspace's `reqwest` (rustls), never waiting in the
/// caller; they wait in a bounded queue (64 envelopes) while Sentry cannot
/// be reached and are sent again, and what overflows, is refused or is rate
/// limited is counted in `hyperkit_obs_dropped_total{sink="sentry"}`. The
/// sink's status is in [`crate::export::statuses`] under its envelope URL.
///
/// ```no_run
/// let mut options = sentry::ClientOptions::new();
/// options.dsn = "https://key@o0.ingest.sentry.io/1".parse().ok();
/// options.transport = Some(hyperkit_obs::sentry::transport_factory()?);
/// let _guard = sentry::init(options);
/// # Ok::<(), hyperkit_obs::sentry::SentryError>(())
/// ```
pub fn transport_factory() -> Result<Arc<dyn ::sentry::TransportFactory>, SentryError> {
    // Proxies come from HTTP_PROXY/HTTPS_PROXY/NO_PROXY, as for the other
    // sinks.
    let http = reqwest::Client::builder()
        .timeout(transport::REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| SentryError::Setup(e.to_string()))?;
    Ok(Arc::new(transport::HttpTransportFactory { http }))
}

/// Sends what the Sentry client has queued, waiting at most `timeout`;
/// `true` when everything went out (or Sentry is not running). Call it
/// before `std::process::exit`, which skips the guard's drop.
pub fn flush(timeout: Duration) -> bool {
    ::sentry::Hub::current()
        .client()
        .is_none_or(|client| client.flush(Some(timeout)))
}

/// The host and port a DSN sends to, if it is one (for `hyperkit-obs check`
/// to see whether it answers).
pub fn dsn_address(dsn: &str) -> Option<(String, u16)> {
    let d: Dsn = dsn.parse().ok()?;
    Some((d.host().to_owned(), d.port()))
}

/// Values of environment variables whose names mark them as secrets
/// (`MLFLOW_TRACKING_TOKEN`, `OPENAI_API_KEY`, …), scrubbed wherever they
/// appear. Short values would scrub ordinary words, so they are left out.
fn secrets_in_environment() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, value)| {
            value.len() >= 8
                && (scrub::is_secret_name(name) || name.to_ascii_uppercase().ends_with("_KEY"))
        })
        .map(|(_, value)| value)
        .collect()
}
