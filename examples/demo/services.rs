//! The demo's two services: an API that receives builds and an agent that
//! runs them (each build calls a model and the database, and deploys) and
//! the demo's other model calls. They run in this one process on two ports
//! and call each other over HTTP: the API hands a build to the agent, the
//! agent reports its end back to the API, and each request carries its
//! caller's trace context (`traceparent`, from
//! [`hyperkit_obs::trace::header_map`]) which the receiving router's
//! `HttpMetricsLayer` reads. So a build's log lines in both services, its
//! tracked calls and its spans share one trace id.
//!
//! Both services share one `init()`, so one `service.name`: their log lines
//! say which service wrote them in `demo.service` (`api` or `agent`), a
//! field of the `tracing` span each service's work runs in. The line a
//! service writes when a request of the other arrives names the calling
//! span in `parent.id` (as Elastic APM names a span's parent), so the
//! parent of each hop is visible in the logs too.
//!
//! Nothing here panics on what arrives: an unknown chain is a 404, an
//! unknown status a 422, an agent that cannot be reached a 502 and a WARN
//! line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use hyperkit_obs::LabelValue;
use hyperkit_obs::trace::{FutureExt as _, header_map};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::{CHAINS, Chain, Settings, build};

/// What the demo runs in the background (builds the agent accepted, the
/// submissions of builds, model calls): stopping the demo cancels them.
pub(crate) type Jobs = Arc<Mutex<JoinSet<()>>>;

/// The jobs, locked (a job that panicked while spawning left no harm).
pub(crate) fn lock(jobs: &Jobs) -> MutexGuard<'_, JoinSet<()>> {
    jobs.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The span the API's work runs in: its log lines say `demo.service=api`.
pub(crate) fn api_span() -> tracing::Span {
    tracing::info_span!("api", demo.service = "api")
}

/// The span the agent's work runs in: its log lines say
/// `demo.service=agent`.
pub(crate) fn agent_span() -> tracing::Span {
    tracing::info_span!("agent", demo.service = "agent")
}

fn chain_named(name: &str) -> Option<Chain> {
    CHAINS.into_iter().find(|c| c.as_label() == name)
}

/// How many builds' states the API keeps for `GET /api/builds/{id}`.
const KEPT: usize = 10_000;

/// The API's state.
#[derive(Clone)]
pub(crate) struct Api {
    agent: String,
    client: reqwest::Client,
    next_id: Arc<AtomicU64>,
    builds: Arc<Mutex<BTreeMap<u64, &'static str>>>,
}

impl Api {
    /// The API of builds run by the agent at `agent` (`http://host:port`).
    pub(crate) fn new(agent: String, client: reqwest::Client) -> Self {
        Api {
            agent,
            client,
            next_id: Arc::new(AtomicU64::new(1)),
            builds: Arc::default(),
        }
    }

    fn builds(&self) -> MutexGuard<'_, BTreeMap<u64, &'static str>> {
        self.builds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, id: u64, status: &'static str) {
        let mut builds = self.builds();
        builds.insert(id, status);
        while builds.len() > KEPT {
            builds.pop_first();
        }
    }

    /// `POST /api/chains/{chain}/builds` (a build is received and handed to
    /// the agent), `GET /api/builds/{id}` (its state) and
    /// `PUT /api/builds/{id}/status` (the agent says how it ended).
    pub(crate) fn routes(self) -> Router {
        Router::new()
            .route("/api/chains/{chain}/builds", post(submit))
            .route("/api/builds/{id}", get(status))
            .route("/api/builds/{id}/status", put(finished))
            .with_state(self)
    }
}

async fn submit(State(api): State<Api>, Path(chain): Path<String>) -> (StatusCode, String) {
    async move {
        let Some(chain) = chain_named(&chain) else {
            return (StatusCode::NOT_FOUND, format!("no chain {chain:?}\n"));
        };
        let id = api.next_id.fetch_add(1, Ordering::Relaxed);
        api.set(id, "queued");
        let label = chain.as_label();
        tracing::info!(build.id = id, chain = %label, "build {id} received");
        let url = format!("{}/builds/{label}/{id}", api.agent);
        // The request carries this request's trace context: the agent's
        // request span, and the build under it, are its children.
        let handed = api.client.post(&url).headers(header_map()).send().await;
        match handed.as_ref().map(reqwest::Response::status) {
            Ok(answer) if answer.is_success() => {
                tracing::info!(build.id = id, "build {id} handed to the agent");
                (
                    StatusCode::ACCEPTED,
                    format!("{{\"id\":{id},\"status\":\"queued\"}}"),
                )
            }
            answer => {
                let why = match answer {
                    Ok(status) => format!("answered {status}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(build.id = id, "the agent did not take build {id}: {why}");
                api.set(id, "rejected");
                (StatusCode::BAD_GATEWAY, format!("agent: {why}\n"))
            }
        }
    }
    .instrument(api_span())
    .await
}

async fn status(State(api): State<Api>, Path(id): Path<u64>) -> String {
    let status = api.builds().get(&id).copied().unwrap_or("unknown");
    format!("{{\"id\":{id},\"status\":\"{status}\"}}")
}

/// The span id of the caller named by a request's `traceparent`, as hex.
fn parent_id(headers: &HeaderMap) -> String {
    hyperkit_obs::trace::extract_headers(headers)
        .map(|parent| parent.span_id().to_string())
        .unwrap_or_default()
}

async fn finished(
    State(api): State<Api>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let status = match body.trim() {
        "succeeded" => "succeeded",
        "failed" => "failed",
        _ => return StatusCode::UNPROCESSABLE_ENTITY,
    };
    if !api.builds().contains_key(&id) {
        return StatusCode::NOT_FOUND;
    }
    api.set(id, status);
    let parent = parent_id(&headers);
    api_span()
        .in_scope(|| tracing::info!(build.id = id, parent.id = %parent, "build {id} {status}"));
    StatusCode::NO_CONTENT
}

/// The agent's state.
#[derive(Clone)]
pub(crate) struct Agent {
    settings: Arc<Settings>,
    jobs: Jobs,
    client: reqwest::Client,
    /// The API's address, known once it listens (after the agent).
    api: Arc<OnceLock<String>>,
}

impl Agent {
    /// An agent running its builds among `jobs`.
    pub(crate) fn new(settings: Arc<Settings>, jobs: Jobs, client: reqwest::Client) -> Self {
        Agent {
            settings,
            jobs,
            client,
            api: Arc::default(),
        }
    }

    /// Where the agent reports the end of builds (`http://host:port`).
    pub(crate) fn report_to(&self, api: String) {
        let _ = self.api.set(api);
    }

    /// `POST /builds/{chain}/{id}`: runs the build in the background.
    pub(crate) fn routes(self) -> Router {
        Router::new()
            .route("/builds/{chain}/{id}", post(run))
            .with_state(self)
            .layer(hyperkit_obs::http::HttpMetricsLayer::new())
    }
}

async fn run(
    State(agent): State<Agent>,
    Path((chain, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> StatusCode {
    let Some(chain) = chain_named(&chain) else {
        return StatusCode::NOT_FOUND;
    };
    let span = agent_span();
    let parent = parent_id(&headers);
    span.in_scope(|| {
        tracing::info!(build.id = id, chain = %chain.as_label(), parent.id = %parent, "build {id} accepted");
    });
    let jobs = agent.jobs.clone();
    let job = async move {
        let status = match build(chain, agent.settings.clone(), id).await {
            Ok(_) => "succeeded",
            Err(_) => "failed",
        };
        let Some(api) = agent.api.get() else { return };
        let url = format!("{api}/api/builds/{id}/status");
        let told = agent
            .client
            .put(&url)
            .headers(header_map())
            .body(status)
            .send()
            .await;
        if let Err(e) = told.and_then(reqwest::Response::error_for_status) {
            tracing::warn!(build.id = id, "could not report build {id} to the API: {e}");
        }
    }
    .instrument(span)
    // The build runs after this request has been answered, still in its
    // trace: its span is the request span's child.
    .in_current_trace();
    lock(&jobs).spawn(job);
    StatusCode::ACCEPTED
}

/// What the demo's users do: submit a build of `chain` to the API at `api`.
pub(crate) async fn submit_build(client: reqwest::Client, api: String, chain: Chain) {
    let url = format!("{api}/api/chains/{}/builds", chain.as_label());
    let sent = client.post(&url).send().await;
    if let Err(e) = sent.and_then(reqwest::Response::error_for_status) {
        tracing::warn!("submitting a build to {url} failed: {e}");
    }
}
