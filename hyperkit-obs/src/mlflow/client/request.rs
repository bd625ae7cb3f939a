//! One request to the tracking server: credentials attached, the answer
//! read up to a bound and typed from MLflow's `{error_code, message}`
//! body, and retried as MLflow's Python client retries (a request whose
//! effect is unknown only when replaying it is safe). Credentials echoed
//! in an error body are replaced by `***` before the error exists, so no
//! error or log line carries a secret. Nothing here panics on an answer.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{MAX_ANSWER_BYTES, MlflowClient, Replay};
use crate::mlflow::config::{MlflowAuth, RetryPolicy};
use crate::mlflow::error::{ErrorCode, MlflowError, is_retryable_status};

/// The longest a `Retry-After` is obeyed for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// urllib3's `DEFAULT_BACKOFF_MAX`.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

impl MlflowClient {
    pub(super) async fn post<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: serde_json::Value,
        replay: Replay,
    ) -> Result<T, MlflowError> {
        self.call(reqwest::Method::POST, endpoint, &[], Some(body), replay)
            .await
    }

    pub(super) async fn call<T: DeserializeOwned>(
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
