//! Carrying the current context across process boundaries: the W3C
//! `traceparent` and `tracestate` headers of an outgoing request
//! ([`inject`], [`header_map`], [`headers`]) and reading them from an
//! incoming one ([`extract`], [`extract_headers`]).
//!
//! Never fails a request: a header that is not valid W3C Trace Context
//! reads as no parent (the caller starts a new trace), and injecting with
//! no current context adds nothing.

use super::w3c::{TRACEPARENT, TRACESTATE, TraceState, TraceparentError, parse_traceparent};
use super::{SpanContext, current};

/// The headers that carry the current context: `traceparent`, and
/// `tracestate` when the trace has one. Empty outside any context. Works
/// with any HTTP client:
///
/// ```
/// use hyperkit_obs::trace;
///
/// let parent = trace::parse_traceparent(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// let _g = parent.attach();
/// let headers: Vec<(&str, String)> = trace::headers().collect();
/// assert_eq!(headers[0].0, "traceparent");
/// assert!(headers[0].1.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// ```
pub fn headers() -> impl Iterator<Item = (&'static str, String)> {
    let context = current();
    let parent = context.as_ref().map(|c| (TRACEPARENT, c.traceparent()));
    let state = context
        .filter(|c| !c.trace_state().is_empty())
        .map(|c| (TRACESTATE, c.trace_state().as_str().to_owned()));
    parent.into_iter().chain(state)
}

/// Hands each header of the current context to `set` (name, value): for
/// clients whose request type is not `http::HeaderMap`.
pub fn inject_with(mut set: impl FnMut(&'static str, &str)) {
    for (name, value) in headers() {
        set(name, &value);
    }
}

/// The context an incoming request names as its parent: `traceparent`
/// and the `tracestate` values (in the order received).
///
/// ```
/// use hyperkit_obs::trace::extract;
/// let parent = extract(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
///     ["rojo=00f067aa0ba902b7"],
/// ).unwrap();
/// assert!(!parent.is_sampled());
/// assert_eq!(parent.trace_state().as_str(), "rojo=00f067aa0ba902b7");
/// assert!(extract("garbage", None::<&str>).is_err());
/// ```
pub fn extract<'a>(
    traceparent: &str,
    tracestate: impl IntoIterator<Item = &'a str>,
) -> Result<SpanContext, TraceparentError> {
    Ok(parse_traceparent(traceparent)?.with_trace_state(TraceState::parse(tracestate)))
}

/// Adds the current context's headers to `headers` (replacing any there).
///
/// ```
/// use hyperkit_obs::trace;
///
/// let _g = trace::parse_traceparent(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap().attach();
/// let mut headers = http::HeaderMap::new();
/// trace::inject(&mut headers);
/// assert!(headers["traceparent"].to_str().unwrap().starts_with("00-4bf92f35"));
/// ```
#[cfg(any(
    feature = "http",
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "push",
    feature = "otlp"
))]
pub fn inject(headers: &mut http::HeaderMap) {
    for (name, value) in self::headers() {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// The current context's headers as a map, for `reqwest`'s
/// `RequestBuilder::headers` (which adds them to the request's):
///
/// ```no_run
/// # async fn call() -> Result<(), reqwest::Error> {
/// let client = reqwest::Client::new();
/// client
///     .post("http://127.0.0.1:8081/run")
///     .headers(hyperkit_obs::trace::header_map())
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[cfg(any(
    feature = "http",
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "push",
    feature = "otlp"
))]
pub fn header_map() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    headers
}

/// The parent named by a request's headers, or `None` when there is no
/// `traceparent` or it is not valid (the request then starts a trace).
#[cfg(any(
    feature = "http",
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "push",
    feature = "otlp"
))]
pub fn extract_headers(headers: &http::HeaderMap) -> Option<SpanContext> {
    let mut parents = headers.get_all(TRACEPARENT).iter();
    let parent = parents.next()?.to_str().ok()?;
    // Two `traceparent` headers: W3C says to treat that as no parent.
    if parents.next().is_some() {
        return None;
    }
    let states = headers
        .get_all(TRACESTATE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    extract(parent, states).ok()
}

#[cfg(test)]
#[cfg(feature = "http")]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn headers_round_trip_through_a_header_map() {
        let mut incoming = http::HeaderMap::new();
        incoming.insert(TRACEPARENT, PARENT.parse().unwrap());
        incoming.append(TRACESTATE, "a=1".parse().unwrap());
        incoming.append(TRACESTATE, "b=2".parse().unwrap());
        let parent = extract_headers(&incoming).unwrap();
        assert_eq!(parent.trace_state().as_str(), "a=1,b=2");
        let _g = parent.attach();
        let out = header_map();
        assert_eq!(out[TRACEPARENT], PARENT);
        assert_eq!(out[TRACESTATE], "a=1,b=2");
    }

    #[test]
    fn a_missing_doubled_or_bad_traceparent_is_no_parent() {
        let mut h = http::HeaderMap::new();
        assert!(extract_headers(&h).is_none());
        h.insert(TRACEPARENT, "00-xyz".parse().unwrap());
        assert!(extract_headers(&h).is_none());
        h.insert(TRACEPARENT, PARENT.parse().unwrap());
        h.append(TRACEPARENT, PARENT.parse().unwrap());
        assert!(extract_headers(&h).is_none());
        assert!(header_map().is_empty(), "no context, no headers");
    }
}
