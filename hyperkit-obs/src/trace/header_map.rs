//! The same headers on `http::HeaderMap`, the type every HTTP crate of the
//! workspace (axum, `reqwest`) uses: compiled with any feature that brings
//! the `http` crate in.

use super::SpanContext;
use super::propagation::{extract, headers};
use super::w3c::{TRACEPARENT, TRACESTATE};

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
pub fn header_map() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    headers
}

/// The parent named by a request's headers, or `None` when there is no
/// `traceparent` or it is not valid (the request then starts a trace).
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
