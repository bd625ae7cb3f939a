//! Span export over OTLP/HTTP: every sampled tracked call and traced HTTP
//! request becomes an OpenTelemetry span sent to a collector (Jaeger,
//! Tempo, Honeycomb, an OpenTelemetry Collector, MLflow 3 …) on the shared
//! export runtime ([`crate::export`]): batching, retry with backoff that
//! honours `Retry-After`, a bounded queue whose drops are counted in
//! `hyperkit_obs_dropped_total{sink="otlp"}`, flush on the guard's drop.
//!
//! The caller pays for a sampled call one small record and one send on the
//! queue; an unsampled call never reaches this module (it is a span sink,
//! [`calls::register_sampled`](crate::calls::register_sampled)). A
//! collector that is down or slow costs dropped-and-counted spans at
//! worst, never a blocked caller.
//!
//! ```no_run
//! use hyperkit_obs::trace::{OtlpConfig, otlp_start};
//!
//! let config = OtlpConfig::new("http://127.0.0.1:4318/v1/traces");
//! let _spans = otlp_start(&config, "build-agent", &[])?;
//! // … tracked calls; dropping the guard sends what is queued.
//! # Ok::<(), hyperkit_obs::trace::OtlpError>(())
//! ```

#[cfg(feature = "otlp")]
mod config;
pub(crate) mod encode;
pub(crate) mod exporter;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[cfg(feature = "otlp")]
pub use config::{OtlpConfig, Protocol};
#[cfg(not(feature = "otlp"))]
pub(crate) use config_min::Protocol;

use crate::calls::{CallSink, FinishedCall, FinishedRequest, Subscribed};
use crate::export::{self, Handle, SinkStatus};
use encode::SpanItem;
use exporter::{Resolve, SpanExporter, Target};

/// Without the `otlp` feature only MLflow sends spans, always as protobuf.
#[cfg(not(feature = "otlp"))]
mod config_min {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Protocol {
        HttpProtobuf,
        #[allow(dead_code)] // the `otlp` feature's
        HttpJson,
    }
}

/// The OTLP sink's name: its `sink` label, readiness check and thread.
#[cfg(feature = "otlp")]
pub const SINK: &str = "otlp";
/// How long the guard's drop waits for queued spans.
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// A span sink could not start.
#[derive(Debug, thiserror::Error)]
#[error("the {sink} span exporter cannot start: {message}")]
pub struct OtlpError {
    /// `otlp` or `mlflow-traces`.
    pub sink: &'static str,
    /// Why.
    pub message: String,
}

/// Runs a span sink; dropping it sends what is queued (within
/// [`SHUTDOWN_DEADLINE`]) and stops it.
#[must_use = "dropping the guard stops the exporter"]
pub struct SpanSinkGuard {
    sink: Subscribed<SpanItem>,
}

impl std::fmt::Debug for SpanSinkGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanSinkGuard").finish_non_exhaustive()
    }
}

impl SpanSinkGuard {
    /// The sink's state.
    pub fn status(&self) -> Option<SinkStatus> {
        self.sink.status()
    }

    /// Waits until every span queued so far is sent (or given up), for at
    /// most `deadline`; returns whether that happened in time.
    pub fn flush(&self, deadline: Duration) -> bool {
        self.sink.flush(deadline)
    }

    /// Sends what is queued, for at most `deadline`, then stops.
    pub fn shutdown(mut self, deadline: Duration) {
        self.sink.stop(deadline);
    }
}

impl Drop for SpanSinkGuard {
    fn drop(&mut self) {
        self.sink.stop(SHUTDOWN_DEADLINE);
    }
}

/// Hands sampled calls and requests to a span exporter's queue, or (for
/// MLflow) sampled model calls only.
struct Spans {
    handle: Handle<SpanItem>,
    model_calls_only: bool,
    off: Arc<AtomicBool>,
}

impl CallSink for Spans {
    #[inline]
    fn on_call(&self, call: &FinishedCall<'_>) {
        if (self.model_calls_only && call.domain != "model") || self.off.load(Ordering::Relaxed) {
            return;
        }
        if let Some(item) = SpanItem::call(call, self.model_calls_only) {
            self.handle.send(item);
        }
    }

    fn on_request(&self, request: &FinishedRequest<'_>) {
        if self.model_calls_only || self.off.load(Ordering::Relaxed) {
            return;
        }
        self.handle.send(SpanItem::request(request));
    }
}

/// What a span sink is: its name, where spans go, which spans, its queue.
pub(crate) struct SinkSpec {
    pub(crate) sink: &'static str,
    pub(crate) description: String,
    pub(crate) service_name: String,
    pub(crate) resource: Vec<(String, String)>,
    pub(crate) target: Result<Target, Box<dyn Resolve>>,
    pub(crate) model_calls_only: bool,
    pub(crate) capacity: usize,
    pub(crate) max_batch: usize,
    pub(crate) linger: Duration,
}

/// Starts a span sink on the export runtime and registers it for sampled
/// calls.
pub(crate) fn start_sink(spec: SinkSpec) -> Result<SpanSinkGuard, OtlpError> {
    let off = Arc::new(AtomicBool::new(false));
    let resource = encode::resource(&spec.service_name, &spec.resource);
    let exporter =
        SpanExporter::new(resource, spec.target, Arc::clone(&off)).map_err(|message| {
            OtlpError {
                sink: spec.sink,
                message,
            }
        })?;
    let options = export::Options::new(spec.sink, spec.description)
        .capacity(spec.capacity)
        .batch(spec.max_batch, 4 << 20)
        .linger(spec.linger)
        .retry(Duration::from_millis(250), Duration::from_secs(30))
        .shutdown_deadline(SHUTDOWN_DEADLINE);
    let guard = export::spawn(options, exporter).map_err(|e| OtlpError {
        sink: spec.sink,
        message: e.to_string(),
    })?;
    // Spans need ids: trace context is on from now.
    crate::trace::enable();
    let registration = crate::calls::register_sampled(Spans {
        handle: guard.handle(),
        model_calls_only: spec.model_calls_only,
        off,
    });
    Ok(SpanSinkGuard {
        sink: Subscribed::new(registration, guard),
    })
}

/// Starts the OTLP exporter for `config`: every sampled call and request
/// from now on is sent as a span of service `service_name`, with the
/// resource attributes `resource` (as `OTEL_RESOURCE_ATTRIBUTES` gives
/// them). [`init()`](crate::init) calls it when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
#[cfg(feature = "otlp")]
pub fn otlp_start(
    config: &OtlpConfig,
    service_name: &str,
    resource: &[(String, String)],
) -> Result<SpanSinkGuard, OtlpError> {
    start_sink(SinkSpec {
        sink: SINK,
        description: config.endpoint.clone(),
        service_name: service_name.to_owned(),
        resource: resource.to_vec(),
        target: Ok(Target::of(config)),
        model_calls_only: false,
        capacity: config.max_queue,
        max_batch: config.max_batch,
        linger: config.schedule_delay,
    })
}
