//! [`MlflowClient`]: an async client for the parts of MLflow's REST API
//! (`/api/2.0/mlflow/…`) that tracking needs.
//!
//! Requests are retried as MLflow's Python client retries them: on 408, 429,
//! 500, 502, 503 and 504 and on failed connections, up to
//! `MLFLOW_HTTP_REQUEST_MAX_RETRIES` times, waiting `factor × 2^(n-1)`
//! seconds plus jitter (or what `Retry-After` asks). Errors are typed from
//! MLflow's `{error_code, message}` body, never from the status alone.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::{MlflowAuth, MlflowConfig, RetryPolicy, TrackingTarget};
use super::error::{ErrorCode, MlflowError, is_retryable_status};
use super::types::{
    Experiment, KeyValue, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, Metric, Run, RunInfo,
    RunRecord, RunStatus, ViewType, truncate_value, validate_key,
};

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

/// The longest a `Retry-After` is obeyed for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// urllib3's `DEFAULT_BACKOFF_MAX`.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

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

    /// The experiment named `name`, if there is one.
    pub async fn get_experiment_by_name(
        &self,
        name: &str,
    ) -> Result<Option<Experiment>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            experiment: Experiment,
        }
        let answer: Result<Answer, _> = self
            .call(
                reqwest::Method::GET,
                "experiments/get-by-name",
                &[("experiment_name", name)],
                None,
                Replay::Safe,
            )
            .await;
        match answer {
            Ok(a) => Ok(Some(a.experiment)),
            Err(e) if e.code() == Some(&ErrorCode::ResourceDoesNotExist) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the experiment `name` and returns its id. Fails with
    /// `RESOURCE_ALREADY_EXISTS` when the name is taken.
    pub async fn create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            experiment_id: String,
        }
        let a: Answer = self
            .post(
                "experiments/create",
                json!({ "name": name }),
                Replay::Unsafe,
            )
            .await?;
        Ok(a.experiment_id)
    }

    /// The id of the experiment `name`, created if missing. Safe when
    /// several processes do it at once: the loser of the race reads the
    /// winner's experiment. A deleted experiment is
    /// [`MlflowError::ExperimentDeleted`]: MLflow keeps its name until it is
    /// restored or purged.
    pub async fn get_or_create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if let Some(e) = self.get_experiment_by_name(name).await? {
            return active(e);
        }
        match self.create_experiment(name).await {
            Ok(id) => Ok(id),
            Err(e) if e.code() == Some(&ErrorCode::ResourceAlreadyExists) => {
                match self.get_experiment_by_name(name).await? {
                    Some(found) => active(found),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a run. Not replayed after an answer that leaves its effect
    /// unknown (see [`MlflowError::Transport::maybe_sent`]): the caller
    /// decides, e.g. by searching for a tag it set.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            run: Run,
        }
        let tags = checked_tags(tags)?;
        let a: Answer = self
            .post(
                "runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": start_time,
                    "tags": tags,
                }),
                Replay::Unsafe,
            )
            .await?;
        Ok(a.run.info)
    }

    /// Logs metrics, params and tags to a run, in as few `runs/log-batch`
    /// requests as MLflow's limits allow (see [`limits`]). Every key is
    /// checked before anything is sent; values longer than MLflow accepts
    /// are cut as its Python client cuts them, with a warning.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), MlflowError> {
        for body in batches(run_id, metrics, params, tags)? {
            let _: serde_json::Value = self.post("runs/log-batch", body, Replay::Safe).await?;
        }
        Ok(())
    }

    /// Sets a run's status and end time.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time: Option<i64>,
    ) -> Result<(), MlflowError> {
        let mut body = json!({ "run_id": run_id, "run_uuid": run_id, "status": status.as_str() });
        if let Some(end) = end_time {
            body["end_time"] = json!(end);
        }
        let _: serde_json::Value = self.post("runs/update", body, Replay::Safe).await?;
        Ok(())
    }

    /// Delivers a whole run: create (with its tags), log-batch (params,
    /// metrics), update (status, end time). Returns the run id.
    pub async fn log_run(
        &self,
        experiment_id: &str,
        run: &RunRecord,
    ) -> Result<String, MlflowError> {
        let info = self
            .create_run(experiment_id, &run.run_name, run.start_time, &run.tags)
            .await?;
        self.complete_run(&info.run_id, run).await?;
        Ok(info.run_id)
    }

    /// The steps of [`log_run`](Self::log_run) after the run exists: params
    /// and metrics, then status and end time. Safe to repeat.
    pub async fn complete_run(&self, run_id: &str, run: &RunRecord) -> Result<(), MlflowError> {
        if !run.params.is_empty() || !run.metrics.is_empty() {
            self.log_batch(run_id, &run.metrics, &run.params, &[])
                .await?;
        }
        if run.end_time.is_some() || run.status != RunStatus::Running {
            self.update_run(run_id, run.status, run.end_time).await?;
        }
        Ok(())
    }

    /// One page of `runs/search` over the active runs.
    pub async fn search_runs(
        &self,
        experiment_ids: &[&str],
        filter: &str,
        max_results: u32,
        page_token: Option<&str>,
    ) -> Result<RunsPage, MlflowError> {
        self.search_runs_in(
            ViewType::ActiveOnly,
            experiment_ids,
            filter,
            max_results,
            page_token,
        )
        .await
    }

    /// One page of `runs/search` over the runs `view` sees.
    pub(crate) async fn search_runs_in(
        &self,
        view: ViewType,
        experiment_ids: &[&str],
        filter: &str,
        max_results: u32,
        page_token: Option<&str>,
    ) -> Result<RunsPage, MlflowError> {
        let mut body = json!({
            "experiment_ids": experiment_ids,
            "filter": filter,
            "max_results": max_results,
            "run_view_type": view.as_str(),
        });
        if let Some(token) = page_token {
            body["page_token"] = json!(token);
        }
        self.post("runs/search", body, Replay::Safe).await
    }

    /// Every active run matching `filter`, following `next_page_token` to
    /// the end.
    pub async fn search_all_runs(
        &self,
        experiment_ids: &[&str],
        filter: &str,
    ) -> Result<Vec<Run>, MlflowError> {
        self.search_all_runs_in(ViewType::ActiveOnly, experiment_ids, filter)
            .await
    }

    /// Every run `view` sees matching `filter`, following `next_page_token`
    /// to the end.
    pub(crate) async fn search_all_runs_in(
        &self,
        view: ViewType,
        experiment_ids: &[&str],
        filter: &str,
    ) -> Result<Vec<Run>, MlflowError> {
        let mut runs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .search_runs_in(view, experiment_ids, filter, 1000, token.as_deref())
                .await?;
            runs.extend(page.runs);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(runs),
            }
        }
    }

    /// Every value ever logged for metric `key` of a run, following pages.
    pub async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<Metric>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            metrics: Vec<Metric>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let a: Answer = self
                .call(
                    reqwest::Method::GET,
                    "metrics/get-history",
                    &query,
                    None,
                    Replay::Safe,
                )
                .await?;
            out.extend(a.metrics);
            match a.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: serde_json::Value,
        replay: Replay,
    ) -> Result<T, MlflowError> {
        self.call(reqwest::Method::POST, endpoint, &[], Some(body), replay)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        endpoint: &'static str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
        replay: Replay,
    ) -> Result<T, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.inner.base);
        let body = body.map(|b| b.to_string());
        let mut attempt = 0u32;
        loop {
            let mut req = self.inner.http.request(method.clone(), &url);
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            req = match &self.inner.auth {
                None => req,
                Some(MlflowAuth::Bearer(t)) => req.bearer_auth(t.expose()),
                Some(MlflowAuth::ApiKey(k)) => req.header(
                    reqwest::header::AUTHORIZATION,
                    format!("ApiKey {}", k.expose()),
                ),
                Some(MlflowAuth::Basic { username, password }) => {
                    req.basic_auth(username, Some(password.expose()))
                }
            };
            let (error, retry_after) = match req.send().await {
                Err(e) => (transport(endpoint, &e, !e.is_connect()), None),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = crate::net::retry_after(resp.headers());
                    match crate::net::read_text_capped(resp, MAX_ANSWER_BYTES).await {
                        Err(crate::net::BodyError::Transport(e)) => {
                            (transport(endpoint, &e, true), None)
                        }
                        Err(e @ crate::net::BodyError::TooLarge(_)) => {
                            return Err(MlflowError::Decode {
                                endpoint,
                                message: e.to_string(),
                            });
                        }
                        Ok(text) if (200..300).contains(&status) => {
                            let text = if text.trim().is_empty() { "{}" } else { &text };
                            return serde_json::from_str(text).map_err(|e| MlflowError::Decode {
                                endpoint,
                                message: e.to_string(),
                            });
                        }
                        Ok(text) => {
                            let text = self.scrub(text);
                            (api_error(endpoint, status, &text), retry_after)
                        }
                    }
                }
            };
            error
                .pipe_retry(self, replay, &mut attempt, retry_after)
                .await?;
        }
    }

    /// An error body with the credentials replaced by `***`: gateways and
    /// proxies echo the `Authorization` header, and the error is logged.
    fn scrub(&self, mut text: String) -> String {
        use base64::Engine as _;
        let secrets = match &self.inner.auth {
            None => return text,
            Some(MlflowAuth::Bearer(t) | MlflowAuth::ApiKey(t)) => vec![t.expose().to_owned()],
            Some(MlflowAuth::Basic { username, password }) => vec![
                password.expose().to_owned(),
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose())),
            ],
        };
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    /// The wait before retry number `attempt` (1-based), as urllib3 computes
    /// it: none before the first, `factor × 2^(n-1)` after, at most 120 s,
    /// plus up to `jitter` seconds at random.
    pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
        let base = if attempt <= 1 {
            0.0
        } else {
            policy.backoff_factor * 2f64.powi(i32::try_from(attempt - 1).unwrap_or(30))
        };
        let base = base.min(MAX_BACKOFF.as_secs_f64());
        Duration::from_secs_f64(base + policy.backoff_jitter * crate::util::random_unit())
    }
}

impl MlflowError {
    /// Sleeps and returns `Ok(())` when the failed request should be sent
    /// again, or gives the error back.
    async fn pipe_retry(
        self,
        client: &MlflowClient,
        replay: Replay,
        attempt: &mut u32,
        retry_after: Option<Duration>,
    ) -> Result<(), MlflowError> {
        let policy = &client.inner.retry;
        let retryable = match &self {
            MlflowError::Transport { maybe_sent, .. } => replay == Replay::Safe || !maybe_sent,
            MlflowError::Api { status, .. } | MlflowError::Http { status, .. } => {
                is_retryable_status(*status)
                    && (replay == Replay::Safe || matches!(status, 429 | 503))
            }
            _ => false,
        };
        if !retryable || *attempt >= policy.max_retries {
            return Err(self);
        }
        *attempt += 1;
        let wait = retry_after
            .map(|d| d.min(MAX_RETRY_AFTER))
            .unwrap_or_else(|| MlflowClient::backoff(policy, *attempt));
        tracing::debug!(target: "hyperkit_obs::mlflow", error = %self, attempt = *attempt, wait_ms = wait.as_millis() as u64, "retrying MLflow request");
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

fn transport(endpoint: &'static str, e: &reqwest::Error, maybe_sent: bool) -> MlflowError {
    // reqwest's Display includes the URL, which holds no secret here (the
    // credentials left it when the configuration was read).
    MlflowError::Transport {
        endpoint,
        message: crate::net::error_chain(e),
        maybe_sent,
    }
}

/// Types an error answer from MLflow's body; a body that is not MLflow's
/// gives [`MlflowError::Http`].
fn api_error(endpoint: &'static str, status: u16, text: &str) -> MlflowError {
    #[derive(Deserialize)]
    struct Body {
        error_code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Body>(text) {
        Ok(b) => MlflowError::Api {
            endpoint,
            status,
            code: ErrorCode::from_name(&b.error_code),
            message: b.message,
        },
        Err(_) => MlflowError::Http {
            endpoint,
            status,
            body: text.chars().take(200).collect(),
        },
    }
}

/// The id of an experiment found by name, unless it is deleted.
fn active(e: Experiment) -> Result<String, MlflowError> {
    if e.lifecycle_stage == "deleted" {
        return Err(MlflowError::ExperimentDeleted {
            name: e.name,
            experiment_id: e.experiment_id,
        });
    }
    Ok(e.experiment_id)
}

/// Tags checked and cut to MLflow's limits.
fn checked_tags(tags: &[KeyValue]) -> Result<Vec<KeyValue>, MlflowError> {
    checked(tags, MAX_TAG_VALUE_LENGTH, "tag")
}

fn checked(list: &[KeyValue], max: usize, what: &str) -> Result<Vec<KeyValue>, MlflowError> {
    list.iter()
        .map(|kv| {
            validate_key(&kv.key)?;
            let mut kv = kv.clone();
            if truncate_value(&mut kv.value, max) {
                tracing::warn!(target: "hyperkit_obs::mlflow", key = %kv.key, limit = max, "the value of MLflow {what} `{}` is longer than MLflow accepts; it was cut to {max} characters", kv.key);
            }
            Ok(kv)
        })
        .collect()
}

#[derive(Serialize)]
struct BatchBody<'a> {
    run_id: &'a str,
    metrics: Vec<&'a Metric>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
}

/// Splits a log-batch into request bodies within MLflow's limits, checking
/// every key first so that nothing is sent when one is invalid.
pub(crate) fn batches(
    run_id: &str,
    metrics: &[Metric],
    params: &[KeyValue],
    tags: &[KeyValue],
) -> Result<Vec<serde_json::Value>, MlflowError> {
    for m in metrics {
        validate_key(&m.key)?;
    }
    let params = checked(params, MAX_PARAM_VALUE_LENGTH, "param")?;
    let tags = checked_tags(tags)?;
    let envelope = serde_json::to_string(&BatchBody {
        run_id,
        metrics: vec![],
        params: vec![],
        tags: vec![],
    })
    .map_or(100, |s| s.len());
    let mut out = Vec::new();
    let mut cur = BatchBody {
        run_id,
        metrics: Vec::new(),
        params: Vec::new(),
        tags: Vec::new(),
    };
    let mut bytes = envelope;
    let flush = |cur: &mut BatchBody<'_>, bytes: &mut usize, out: &mut Vec<serde_json::Value>| {
        if !(cur.metrics.is_empty() && cur.params.is_empty() && cur.tags.is_empty()) {
            let body = BatchBody {
                run_id,
                metrics: std::mem::take(&mut cur.metrics),
                params: std::mem::take(&mut cur.params),
                tags: std::mem::take(&mut cur.tags),
            };
            out.push(serde_json::to_value(&body).unwrap_or_default());
        }
        *bytes = envelope;
    };
    let count = |cur: &BatchBody<'_>| cur.metrics.len() + cur.params.len() + cur.tags.len();
    for p in params {
        let s = json_len(&p);
        if cur.params.len() == limits::PARAMS_OR_TAGS
            || count(&cur) == limits::ENTITIES
            || bytes + s > limits::BYTES
        {
            flush(&mut cur, &mut bytes, &mut out);
        }
        bytes += s;
        cur.params.push(p);
    }
    for t in tags {
        let s = json_len(&t);
        if cur.tags.len() == limits::PARAMS_OR_TAGS
            || count(&cur) == limits::ENTITIES
            || bytes + s > limits::BYTES
        {
            flush(&mut cur, &mut bytes, &mut out);
        }
        bytes += s;
        cur.tags.push(t);
    }
    for m in metrics {
        let s = json_len(m);
        if cur.metrics.len() == limits::METRICS
            || count(&cur) == limits::ENTITIES
            || bytes + s > limits::BYTES
        {
            flush(&mut cur, &mut bytes, &mut out);
        }
        bytes += s;
        cur.metrics.push(m);
    }
    flush(&mut cur, &mut bytes, &mut out);
    Ok(out)
}

/// An entity's size in a request body: its JSON and a comma.
fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_string(v).map_or(0, |s| s.len()) + 1
}
