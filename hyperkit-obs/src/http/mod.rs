//! The HTTP side of observability: `/metrics`, `/health/live`,
//! `/health/ready`, the status page (`/`, `/api/status/history`), a tower layer that gives any service RED metrics, and a
//! hardened stand-alone server.
//!
//! [`router()`] is an axum `Router` that merges into the user's own; the
//! layers it carries (body size and time limits) apply to its routes only.
//! Handlers never block on anything but the registry's own short locks, and
//! a failing check turns readiness to 503; nothing here panics on input.

mod history;
mod layer;
mod server;
mod status_page;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::MonitoringConfig;
use crate::config::MetricsAuth;

pub use layer::{HttpMetrics, HttpMetricsLayer};
pub use server::{HEADER_TIMEOUT, MAX_CONNECTIONS, SHUTDOWN_GRACE, Server, serve, serve_router};

pub use crate::metrics::{METRICS_CONTENT_TYPE, render as render_metrics};

/// Default largest request body accepted by the observability endpoints.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;
/// Default time one request to the observability endpoints may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the observability routes behave. `Default` is open `/metrics`, the
/// documented check timeout and cache, and the limits above.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Credentials required to read `/metrics` (health stays open).
    pub auth: Option<MetricsAuth>,
    /// How long one readiness check may take.
    pub check_timeout: Duration,
    /// How long a readiness check's result is reused.
    pub check_cache: Duration,
    /// Largest request body accepted (413 above it).
    pub body_limit: usize,
    /// Time limit of one request (408 past it).
    pub request_timeout: Duration,
    /// Where the status page is served, or `None` for no page (its data,
    /// `/api/status/history`, is served with it). Default
    /// [`DEFAULT_STATUS_PAGE`]; [`serve`] puts it at `/`.
    pub status_page: Option<String>,
}

/// Where [`router()`] serves the status page: out of the way of an app's
/// own `/`, so that merging the router never collides with it.
pub const DEFAULT_STATUS_PAGE: &str = "/_status";

/// Where the status page's data is served, whatever the page's path.
pub const STATUS_HISTORY_PATH: &str = "/api/status/history";

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            auth: None,
            check_timeout: crate::health::DEFAULT_TIMEOUT,
            check_cache: crate::health::DEFAULT_CACHE,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            status_page: Some(DEFAULT_STATUS_PAGE.to_owned()),
        }
    }
}

impl HttpOptions {
    /// The options a configuration asks for.
    pub fn from_config(config: &MonitoringConfig) -> Self {
        HttpOptions {
            auth: config.metrics_auth.clone(),
            check_timeout: config.health_timeout,
            check_cache: config.health_cache,
            ..HttpOptions::default()
        }
    }

    /// Requires these credentials on `/metrics`.
    pub fn auth(mut self, auth: MetricsAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Sets the readiness check timeout and cache interval.
    pub fn checks(mut self, timeout: Duration, cache: Duration) -> Self {
        self.check_timeout = timeout;
        self.check_cache = cache;
        self
    }

    /// Serves the status page at `path` (`/`, `/_status`, `/ops/status`).
    /// A path that does not start with `/` gets one.
    pub fn status_page(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.status_page = Some(if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        });
        self
    }

    /// Serves no status page (nor its data).
    pub fn without_status_page(mut self) -> Self {
        self.status_page = None;
        self
    }
}

/// `GET /metrics`, `GET /health/live`, `GET /health/ready` and the status
/// page at [`DEFAULT_STATUS_PAGE`] (`/_status`), configured by what
/// [`init()`](crate::init) read (or the defaults before it ran). It merges
/// into an app that has its own `/`:
///
/// ```
/// use axum::{Router, routing::get};
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "my app's home" }))
///     .route("/api/builds/{id}", get(|| async { "ok" }))
///     .merge(hyperkit_obs::http::router())
///     // Last, so it also wraps the fallback (404s): `merge` keeps the
///     // merged router's fallback.
///     .layer(hyperkit_obs::http::HttpMetricsLayer::new());
/// # let _ = app;
/// ```
pub fn router() -> Router {
    router_with(HttpOptions::from_config(&crate::init::active_config()))
}

/// [`router()`] with explicit options.
///
/// With a status page ([`HttpOptions::status_page`]) it also serves the
/// page's data at [`STATUS_HISTORY_PATH`], and starts the sampler of the
/// in-process history when built inside a tokio runtime (else at the
/// first request).
pub fn router_with(options: HttpOptions) -> Router {
    let body_limit = options.body_limit;
    let timeout = options.request_timeout;
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready));
    if let Some(page) = &options.status_page {
        history::start();
        router = router
            .route(page, get(status_page::page))
            .route(STATUS_HISTORY_PATH, get(status_page::history));
    }
    router
        .with_state(Arc::new(options))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
}

async fn metrics(State(options): State<Arc<HttpOptions>>, headers: HeaderMap) -> Response {
    if let Some(auth) = &options.auth
        && !authorized(auth, headers.get(header::AUTHORIZATION))
    {
        let challenge = match auth {
            MetricsAuth::Bearer(_) => "Bearer realm=\"metrics\"",
            MetricsAuth::ApiKey(_) => "ApiKey realm=\"metrics\"",
            MetricsAuth::Basic { .. } => "Basic realm=\"metrics\"",
        };
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            "credentials required\n",
        )
            .into_response();
    }
    // OpenMetrics (with exemplars) to a scraper that prefers it; the text
    // format to everyone else.
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(crate::metrics::prefers_openmetrics);
    let (body, content_type) = if openmetrics {
        (
            crate::metrics::render_openmetrics(crate::metrics::registry()),
            HeaderValue::from_static(crate::metrics::OPENMETRICS_CONTENT_TYPE),
        )
    } else {
        (
            render_metrics(crate::metrics::registry()),
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )
    };
    if accepts_gzip(&headers)
        && let Some(gz) = gzip(&body)
    {
        return (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                (
                    header::VARY,
                    HeaderValue::from_static("accept, accept-encoding"),
                ),
            ],
            gz,
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::VARY,
                HeaderValue::from_static("accept, accept-encoding"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn live() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"alive\"}",
    )
        .into_response()
}

async fn ready(State(options): State<Arc<HttpOptions>>) -> Response {
    let readiness = crate::health::readiness(options.check_timeout, options.check_cache).await;
    let code = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        serde_json::to_vec(&readiness).unwrap_or_else(|_| b"{\"status\":\"not_ready\"}".to_vec());
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

fn authorized(auth: &MetricsAuth, given: Option<&HeaderValue>) -> bool {
    let Some(given) = given.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match auth {
        MetricsAuth::Bearer(token) => given
            .strip_prefix("Bearer ")
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.expose().as_bytes())),
        MetricsAuth::ApiKey(key) => given
            .strip_prefix("ApiKey ")
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), key.expose().as_bytes())),
        MetricsAuth::Basic { username, password } => {
            let expected = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose()));
            given
                .strip_prefix("Basic ")
                .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), expected.as_bytes()))
        }
    }
}

/// Compares without returning early, so the time taken does not reveal how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            m
        };
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, GZIP;q=0.5")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn credentials_are_compared_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
