//! The status page: `GET /` serves one self-contained HTML document (its
//! style and script inline, so no request leaves the machine, which the
//! Content-Security-Policy enforces), and `GET /api/status/history` the
//! sampled history plus the readiness checks it draws.
//!
//! Handlers copy the history out under its lock and run the checks with
//! their usual timeout and cache; they never block on the sampler.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::HttpOptions;

const PAGE: &str = include_str!("status_page.html");

/// Only the page itself, its inline code and same-origin fetches.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

pub(super) async fn page() -> Response {
    super::history::start();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

#[derive(serde::Serialize)]
struct Answer {
    #[serde(flatten)]
    history: super::history::Snapshot,
    readiness: crate::health::Readiness,
    /// Every running sink's queue and state.
    sinks: Vec<crate::export::SinkStatus>,
}

pub(super) async fn history(State(options): State<Arc<HttpOptions>>) -> Response {
    super::history::start();
    let readiness = crate::health::readiness(options.check_timeout, options.check_cache).await;
    let answer = Answer {
        history: super::history::snapshot(),
        readiness,
        sinks: crate::export::statuses(),
    };
    let body = serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec());
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
