//! Pushing the registry to a Prometheus Pushgateway, for batch jobs (a CLI
//! build) that may exit before any scrape.
//!
//! [`to_gateway`] replaces the metrics of one group (`PUT`); [`PushOnDrop`]
//! does it when the job ends, however it ends. Every push has a deadline; a
//! failed push is logged and counted in
//! `hyperkit_obs_dropped_total{sink="pushgateway"}`, never a panic.

use std::time::Duration;

use base64::Engine as _;

/// Default deadline of one push.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A grouping label name is not a valid Prometheus label name.
    #[error(
        "grouping label name {0:?} is invalid: use letters, digits and `_`, not starting with a digit or `__`"
    )]
    LabelName(String),
    /// A grouping label name is also a label of hyperkit-obs's own metrics
    /// (or `job`): the gateway would overwrite those values, or reject the
    /// push.
    #[error(
        "grouping label name {0:?} is a label of hyperkit-obs metrics, which the Pushgateway would overwrite: group by another name, such as `instance` or `batch`"
    )]
    ReservedName(String),
    /// The gateway URL is not an `http(s)://` URL.
    #[error("pushgateway URL {0:?} is invalid: write it like http://127.0.0.1:9091")]
    Url(String),
    /// The request failed (connection, timeout).
    #[error("pushgateway request failed: {0}")]
    Request(#[from] reqwest::Error),
    /// The gateway answered with an error.
    #[error("pushgateway answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
}

/// Labels of hyperkit-obs's own families, and `job`, which the path sets.
const RESERVED: &[&str] = &[
    "job",
    "chain",
    "status",
    "model",
    "task",
    "type",
    "accepted",
    "operation",
    "method",
    "route",
    "le",
    "sink",
    "metric",
    "label",
];

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// The gateway path of a group. Every value is base64url-encoded
/// (`name@base64/…`), which the Pushgateway documents for values that may
/// hold `/` or be empty, so no value can break out of its path segment.
fn group_url(url: &str, job: &str, grouping: &[(&str, &str)]) -> Result<String, PushError> {
    let base = url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(PushError::Url(url.to_owned()));
    }
    // The gateway spells an empty value as a lone `=`.
    let enc = |v: &str| match v {
        "" => "=".to_owned(),
        v => base64::engine::general_purpose::URL_SAFE.encode(v),
    };
    let mut path = format!("{base}/metrics/job@base64/{}", enc(job));
    for (name, value) in grouping {
        if !valid_label_name(name) {
            return Err(PushError::LabelName((*name).to_owned()));
        }
        if RESERVED.contains(name) {
            return Err(PushError::ReservedName((*name).to_owned()));
        }
        path.push_str(&format!("/{name}@base64/{}", enc(value)));
    }
    Ok(path)
}

/// Replaces the group `job` + `grouping` on the gateway at `url` with the
/// current contents of [`registry()`](crate::registry).
///
/// ```no_run
/// # async fn run() -> Result<(), hyperkit_obs::push::PushError> {
/// hyperkit_obs::push::to_gateway("http://127.0.0.1:9091", "nightly-build", &[("instance", "ci-runner-3")]).await?;
/// # Ok(()) }
/// ```
pub async fn to_gateway(url: &str, job: &str, grouping: &[(&str, &str)]) -> Result<(), PushError> {
    push(url, job, grouping, DEFAULT_TIMEOUT).await
}

async fn push(
    url: &str,
    job: &str,
    grouping: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), PushError> {
    let target = group_url(url, job, grouping)?;
    let body = crate::metrics::render(crate::metrics::registry());
    let response = reqwest::Client::builder()
        .timeout(timeout)
        .build()?
        .put(target)
        .header(
            reqwest::header::CONTENT_TYPE,
            crate::metrics::METRICS_CONTENT_TYPE,
        )
        .body(body)
        .send()
        .await?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = crate::net::read_text_capped(response, 64 * 1024)
        .await
        .unwrap_or_default();
    body.truncate(512);
    Err(PushError::Status {
        status: status.as_u16(),
        body,
    })
}

/// Pushes the registry when dropped: at the end of a batch job, after an
/// early return, or while a panic unwinds.
///
/// ```no_run
/// let _push = hyperkit_obs::push::PushOnDrop::new("http://127.0.0.1:9091", "nightly-build")
///     .grouping("instance", "ci-runner-3");
/// // … run the build; the metrics are pushed when `_push` goes out of scope.
/// ```
#[derive(Debug)]
#[must_use = "the push happens when the guard is dropped"]
pub struct PushOnDrop {
    url: String,
    job: String,
    grouping: Vec<(String, String)>,
    timeout: Duration,
}

impl PushOnDrop {
    /// A guard pushing to `url` as `job`.
    pub fn new(url: impl Into<String>, job: impl Into<String>) -> Self {
        PushOnDrop {
            url: url.into(),
            job: job.into(),
            grouping: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds a grouping label.
    pub fn grouping(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.grouping.push((name.into(), value.into()));
        self
    }

    /// Sets the push deadline (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Pushes now, keeping the guard (it pushes again when dropped).
    pub async fn push(&self) -> Result<(), PushError> {
        let grouping: Vec<(&str, &str)> = self.grouping.iter().map(|(k, v)| (&**k, &**v)).collect();
        push(&self.url, &self.job, &grouping, self.timeout).await
    }
}

impl Drop for PushOnDrop {
    fn drop(&mut self) {
        // Drop may run inside an async runtime, where blocking on a future is
        // not allowed: push from a thread of its own, with its own runtime,
        // and wait for it (the push's deadline bounds the wait).
        let url = std::mem::take(&mut self.url);
        let job = std::mem::take(&mut self.job);
        let grouping = std::mem::take(&mut self.grouping);
        let timeout = self.timeout;
        let pushed = std::thread::Builder::new()
            .name("hyperkit-push".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let grouping: Vec<(&str, &str)> =
                    grouping.iter().map(|(k, v)| (&**k, &**v)).collect();
                rt.block_on(push(&url, &job, &grouping, timeout))
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .map(|t| t.join());
        let failure = match pushed {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(_)) => "push thread panicked".to_owned(),
            Err(e) => format!("cannot start push thread: {e}"),
        };
        crate::metrics::record_dropped("pushgateway", 1);
        tracing::error!(error = %failure, "metrics push to the Pushgateway failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_base64_in_its_own_segment() {
        let url = group_url(
            "http://gw:9091/",
            "nightly/build",
            &[("instance", ""), ("run", "a/b")],
        )
        .unwrap();
        assert_eq!(
            url,
            "http://gw:9091/metrics/job@base64/bmlnaHRseS9idWlsZA==/instance@base64/=/run@base64/YS9i"
        );
        assert!(matches!(
            group_url("gw:9091", "j", &[]),
            Err(PushError::Url(_))
        ));
        assert!(matches!(
            group_url("http://gw", "j", &[("bad-name", "x")]),
            Err(PushError::LabelName(_))
        ));
        assert!(matches!(
            group_url("http://gw", "j", &[("job", "x")]),
            Err(PushError::ReservedName(_))
        ));
        assert!(matches!(
            group_url("http://gw", "j", &[("chain", "x")]),
            Err(PushError::ReservedName(_))
        ));
    }
}
