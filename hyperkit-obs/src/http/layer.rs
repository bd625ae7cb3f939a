//! RED metrics for any tower service: requests by method, route template
//! and status, their duration, and the requests in flight; and W3C trace
//! context: the request's `traceparent` and `tracestate` name the parent of
//! the request's span, which is current while the service handles it (so
//! every tracked call under it is its child). A missing or malformed
//! `traceparent` starts a new trace; it never fails the request. A sampled
//! request's span goes to the span sinks (OTLP) with the HTTP semantic
//! conventions' attributes.
//!
//! The route label is axum's `MatchedPath` (the template, `/builds/{id}`),
//! never the raw path, so ids in paths cannot blow up cardinality; requests
//! that matched no route are labelled `unmatched`. Apply the layer with
//! `Router::layer` so the matched path is known when it runs, and after the
//! last `Router::merge`: `merge` keeps the merged router's fallback, so a
//! layer applied before it would miss requests that match no route.

use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use pin_project_lite::pin_project;
use prometheus::IntCounter;
use tower::{Layer, Service};

use crate::metrics::{DurationHistogram, FAMILIES, LabelSets};
use crate::trace::CallTrace;

/// The layer; see the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpMetricsLayer;

impl HttpMetricsLayer {
    /// A new layer (all layers share the process-wide families).
    pub fn new() -> Self {
        HttpMetricsLayer
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> HttpMetrics<S> {
        // The requests' spans are the parents of the calls under them.
        crate::trace::enable();
        HttpMetrics { inner }
    }
}

/// A service wrapped by [`HttpMetricsLayer`].
#[derive(Clone, Debug)]
pub struct HttpMetrics<S> {
    inner: S,
}

pub(crate) struct HttpHandles {
    method: Box<str>,
    route: Box<str>,
    duration: DurationHistogram,
    /// One counter per status code 100..=599, created on first use.
    statuses: Box<[OnceLock<IntCounter>]>,
    other: OnceLock<IntCounter>,
}

impl HttpHandles {
    fn new(labels: &[&str]) -> Self {
        HttpHandles {
            method: labels[0].into(),
            route: labels[1].into(),
            duration: FAMILIES.http_duration.child(&[labels[0], labels[1]]),
            statuses: (100..600).map(|_| OnceLock::new()).collect(),
            other: OnceLock::new(),
        }
    }

    fn counter(&self, status: Option<u16>) -> &IntCounter {
        let make = |s: &str| {
            FAMILIES
                .http_requests_total
                .child(&[&self.method, &self.route, s])
        };
        match status.and_then(|s| self.statuses.get(usize::from(s).checked_sub(100)?)) {
            Some(cell) => cell.get_or_init(|| make(&status.unwrap_or(0).to_string())),
            None => self.other.get_or_init(|| make("other")),
        }
    }
}

static HTTP: LabelSets<HttpHandles> = LabelSets::new(
    "hyperkit_http_requests_total",
    &["method", "route"],
    HttpHandles::new,
);

static IN_FLIGHT: LazyLock<prometheus::IntGauge> =
    LazyLock::new(|| FAMILIES.http_in_flight.child(&[]));

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        // Extension methods are client-chosen: one label for all of them.
        _ => "other",
    }
}

impl<S, B, ResB> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = method_label(req.method());
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let handles = &HTTP.get(&[method.into(), route.into()]).handles;
        IN_FLIGHT.inc();
        let trace = crate::trace::enabled().then(|| {
            let parent = crate::trace::extract_headers(req.headers());
            crate::trace::start_span_under(parent.as_ref())
        });
        // What the span of a sampled request carries; nothing for others.
        let span = trace.as_ref().filter(|t| t.is_sampled()).map(|_| {
            Box::new(RequestSpan {
                path: req.uri().path().to_owned(),
                protocol_version: protocol_version(req.version()),
                start: SystemTime::now(),
            })
        });
        let inner = {
            // The service may do its work in `call` itself.
            let _scope = trace.as_ref().map(CallTrace::enter);
            self.inner.call(req)
        };
        ResponseFuture {
            inner,
            guard: InFlight {
                handles,
                start: Instant::now(),
                done: false,
                trace,
                span,
            },
        }
    }
}

/// What a sampled request's span needs besides its metrics' labels.
struct RequestSpan {
    path: String,
    protocol_version: &'static str,
    start: SystemTime,
}

fn protocol_version(v: axum::http::Version) -> &'static str {
    match v {
        axum::http::Version::HTTP_09 => "0.9",
        axum::http::Version::HTTP_10 => "1.0",
        axum::http::Version::HTTP_11 => "1.1",
        axum::http::Version::HTTP_2 => "2",
        axum::http::Version::HTTP_3 => "3",
        _ => "",
    }
}

/// Records the request when it ends, or as `cancelled` if it is dropped.
struct InFlight {
    handles: &'static HttpHandles,
    start: Instant,
    done: bool,
    /// The request's span, when trace context is on.
    trace: Option<CallTrace>,
    /// A sampled request's span data.
    span: Option<Box<RequestSpan>>,
}

impl InFlight {
    fn finish(&mut self, status: Option<u16>) {
        self.done = true;
        self.handles.duration.observe(self.start.elapsed());
        self.handles.counter(status).inc();
        self.export(status);
    }

    /// Hands a sampled request's span to the span sinks.
    fn export(&mut self, status: Option<u16>) {
        let (Some(context), Some(span)) = (
            self.trace.as_ref().and_then(CallTrace::context),
            self.span.take(),
        ) else {
            return;
        };
        crate::calls::dispatch_request(&crate::calls::FinishedRequest {
            method: method_of(&self.handles.method),
            route: &self.handles.route,
            path: &span.path,
            protocol_version: span.protocol_version,
            status_code: status,
            start: span.start,
            end: SystemTime::now(),
            trace: &context,
            parent_span_id: self.trace.as_ref().and_then(CallTrace::parent),
        });
    }
}

/// The `'static` method label of a label set's method.
fn method_of(method: &str) -> &'static str {
    [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ]
    .into_iter()
    .find(|m| *m == method)
    .unwrap_or("other")
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.handles.duration.observe(self.start.elapsed());
            FAMILIES
                .http_requests_total
                .child(&[&self.handles.method, &self.handles.route, "cancelled"])
                .inc();
            self.export(None);
        }
        IN_FLIGHT.dec();
    }
}

pin_project! {
    /// The response future of [`HttpMetrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: InFlight,
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = {
            let _scope = this.guard.trace.as_ref().map(CallTrace::enter);
            std::task::ready!(this.inner.poll(cx))
        };
        match &out {
            Ok(resp) => this.guard.finish(Some(resp.status().as_u16())),
            Err(_) => this.guard.finish(None),
        }
        Poll::Ready(out)
    }
}
