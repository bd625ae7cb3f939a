//! The `tracing` side of Sentry: which spans and events reach
//! [`SentryLayer`], what it makes of them (events, breadcrumbs, tags,
//! fingerprints), and the integration that tags events captured inside a
//! tracked call by other means (a panic).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use ::sentry::protocol::{Event, Level as SentryLevel};
use ::sentry::{ClientOptions, Integration};
use regex::Regex;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::track::spans::{is_closing_event, is_tracked_span};

/// First element of the fingerprints this module sets.
const FINGERPRINT_MARK: &str = "hyperkit";

/// What the layer remembers of a tracked call's span.
#[derive(Clone, Debug)]
struct TrackedCall {
    function: &'static str,
    module: &'static str,
    labels: Vec<(&'static str, String)>,
}

impl TrackedCall {
    fn add_tags(&self, tags: &mut BTreeMap<String, String>) {
        for (name, value) in &self.labels {
            tags.entry((*name).to_owned())
                .or_insert_with(|| value.clone());
        }
        tags.entry("function".to_owned())
            .or_insert_with(|| self.function.to_owned());
    }
}

/// The per-layer filter that lets tracked spans and the ERROR events closing
/// tracked calls through to [`SentryLayer`] whatever `RUST_LOG` says, so a
/// failure is reported with its labels even when INFO logs are off.
/// `init()` combines it with the `RUST_LOG` filter.
pub struct TrackedCalls;

impl TrackedCalls {
    fn wants(meta: &Metadata<'_>) -> bool {
        is_tracked_span(meta) || (*meta.level() == Level::ERROR && is_closing_event(meta))
    }
}

impl<S> Filter<S> for TrackedCalls {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// The `tracing` layer that reports to Sentry: ERROR events become Sentry
/// events, INFO and WARN events breadcrumbs (see the [module](self) docs).
///
/// `init()` installs it when `SENTRY_DSN` is set. A program that installs
/// its own subscriber (`Builder::install_subscriber(false)`) adds it itself:
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// let subscriber = tracing_subscriber::registry().with(hyperkit_obs::sentry::layer());
/// # drop(subscriber);
/// ```
pub struct SentryLayer {
    breadcrumbs: ::sentry::integrations::tracing::BreadcrumbLayer,
}

impl fmt::Debug for SentryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentryLayer").finish_non_exhaustive()
    }
}

/// The layer that reports tracked failures, other ERROR events and
/// breadcrumbs to Sentry. It does nothing until a Sentry client runs.
pub fn layer() -> SentryLayer {
    SentryLayer {
        breadcrumbs: ::sentry::integrations::tracing::BreadcrumbLayer::new(),
    }
}

impl<S> Layer<S> for SentryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if !is_tracked_span(meta) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        // Every recorded field of a tracked span is one of its labels.
        let labels = meta
            .fields()
            .iter()
            .filter_map(|f| Some((f.name(), fields.take_string(f.name())?)))
            .collect();
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(TrackedCall {
                function: meta.name(),
                module: meta.target(),
                labels,
            });
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level == Level::DEBUG || level == Level::TRACE || super::transport::on_transport_thread()
        {
            return;
        }
        if level != Level::ERROR {
            self.breadcrumbs.on_event(event, ctx);
            return;
        }
        let closing = is_closing_event(meta);
        let mut fields = Fields::default();
        event.record(&mut fields);
        if closing && fields.str("status") == Some("panic") {
            // The panic integration has already reported this panic, with
            // its stack trace; a second event would count it twice.
            self.breadcrumbs.on_event(event, ctx);
            return;
        }
        let call = ctx.event_scope(event).and_then(|mut scope| {
            scope.find_map(|span| span.extensions().get::<TrackedCall>().cloned())
        });
        ::sentry::capture_event(error_event(meta, fields, closing, call.as_ref()));
    }
}

/// The Sentry event for an ERROR `tracing` event.
fn error_event(
    meta: &Metadata<'_>,
    mut fields: Fields,
    closing: bool,
    call: Option<&TrackedCall>,
) -> Event<'static> {
    let formatted = fields.take_string("message");
    let mut tags = BTreeMap::new();
    let mut fingerprint = vec![Cow::Borrowed("{{ default }}")];
    let message = if closing {
        let status = fields.take_string("status").unwrap_or_default();
        let message = fields
            .take_string("error.message")
            .or(formatted)
            .unwrap_or_default();
        if let Some(call) = call {
            // The message is turned into a template once it is scrubbed
            // (`finish_fingerprint`), so no secret survives in a mangled form.
            fingerprint = vec![
                Cow::Borrowed(FINGERPRINT_MARK),
                Cow::Owned(format!("{}::{}", call.module, call.function)),
                Cow::Owned(status.clone()),
                Cow::Owned(message.clone()),
            ];
        }
        tags.insert("status".to_owned(), status);
        message
    } else {
        formatted.unwrap_or_default()
    };
    if let Some(call) = call {
        call.add_tags(&mut tags);
    }
    Event {
        level: SentryLevel::Error,
        message: Some(message),
        logger: Some(meta.target().to_owned()),
        tags,
        fingerprint: Cow::Owned(fingerprint),
        extra: fields.0,
        ..Default::default()
    }
}

/// Turns the message in a tracked failure's fingerprint into its template,
/// using the label values the event's tags carry.
pub(super) fn finish_fingerprint(mut event: Event<'static>) -> Event<'static> {
    if event.fingerprint.len() == 4 && event.fingerprint[0] == FINGERPRINT_MARK {
        let labels: Vec<(&str, String)> = crate::metrics::label_names()
            .into_iter()
            .filter_map(|name| Some((name, event.tags.get(name)?.clone())))
            .collect();
        let template = message_template(&event.fingerprint[3], &labels);
        event.fingerprint.to_mut()[3] = Cow::Owned(template);
    }
    event
}

/// `message` with each label value and each number replaced by a
/// placeholder, so messages that differ only in those group together.
fn message_template(message: &str, labels: &[(&str, String)]) -> String {
    static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"0x[0-9a-fA-F]+|[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|\d+(?:\.\d+)?",
        )
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
    });
    let mut template = message.to_owned();
    for (name, value) in labels {
        if !value.is_empty() {
            template = replace_word(&template, value, &format!("{{{name}}}"));
        }
    }
    NUMBER.replace_all(&template, "<n>").into_owned()
}

/// Replaces the occurrences of `word` in `text` that are not part of a
/// longer word.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let in_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        out.push_str(&rest[..at]);
        let after = &rest[at + word.len()..];
        if in_word(out.chars().next_back()) || in_word(after.chars().next()) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// An event's or span's fields as JSON values.
#[derive(Default)]
struct Fields(BTreeMap<String, Value>);

impl Fields {
    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    fn take_string(&mut self, name: &str) -> Option<String> {
        match self.0.remove(name)? {
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }

    fn put(&mut self, field: &Field, value: impl Into<Value>) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

/// Gives every event the trace context current where it was captured
/// (Sentry's `trace` context), and tags events captured inside a tracked
/// call by other means than the layer (the panic integration,
/// `sentry::capture_*`) with that call's labels, `function` and, for a
/// panic, `status = panic`.
pub(super) struct TrackedCallTags;

impl Integration for TrackedCallTags {
    fn name(&self) -> &'static str {
        "hyperkit-tracked-call"
    }

    fn process_event(
        &self,
        mut event: Event<'static>,
        _: &ClientOptions,
    ) -> Option<Event<'static>> {
        // The trace the event happened in: the call's, the request's, or
        // the context attached around it. It replaces the scope's own
        // (random) propagation context, so Sentry links the event to the
        // same trace as the logs, the spans and the MLflow run.
        if let Some(context) = crate::trace::current() {
            event.contexts.insert(
                "trace".to_owned(),
                ::sentry::protocol::TraceContext {
                    trace_id: context.trace_id().to_bytes().into(),
                    span_id: context.span_id().to_bytes().into(),
                    ..Default::default()
                }
                .into(),
            );
        }
        if !event.tags.contains_key("function")
            && let Some(call) = current_tracked_call()
        {
            call.add_tags(&mut event.tags);
            let panicked = event
                .exception
                .values
                .iter()
                .any(|e| e.mechanism.as_ref().is_some_and(|m| m.ty == "panic"));
            if panicked {
                event
                    .tags
                    .entry("status".to_owned())
                    .or_insert_with(|| "panic".to_owned());
            }
        }
        Some(event)
    }
}

/// The innermost tracked call the current thread is in, if the global
/// subscriber is a `tracing-subscriber` registry with [`SentryLayer`].
fn current_tracked_call() -> Option<TrackedCall> {
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let current = dispatch.current_span();
        let span = registry.span(current.id()?)?;
        span.scope()
            .find_map(|s| s.extensions().get::<TrackedCall>().cloned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use ::sentry::Transport;
    use ::sentry::protocol::Envelope;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;

    /// Keeps what the client would send.
    #[derive(Default)]
    struct Captured(Mutex<Vec<Envelope>>);

    impl Transport for Captured {
        fn send_envelope(&self, envelope: Envelope) {
            self.0.lock().unwrap().push(envelope);
        }
    }

    #[test]
    fn with_info_logs_off_a_tracked_failure_still_carries_its_labels() {
        let captured = Arc::new(Captured::default());
        let mut options = ClientOptions::new();
        options.dsn = Some("http://key@127.0.0.1:1/1".parse().unwrap());
        options.transport = Some(Arc::new(Arc::clone(&captured)));
        let client = Arc::new(::sentry::Client::from(options));
        let hub = Arc::new(::sentry::Hub::new(Some(client), Default::default()));
        let filter = EnvFilter::new("warn").or(TrackedCalls);
        let subscriber = tracing_subscriber::registry().with(layer().with_filter(filter));

        tracing::subscriber::with_default(subscriber, || {
            ::sentry::Hub::run(hub, || {
                tracing::info!("hidden by RUST_LOG");
                tracing::warn!("kept");
                let span = // As the macros make it: marked, its labels as fields.
            tracing::info_span!("deploy", hyperkit.call = tracing::field::Empty, chain = "ethereum");
                let _entered = span.enter();
                tracing::error!(
                    status = "failure",
                    event.duration = 5_u64,
                    error.message = "out of gas",
                    "deploy failed: out of gas"
                );
            })
        });

        let envelopes = captured.0.lock().unwrap();
        let events: Vec<_> = envelopes.iter().filter_map(Envelope::event).collect();
        assert_eq!(events.len(), 1);
        let event = events[0];
        assert_eq!(event.message.as_deref(), Some("out of gas"));
        assert_eq!(event.tags["chain"], "ethereum");
        assert_eq!(event.tags["function"], "deploy");
        assert_eq!(event.tags["status"], "failure");
        let crumbs: Vec<_> = event
            .breadcrumbs
            .values
            .iter()
            .filter_map(|b| b.message.as_deref())
            .collect();
        assert_eq!(crumbs, ["kept"]);
    }

    #[test]
    fn the_template_ignores_label_values_and_numbers() {
        let labels = vec![("chain", "solana".to_owned())];
        assert_eq!(
            message_template("solana RPC timed out after 31s (attempt 3)", &labels),
            "{chain} RPC timed out after <n>s (attempt <n>)"
        );
        assert_eq!(
            message_template("nonce 17 too low on solana", &labels),
            "nonce <n> too low on {chain}"
        );
        assert_eq!(message_template("solanax", &labels), "solanax");
    }
}
