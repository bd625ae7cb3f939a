//! What every sink that speaks HTTP through `reqwest` shares: the answer's
//! `Retry-After`, reading an answer's body with a size cap (a hostile or
//! broken server cannot make us hold more), error messages with their
//! causes, and the single-threaded runtime an exporter drives its requests
//! on from its own thread.

/// `e`'s message followed by each of its causes, `: `-separated (reqwest's
/// own message says little more than "error sending request").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// `Retry-After` in seconds or as an HTTP date.
#[cfg(any(feature = "elasticsearch", feature = "mlflow", feature = "otlp"))]
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    use std::time::{Duration, SystemTime};
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Why an answer's body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed while reading.
    Transport(reqwest::Error),
    /// The body is larger than the cap; reading stopped there.
    TooLarge(usize),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Transport(e) => f.write_str(&error_chain(e)),
            BodyError::TooLarge(cap) => write!(f, "the answer is larger than {cap} bytes"),
        }
    }
}

/// Reads `response`'s body, at most `cap` bytes: a larger body is an error
/// after `cap` bytes were read, never an allocation of its announced size.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`read_capped`], as text (invalid UTF-8 replaced).
#[cfg(any(feature = "elasticsearch", feature = "mlflow", feature = "push"))]
pub(crate) async fn read_text_capped(
    response: reqwest::Response,
    cap: usize,
) -> Result<String, BodyError> {
    let body = read_capped(response, cap).await?;
    Ok(match String::from_utf8(body) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// The runtime an exporter runs its requests on, from its own thread.
#[cfg(any(
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "otlp"
))]
pub(crate) struct Blocking(tokio::runtime::Runtime);

#[cfg(any(
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "otlp"
))]
impl Blocking {
    /// A single-threaded runtime with I/O and timers.
    pub(crate) fn new() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(Blocking)
    }

    /// Runs `fut` until it completes or the time `deadline()` returns
    /// passes (`None` when it passed first). `deadline()` is asked again
    /// every [`crate::export::TICK`], so a stop requested while `fut` runs
    /// ends it in time.
    pub(crate) fn run_until<F: std::future::Future>(
        &self,
        deadline: impl Fn() -> Option<std::time::Instant>,
        fut: F,
    ) -> Option<F::Output> {
        self.0.block_on(async {
            let mut fut = std::pin::pin!(fut);
            loop {
                let now = std::time::Instant::now();
                let mut wake = now + crate::export::TICK;
                if let Some(at) = deadline() {
                    if now >= at {
                        return None;
                    }
                    wake = wake.min(at);
                }
                tokio::select! {
                    out = &mut fut => return Some(out),
                    () = tokio::time::sleep_until(wake.into()) => {}
                }
            }
        })
    }
}

#[cfg(all(test, any(feature = "elasticsearch", feature = "mlflow")))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_ignores_nonsense() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "1e300".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::MAX));
        h.insert(reqwest::header::RETRY_AFTER, "-3".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
