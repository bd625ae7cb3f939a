//! Carrying the current context across process boundaries: the W3C
//! `traceparent` and `tracestate` headers of an outgoing request
//! ([`headers`], [`inject_with`]) and reading them from an incoming one
//! ([`extract`]); `header_map.rs` has the same on `http::HeaderMap`.
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
