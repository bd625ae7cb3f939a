//! Trace context: OpenTelemetry-compatible trace and span ids on every
//! tracked call, the context current on each thread, W3C Trace Context
//! propagation, and sampling.
//!
//! Each tracked call gets a span id (16 hex digits) under a trace id (32
//! hex digits): a call inside another tracked call (or inside an HTTP
//! request the [`HttpMetricsLayer`](crate::http::HttpMetricsLayer) received
//! with a `traceparent`, or a `tracing` span given a context) is its child,
//! any other call starts a trace. The ids are what `trace.id` and `span.id`
//! of every log line carry, what Sentry events and MLflow runs name, what
//! `/metrics` exemplars point to and what the OTLP exporter sends.
//!
//! ```
//! use hyperkit_obs::{track_build, trace};
//!
//! #[track_build(chain = "ethereum")]
//! fn build() -> Option<trace::SpanContext> {
//!     trace::current() // the call's own context, inside its body
//! }
//!
//! trace::enable();
//! let parent = trace::parse_traceparent(
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! let inside = {
//!     let _in_request = parent.clone().attach();
//!     build().unwrap()
//! };
//! assert_eq!(inside.trace_id(), parent.trace_id());   // same trace
//! assert_ne!(inside.span_id(), parent.span_id());     // its own span
//! assert!(inside.is_sampled());                       // the parent's decision
//! assert!(trace::current().is_none());                // nothing leaks out
//! ```
//!
//! Trace context is on once [`enable`] ran: [`init()`](crate::init), the log
//! layer, the HTTP layer and the span exporters turn it on. Before that a
//! tracked call pays one relaxed load for all of this. With it on, an
//! unsampled call draws a span id (a thread-local generator) and sets the
//! thread's current context around its body: no lock, no allocation, no
//! clock read. Nothing here panics on input: a malformed `traceparent` is
//! a typed error and the caller starts a new trace.

mod config;
mod current;
#[cfg(any(
    feature = "http",
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "push",
    feature = "otlp"
))]
mod header_map;
mod id;
mod layer;
#[cfg(any(feature = "otlp", feature = "mlflow"))]
pub(crate) mod otlp;
mod propagation;
mod sampler;
mod w3c;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

pub use config::TraceConfig;
#[cfg(feature = "http")]
pub(crate) use current::start_span_under;
pub(crate) use current::{CallTrace, Frame, Scope, start_span};
pub use current::{ContextGuard, current};
#[cfg(any(
    feature = "http",
    feature = "elasticsearch",
    feature = "mlflow",
    feature = "sentry",
    feature = "push",
    feature = "otlp"
))]
pub use header_map::{extract_headers, header_map, inject};
pub use id::{SpanId, TraceFlags, TraceId};
pub use layer::{ContextLayer, SpanExt};
#[cfg(feature = "otlp")]
pub use otlp::{OtlpConfig, Protocol, SINK as OTLP_SINK, otlp_start};
#[cfg(any(feature = "otlp", feature = "mlflow"))]
pub use otlp::{OtlpError, SpanSinkGuard};
pub use propagation::{extract, headers, inject_with};
pub use sampler::{Sampler, sampler, set_sampler};
pub use w3c::{TRACEPARENT, TRACESTATE, TraceState, TraceparentError, parse_traceparent};

/// The context of one span: its trace, its own id, its sampled flag and
/// the vendors' state of its trace, as W3C Trace Context carries them.
#[derive(Clone, PartialEq, Eq)]
pub struct SpanContext {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    remote: bool,
    state: TraceState,
}

impl SpanContext {
    /// A local span's context.
    pub fn new(trace_id: TraceId, span_id: SpanId, flags: TraceFlags, state: TraceState) -> Self {
        SpanContext {
            trace_id,
            span_id,
            flags,
            remote: false,
            state,
        }
    }

    /// The context of a span in another process (read from a request).
    pub fn remote(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> Self {
        SpanContext {
            trace_id,
            span_id,
            flags,
            remote: true,
            state: TraceState::NONE,
        }
    }

    /// The same context with `state` as its trace state.
    #[must_use]
    pub fn with_trace_state(mut self, state: TraceState) -> Self {
        self.state = state;
        self
    }

    /// The trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The flags.
    pub fn flags(&self) -> TraceFlags {
        self.flags
    }

    /// Whether the span is sampled (recorded and exported).
    pub fn is_sampled(&self) -> bool {
        self.flags.is_sampled()
    }

    /// Whether the span is in another process.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The vendors' state of the trace.
    pub fn trace_state(&self) -> &TraceState {
        &self.state
    }

    /// The `traceparent` header value naming this span as the parent.
    ///
    /// ```
    /// use hyperkit_obs::trace::parse_traceparent;
    /// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// assert_eq!(parse_traceparent(header).unwrap().traceparent(), header);
    /// ```
    pub fn traceparent(&self) -> String {
        w3c::format_traceparent(self)
    }

    /// Makes this the current context of this thread until the guard drops
    /// (as OpenTelemetry's `Context::attach`): tracked calls made meanwhile
    /// are its children, and log lines carry its ids.
    pub fn attach(self) -> ContextGuard {
        ContextGuard::attach(&self)
    }
}

impl std::fmt::Debug for SpanContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanContext")
            .field("trace_id", &format_args!("{}", self.trace_id))
            .field("span_id", &format_args!("{}", self.span_id))
            .field("sampled", &self.is_sampled())
            .field("remote", &self.remote)
            .field("state", &self.state.as_str())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// On or off
// ---------------------------------------------------------------------------

static ON: AtomicBool = AtomicBool::new(false);

/// Turns trace context on for the rest of the process: from now on every
/// tracked call gets ids. [`init()`](crate::init), the log layer, the HTTP
/// layer and the span exporters call it; call it yourself when none of
/// them runs.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Turns trace context off again: calls started from now on get no ids
/// (for benchmarks and tests that compare both).
pub fn disable() {
    ON.store(false, Ordering::Relaxed);
}

/// Whether trace context is on (see [`enable`]).
#[inline(always)]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Futures
// ---------------------------------------------------------------------------

pin_project_lite::pin_project! {
    /// A future polled with a context current ([`FutureExt`]).
    pub struct WithContext<F> {
        context: Option<SpanContext>,
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _scope = this.context.as_ref().map(Scope::enter_context);
        this.inner.poll(cx)
    }
}

/// Carries a trace context into a future that runs elsewhere (a spawned
/// task), as OpenTelemetry's `FutureExt::with_context` does.
///
/// ```
/// use hyperkit_obs::trace::{self, FutureExt};
///
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let parent = trace::parse_traceparent(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// let _request = parent.clone().attach();
/// let task = async { trace::current() }.in_current_trace();
/// drop(_request);
/// assert_eq!(task.await.unwrap().trace_id(), parent.trace_id());
/// # });
/// ```
pub trait FutureExt: Future + Sized {
    /// Polls the future with `context` current.
    fn with_trace_context(self, context: SpanContext) -> WithContext<Self> {
        WithContext {
            context: Some(context),
            inner: self,
        }
    }

    /// Polls the future with the context current now (if any) current.
    fn in_current_trace(self) -> WithContext<Self> {
        WithContext {
            context: current(),
            inner: self,
        }
    }
}

impl<F: Future> FutureExt for F {}
