//! [`MlflowClient`]: an async client for the parts of MLflow's REST API
//! (`/api/2.0/mlflow/…`) that tracking needs.
//!
//! Requests are retried as MLflow's Python client retries them: on 408, 429,
//! 500, 502, 503 and 504 and on failed connections, up to
//! `MLFLOW_HTTP_REQUEST_MAX_RETRIES` times, waiting `factor × 2^(n-1)`
//! seconds plus jitter (or what `Retry-After` asks). Errors are typed from
//! MLflow's `{error_code, message}` body, never from the status alone.
//!
//! This module holds the client, its construction and the limits it
//! keeps to; `experiments` and `runs` are the API areas, `request` sends
//! one request with retries and types its answer, `batch` splits a
//! log-batch within MLflow's limits.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::config::{MlflowAuth, MlflowConfig, RetryPolicy, TrackingTarget};
use super::error::MlflowError;
use super::types::Run;

mod batch;
mod experiments;
mod request;
mod runs;

/// The most bytes of an answer read: a page of runs is some megabytes at
/// most, and a larger body is a broken or hostile server.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// MLflow's limits on one `runs/log-batch` request
/// (`mlflow.utils.validation`).
pub mod limits {
    /// Metrics per request (`MAX_METRICS_PER_BATCH`).
    pub const METRICS: usize = 1000;
    /// Params per request, and tags per request (`MAX_PARAMS_TAGS_PER_BATCH`).
    pub const PARAMS_OR_TAGS: usize = 100;
    /// Metrics, params and tags together (`MAX_ENTITIES_PER_BATCH`).
    pub const ENTITIES: usize = 1000;
    /// Bytes of one request body (`MAX_BATCH_LOG_REQUEST_SIZE`).
    pub const BYTES: usize = 1_000_000;
}

/// A page of `runs/search`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RunsPage {
    /// The runs of this page.
    #[serde(default)]
    pub runs: Vec<Run>,
    /// The token of the next page; `None` on the last.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// An MLflow tracking server client. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct MlflowClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: Option<MlflowAuth>,
    retry: RetryPolicy,
}

impl fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlflowClient")
            .field("base", &self.inner.base)
            .field(
                "auth",
                &match &self.inner.auth {
                    None => "none",
                    Some(MlflowAuth::Bearer(_) | MlflowAuth::ApiKey(_)) => "token ***",
                    Some(MlflowAuth::Basic { .. }) => "basic ***",
                },
            )
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// Whether a request may be sent again after an answer that does not say
/// whether it took effect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Sending it twice does no harm.
    Safe,
    /// Only retried when it certainly did not take effect: the connection
    /// failed, or the server answered 429 or 503 (refused before acting).
    Unsafe,
}

impl MlflowClient {
    /// A client for the server `config` names.
    pub fn new(config: &MlflowConfig) -> Result<Self, MlflowError> {
        let TrackingTarget::Server(base) = &config.target else {
            return Err(MlflowError::Setup(
                "MLFLOW_TRACKING_URI names a file store, not a server".to_owned(),
            ));
        };
        let http = reqwest::Client::builder()
            .timeout(config.retry.timeout)
            .connect_timeout(config.retry.timeout.min(Duration::from_secs(10)))
            .danger_accept_invalid_certs(config.insecure_tls)
            .user_agent(concat!("hyperkit-obs/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(config.concurrency.max(1) * 2)
            .build()
            .map_err(|e| MlflowError::Setup(e.to_string()))?;
        Ok(MlflowClient {
            inner: Arc::new(Inner {
                http,
                base: base.clone(),
                auth: config.auth.clone(),
                retry: config.retry.clone(),
            }),
        })
    }

    /// A client for the server at `url` with MLflow's default settings.
    pub fn from_url(url: &str) -> Result<Self, MlflowError> {
        let config = MlflowConfig::from_lookup(|name| {
            (name == "MLFLOW_TRACKING_URI").then(|| url.to_owned())
        })
        .map_err(|e| MlflowError::Setup(e.to_string()))?;
        Self::new(&config)
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The `Authorization` header this client sends, if any.
    pub(crate) fn authorization(&self) -> Option<reqwest::header::HeaderValue> {
        use base64::Engine as _;
        let value = match &self.inner.auth {
            None => return None,
            Some(MlflowAuth::Bearer(t)) => format!("Bearer {}", t.expose()),
            Some(MlflowAuth::ApiKey(k)) => format!("ApiKey {}", k.expose()),
            Some(MlflowAuth::Basic { username, password }) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            ),
        };
        let mut value = reqwest::header::HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// The server's version (`GET /version`, which MLflow 2 and 3 serve as
    /// text): `Ok(None)` when the server has no such page.
    pub(crate) async fn server_version(&self) -> Result<Option<String>, String> {
        let mut request = self.inner.http.get(format!("{}/version", self.inner.base));
        if let Some(auth) = self.authorization() {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request.send().await.map_err(|e| {
            format!(
                "cannot reach {}: {}",
                self.inner.base,
                crate::net::error_chain(&e)
            )
        })?;
        let status = response.status().as_u16();
        let text = crate::net::read_text_capped(response, 1024)
            .await
            .map_err(|e| e.to_string())?;
        match status {
            200 => Ok(Some(text.trim().to_owned())),
            404 => Ok(None),
            _ => Err(format!("{}/version answered {status}", self.inner.base)),
        }
    }
}
