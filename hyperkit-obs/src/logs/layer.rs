//! [`EcsLayer`]: the `tracing_subscriber::Layer` that turns each event into
//! an ECS document, writes it as a JSON line and queues it for the local
//! store. It composes with any subscriber built on the registry.
//!
//! It never panics and never waits on the store: writing to stdout is the
//! only I/O on the caller's thread, as with `tracing_subscriber::fmt`.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::document::{FieldValue, LogRecord, ecs_document};
#[cfg(feature = "log-store")]
use super::store::{StoreEntry, StoreSink};
use crate::util::unix_ms as now_millis;

/// Writes every event as an ECS JSON line to a writer (stdout by default)
/// and/or queues it for the local log store.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(hyperkit_obs::logs::layer("build-agent").with_writer(std::io::sink));
/// tracing::subscriber::with_default(subscriber, || tracing::info!(chain = "ethereum", "built"));
/// ```
pub struct EcsLayer<W = fn() -> std::io::Stdout> {
    service: Arc<str>,
    writer: Option<W>,
    /// Set when `writer` is one of this crate's non-blocking line writers:
    /// the line then goes to its worker as the document's shared bytes,
    /// not copied through `MakeWriter`.
    direct: Option<Direct>,
    #[cfg(feature = "log-store")]
    store: Option<StoreSink>,
    #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
    shippers: Vec<super::ShipperHandle>,
}

impl<W> fmt::Debug for EcsLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcsLayer")
            .field("service", &self.service)
            .field("writer", &self.writer.is_some())
            .finish_non_exhaustive()
    }
}

/// A layer writing ECS JSON lines to stdout for `service_name`; add a store
/// with [`EcsLayer::with_store`], change the writer with
/// [`EcsLayer::with_writer`].
///
/// Making it turns trace context on ([`crate::trace::enable`]), so that
/// `trace.id` and `span.id` name every tracked call's span.
pub fn layer(service_name: impl Into<String>) -> EcsLayer {
    crate::trace::enable();
    EcsLayer {
        service: Arc::from(service_name.into()),
        writer: Some(std::io::stdout as fn() -> std::io::Stdout),
        direct: None,
        #[cfg(feature = "log-store")]
        store: None,
        #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
        shippers: Vec::new(),
    }
}

impl<W> EcsLayer<W> {
    /// Writes the JSON lines to `writer` instead (any
    /// `tracing_subscriber::fmt::MakeWriter`, e.g. a non-blocking appender).
    pub fn with_writer<W2>(self, writer: W2) -> EcsLayer<W2>
    where
        W2: for<'a> MakeWriter<'a> + 'static,
    {
        let direct = Direct::of(&writer);
        EcsLayer {
            service: self.service,
            writer: Some(writer),
            direct,
            #[cfg(feature = "log-store")]
            store: self.store,
            #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
            shippers: self.shippers,
        }
    }

    /// Writes no JSON lines (when another layer prints human-readable lines
    /// and this one only feeds the store).
    pub fn without_writer(mut self) -> Self {
        self.writer = None;
        self.direct = None;
        self
    }

    /// Also queues every event for the local store (see
    /// [`store::start`](super::store::start)).
    #[cfg(feature = "log-store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "log-store")))]
    pub fn with_store(mut self, sink: StoreSink) -> Self {
        self.store = Some(sink);
        self
    }

    /// Also hands every event's document to a shipper (Elasticsearch,
    /// Logstash: see [`super::elastic`], [`super::logstash`]), without
    /// waiting. A sink's own events (target
    /// [`LOG_TARGET`](crate::export::LOG_TARGET), its name in their `sink`
    /// field) are not shipped to it, so a failing backend is not sent the
    /// news of its own failure.
    #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "elasticsearch", feature = "logstash"))))]
    pub fn with_shipper(mut self, shipper: super::ShipperHandle) -> Self {
        self.shippers.push(shipper);
        self
    }
}

/// The per-layer filter that lets the spans of tracked calls through to the
/// log layer whatever `RUST_LOG` says, so an ERROR line keeps its call's
/// labels (`chain`, `model`, …) when INFO logs are off. `init()` combines it
/// with the `RUST_LOG` filter; it lets no event through.
///
/// ```
/// use tracing_subscriber::{EnvFilter, filter::FilterExt, layer::SubscriberExt, Layer};
///
/// let filter = EnvFilter::new("warn").or(hyperkit_obs::logs::TrackedSpans);
/// let subscriber = tracing_subscriber::registry()
///     .with(hyperkit_obs::logs::layer("agent").with_filter(filter));
/// # drop(subscriber);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackedSpans;

impl<S> Filter<S> for TrackedSpans {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        crate::track::spans::is_tracked_span(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if crate::track::spans::is_tracked_span(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// A writer of this crate's that takes a line as shared bytes.
enum Direct {
    Stdout,
    Queue(crate::export::Handle<super::QueuedLine>),
}

impl Direct {
    fn of<W: 'static>(writer: &W) -> Option<Direct> {
        let any: &dyn std::any::Any = writer;
        if any.is::<super::NonBlockingStdout>() {
            Some(Direct::Stdout)
        } else {
            any.downcast_ref::<super::NonBlocking>()
                .map(|w| Direct::Queue(w.handle.clone()))
        }
    }

    /// The sink name of the writer's worker.
    fn sink(&self) -> &'static str {
        match self {
            Direct::Stdout => super::stdout::SINK,
            Direct::Queue(h) => h.sink(),
        }
    }

    /// Queues `document` as a line (a full queue drops and counts it).
    fn send(&self, document: Arc<[u8]>) {
        let line = super::QueuedLine::document(document);
        match self {
            Direct::Stdout => match super::stdout::stdout_handle() {
                Some(h) => {
                    h.send(line);
                }
                None => crate::metrics::record_dropped(super::stdout::SINK, 1),
            },
            Direct::Queue(h) => {
                h.send(line);
            }
        }
    }
}

/// Fields recorded on a span, kept in its extensions.
struct SpanFields(Vec<(&'static str, FieldValue)>);

#[derive(Default)]
struct Collector {
    message: Option<String>,
    fields: Vec<(&'static str, FieldValue)>,
}

impl Collector {
    /// Room for the fields of `metadata` (all of them, at most: a declared
    /// field may be left unrecorded), so recording never grows the vector.
    fn for_fields(metadata: &Metadata<'_>) -> Self {
        Collector {
            message: None,
            fields: Vec::with_capacity(metadata.fields().len()),
        }
    }

    fn set(&mut self, field: &Field, value: FieldValue) {
        if field.name() == "message" {
            self.message = Some(match value {
                FieldValue::Str(s) => s,
                other => other.to_string(),
            });
        } else if let Some(slot) = self.fields.iter_mut().find(|(n, _)| *n == field.name()) {
            slot.1 = value;
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for Collector {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, FieldValue::Str(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, FieldValue::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, FieldValue::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, FieldValue::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field, FieldValue::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Room for a typical message at once: `format!` cannot see through
        // `dyn Debug` and would grow the string from 8 bytes.
        let mut text = String::with_capacity(64);
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{value:?}"));
        self.set(field, FieldValue::Str(text));
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl<S, W> Layer<S> for EcsLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Collector::for_fields(attrs.metadata());
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(SpanFields(existing)) = ext.get_mut::<SpanFields>() else {
            return;
        };
        let mut fields = Collector {
            message: None,
            fields: std::mem::take(existing),
        };
        values.record(&mut fields);
        *existing = fields.fields;
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Collector::for_fields(meta);
        event.record(&mut fields);
        let mut record = LogRecord::new(
            now_millis(),
            level_name(meta.level()),
            Cow::Borrowed(meta.target()),
            fields.message.unwrap_or_default(),
        );
        record.fields = fields.fields;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if record.span_name.is_none() {
                    record.span_name = Some(span.name());
                }
                if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                    record.span_fields.extend(f.iter().cloned());
                }
            }
        }
        if let Some(context) = crate::trace::current() {
            record.trace_id = Some(context.trace_id());
            record.span_id = Some(context.span_id());
        }
        // An ECS line with a trace's ids is 450 to 600 bytes: room for it
        // at once, where 384 made a second allocation and a copy per event.
        let mut document = Vec::with_capacity(768);
        ecs_document(&record, &self.service, &mut document);
        // A sink's news of its own trouble is not sent to that sink.
        let from_sink = (meta.target() == crate::export::LOG_TARGET)
            .then(|| record.fields.iter().find(|(k, _)| *k == "sink"))
            .flatten()
            .and_then(|(_, v)| match v {
                FieldValue::Str(s) => Some(s.clone()),
                _ => None,
            });
        let writer_sink = self
            .direct
            .as_ref()
            .map_or(super::stdout::SINK, Direct::sink);
        let to_writer = self.writer.is_some() && from_sink.as_deref() != Some(writer_sink);
        // One copy of the document, shared by every sink that queues it:
        // each copy handed to another thread is memory the caller writes
        // and another thread frees, which costs the caller more than the
        // copy itself.
        let mut shared: Option<Arc<[u8]>> = None;
        if let Some(direct) = self.direct.as_ref().filter(|_| to_writer) {
            direct.send(Arc::clone(
                shared.get_or_insert_with(|| Arc::from(document.as_slice())),
            ));
        } else if let Some(make) = self.writer.as_ref().filter(|_| to_writer) {
            document.push(b'\n');
            // A failing writer loses this line only; there is nowhere to
            // report it that would not come back here.
            let _ = make.make_writer_for(meta).write_all(&document);
            document.pop();
        }
        #[cfg(any(feature = "elasticsearch", feature = "logstash"))]
        {
            let shippers = self
                .shippers
                .iter()
                .filter(|s| from_sink.as_deref() != Some(s.sink()));
            for shipper in shippers {
                let bytes = shared.get_or_insert_with(|| Arc::from(document.as_slice()));
                shipper.send(super::Document::new(Arc::clone(bytes), record.timestamp_ms));
            }
        }
        #[cfg(feature = "log-store")]
        if let Some(store) = &self.store
            && from_sink.as_deref() != Some(super::store::SINK)
        {
            let document = shared.unwrap_or_else(|| Arc::from(document));
            store.send(StoreEntry {
                timestamp_ms: record.timestamp_ms,
                document,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    use crate::logs::testing::Lines;

    #[test]
    fn events_become_ecs_lines_with_the_fields_of_their_spans() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(layer("agent").with_writer(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let outer =
                tracing::info_span!("job", chain = "ethereum", task = tracing::field::Empty);
            let _o = outer.enter();
            outer.record("task", "codegen");
            let inner = tracing::info_span!("complete", model = "gpt");
            let _i = inner.enter();
            tracing::error!(status = "failure", event.duration = 42u64, error.message = %"out of gas", "complete failed: {}", "out of gas");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["log.level"], "error");
        assert_eq!(v["message"], "complete failed: out of gas");
        assert_eq!(v["service.name"], "agent");
        assert_eq!(v["event.duration"], 42);
        assert_eq!(v["error.message"], "out of gas");
        assert_eq!(
            (v["chain"].as_str(), v["task"].as_str(), v["model"].as_str()),
            (Some("ethereum"), Some("codegen"), Some("gpt"))
        );
        assert_eq!(v["log.origin.function"], "complete");
        assert!(v.get("trace.id").is_none(), "plain spans carry no trace");
        assert!(v["log.logger"].as_str().unwrap().contains("layer"));
    }

    #[test]
    fn with_info_off_an_error_line_still_carries_its_tracked_labels() {
        use tracing_subscriber::EnvFilter;
        use tracing_subscriber::filter::FilterExt;
        let lines = Lines::default();
        let filter = EnvFilter::new("warn").or(TrackedSpans);
        let subscriber = tracing_subscriber::registry().with(
            layer("agent")
                .with_writer(lines.clone())
                .with_filter(filter),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = // As the macros make it: marked, its labels as fields.
            tracing::info_span!("deploy", hyperkit.call = tracing::field::Empty, chain = "ethereum");
            let _e = span.enter();
            tracing::info!("hidden by RUST_LOG");
            tracing::error!(status = "failure", event.duration = 5u64, "deploy failed");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            (v["chain"].as_str(), v["log.origin.function"].as_str()),
            (Some("ethereum"), Some("deploy"))
        );
    }

    #[test]
    fn an_event_in_a_trace_context_carries_its_ids() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(layer("agent").with_writer(lines.clone()));
        let parent = crate::trace::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let _g = parent.attach();
            tracing::info!("in the request");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["trace.id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["span.id"], "00f067aa0ba902b7");
    }

    #[test]
    fn an_event_outside_any_span_has_no_trace_id() {
        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(layer("agent").with_writer(lines.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::warn!(n = 3, "alone"));
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            (v["log.level"].as_str(), v["n"].as_i64()),
            (Some("warn"), Some(3))
        );
        assert!(v.get("trace.id").is_none());
    }
}
