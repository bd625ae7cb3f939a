//! Error and panic reporting to Sentry.
//!
//! With `SENTRY_DSN` set, [`init()`](crate::init) starts the official
//! `sentry` client with its panic and context integrations, and adds
//! [`SentryLayer`] to the `tracing` subscriber:
//!
//! - the ERROR event that closes a failed tracked call becomes one Sentry
//!   event: message = the error's `Display`; tags = the call's labels
//!   (`chain`, `model`, `task`, `operation`, `db`), `status` and `function`;
//!   fingerprint = `hyperkit`, the function's path, the status and the
//!   message with label values and numbers replaced by placeholders, so the
//!   same error from the same function is one issue whatever the labels;
//! - any other ERROR event becomes a Sentry event (default grouping), tagged
//!   with the tracked call it happened in, if any;
//! - INFO and WARN events (as `RUST_LOG` lets them through) become
//!   breadcrumbs: the recent log lines attached to the next event;
//! - a panic is captured once, by the panic integration, with its stack
//!   trace and the tags of the tracked call it happened in. The tracked
//!   call's own "panicked" ERROR event is turned into a breadcrumb, not a
//!   second event.
//!
//! Every event and breadcrumb passes the scrubber (`before_send`,
//! `before_breadcrumb`) before it is queued: configured secrets, DSNs,
//! credentials in URLs, `Authorization` values, `Bearer`/`Basic` tokens and
//! the values of fields named like a secret are replaced by `[Filtered]`;
//! model prompts and outputs (fields named `prompt`, `completion`, `input`,
//! `output`, `response`, `messages`, …) are removed unless
//! `HYPERKIT_SENTRY_SEND_PROMPTS` is on.
//!
//! Events are sent by this module's transport over the workspace's `reqwest`
//! (rustls) from a thread of its own, with the `sentry` crate's own
//! `RateLimiter` reading `429`, `Retry-After` and `X-Sentry-Rate-Limits`.
//! Nothing is retried: an envelope refused, rate limited, or over the bounded
//! queue is dropped and counted in `hyperkit_obs_dropped_total{sink="sentry"}`
//! (and in Sentry's client reports).
//!
//! This module never blocks the caller (the queue is bounded and never waited
//! for; only a panic waits, up to [`FLUSH_DEADLINE`], as Sentry's panic hook
//! does, so the report leaves before the process may end), never panics, and
//! never lets a secret or, unless asked, a prompt leave the process. Without
//! a DSN none of it runs.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::sentry::client_report::{Reason as LossReason, Recorder};
use ::sentry::protocol::{
    Breadcrumb, Envelope, EnvelopeFilterCallbacks, EnvelopeItem, Event, Level as SentryLevel,
};
use ::sentry::transports::{RateLimiter, RateLimitingCategory};
use ::sentry::types::Dsn;
use ::sentry::{ClientInitGuard, ClientOptions, Integration, Transport, TransportFactory};
use regex::{Captures, Regex};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{ConfigError, MonitoringConfig};
use crate::init::InitError;
use crate::metrics::record_dropped;

/// How long dropping the [`ObsGuard`](crate::ObsGuard) waits for queued
/// events to be sent.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// Envelopes waiting to be sent; past this, new ones are dropped and counted.
const QUEUE_CAPACITY: usize = 64;

/// Time limit of one request to Sentry.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `sink` label of the drops this module counts.
const SINK: &str = "sentry";

/// What a scrubbed value is replaced with (Sentry's own marker).
const FILTERED: &str = "[Filtered]";

/// Label names the tracking macros put on their spans.
const LABELS: [&str; 5] = ["chain", "model", "task", "operation", "db"];

/// First element of the fingerprints this module sets.
const FINGERPRINT_MARK: &str = "hyperkit";

/// Frames of these crates are not the user's code: stack traces and their
/// grouping start below them.
const NOT_IN_APP: &[&str] = &[
    "hyperkit_obs::",
    "sentry_panic::",
    "tracing::",
    "tracing_subscriber::",
    "__rustc::",
];

/// Name of the transport's thread; events it logs are never reported.
const TRANSPORT_THREAD: &str = "hyperkit-sentry";

thread_local! {
    static ON_TRANSPORT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the Sentry client running; dropping it sends what is queued, for at
/// most [`FLUSH_DEADLINE`], and shuts the client down.
pub(crate) struct SentryGuard {
    guard: ClientInitGuard,
}

impl fmt::Debug for SentryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentryGuard")
            .field("enabled", &self.guard.is_enabled())
            .finish()
    }
}

impl Drop for SentryGuard {
    fn drop(&mut self) {
        self.guard.close(Some(FLUSH_DEADLINE));
    }
}

/// Starts the Sentry client when the configuration has a DSN; `Ok(None)`
/// otherwise, having touched nothing.
pub(crate) fn start(config: &MonitoringConfig) -> Result<Option<SentryGuard>, InitError> {
    let Some(dsn_secret) = &config.sentry.dsn else {
        return Ok(None);
    };
    let dsn: Dsn = dsn_secret
        .expose()
        .parse()
        .map_err(|e| ConfigError::Invalid {
            variable: "SENTRY_DSN",
            value: "***".to_owned(),
            problem: format!("is not a Sentry DSN ({e})"),
            example: "https://<public key>@o0.ingest.sentry.io/<project id>",
        })?;
    if !(0.0..=1.0).contains(&config.sentry.sample_rate) {
        return Err(ConfigError::Invalid {
            variable: "HYPERKIT_SENTRY_SAMPLE_RATE",
            value: config.sentry.sample_rate.to_string(),
            problem: "must be a number from 0.0 to 1.0".to_owned(),
            example: "0.25",
        }
        .into());
    }
    // Proxies come from HTTP_PROXY/HTTPS_PROXY/NO_PROXY, as for the other
    // sinks.
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| InitError::Sentry(e.to_string()))?;

    let mut secrets: Vec<String> = config.secrets().into_iter().map(str::to_owned).collect();
    secrets.push(dsn.public_key().to_owned());
    secrets.extend(dsn.secret_key().map(str::to_owned));
    secrets.extend(secrets_in_environment());
    let scrubber = Arc::new(Scrubber::new(secrets, config.sentry.send_prompts));

    let mut options = ClientOptions::new().sample_rate(config.sentry.sample_rate);
    options.dsn = Some(dsn);
    options.release = config.sentry.release.clone().map(Cow::Owned);
    options.environment = config
        .sentry
        .environment
        .clone()
        .or_else(|| config.environment.clone())
        .map(Cow::Owned);
    options.shutdown_timeout = FLUSH_DEADLINE;
    options.integrations = vec![Arc::new(TrackedCallTags)];
    options.transport = Some(Arc::new(HttpTransportFactory { http }));
    let on_event = Arc::clone(&scrubber);
    options.in_app_exclude = NOT_IN_APP.to_vec();
    options.before_send = Some(Arc::new(move |event| {
        let Some(scrubbed) = on_event.scrub_event(event) else {
            record_dropped(SINK, 1);
            return None;
        };
        Some(finish_fingerprint(scrubbed))
    }));
    options.before_breadcrumb = Some(Arc::new(move |crumb| {
        Some(scrubber.scrub_breadcrumb(crumb))
    }));

    let guard = ::sentry::init(options);
    // `init` binds the client to this thread's hub; threads started later
    // inherit from the process hub, so bind it there too.
    let main = ::sentry::Hub::main();
    if !Arc::ptr_eq(&main, &::sentry::Hub::current()) {
        main.bind_client(::sentry::Hub::current().client());
    }
    Ok(Some(SentryGuard { guard }))
}

/// Sends what the Sentry client has queued, waiting at most `timeout`;
/// `true` when everything went out (or Sentry is not running). Call it
/// before `std::process::exit`, which skips the guard's drop.
pub fn flush(timeout: Duration) -> bool {
    ::sentry::Hub::current()
        .client()
        .is_none_or(|client| client.flush(Some(timeout)))
}

/// Values of environment variables whose names mark them as secrets
/// (`MLFLOW_TRACKING_TOKEN`, `OPENAI_API_KEY`, …), scrubbed wherever they
/// appear. Short values would scrub ordinary words, so they are left out.
fn secrets_in_environment() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, value)| {
            value.len() >= 8
                && (is_secret_name(name) || name.to_ascii_uppercase().ends_with("_KEY"))
        })
        .map(|(_, value)| value)
        .collect()
}

// ---------------------------------------------------------------------------
// The tracing side: which spans and events reach the layer, and what it makes
// of them.

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

/// A span the tracking macros made: named after the function, its fields
/// all label names.
pub(crate) fn is_tracked_span(meta: &Metadata<'_>) -> bool {
    meta.is_span()
        && !meta.fields().is_empty()
        && meta.fields().iter().all(|f| LABELS.contains(&f.name()))
}

/// The event closing a tracked call (`__hyperkit_finished_event`): the only
/// events with both `status` and `event.duration`.
fn is_closing_event(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.fields().field("status").is_some()
        && meta.fields().field("event.duration").is_some()
}

/// The per-layer filter that lets tracked spans and the ERROR events closing
/// tracked calls through to [`SentryLayer`] whatever `RUST_LOG` says, so a
/// failure is reported with its labels even when INFO logs are off.
/// `init()` combines it with the `RUST_LOG` filter.
pub(crate) struct TrackedCalls;

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
        let labels = LABELS
            .iter()
            .filter_map(|name| Some((*name, fields.take_string(name)?)))
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
        if level == Level::DEBUG || level == Level::TRACE || ON_TRANSPORT_THREAD.get() {
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
fn finish_fingerprint(mut event: Event<'static>) -> Event<'static> {
    if event.fingerprint.len() == 4 && event.fingerprint[0] == FINGERPRINT_MARK {
        let labels: Vec<(&str, String)> = LABELS
            .iter()
            .filter_map(|name| Some((*name, event.tags.get(*name)?.clone())))
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

/// Tags events captured inside a tracked call by other means than the
/// layer (the panic integration, `sentry::capture_*`) with that call's
/// labels, `function` and, for a panic, `status = panic`.
struct TrackedCallTags;

impl Integration for TrackedCallTags {
    fn name(&self) -> &'static str {
        "hyperkit-tracked-call"
    }

    fn process_event(
        &self,
        mut event: Event<'static>,
        _: &ClientOptions,
    ) -> Option<Event<'static>> {
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

// ---------------------------------------------------------------------------
// Scrubbing.

/// Names of fields that hold model prompts and outputs (the last segment of
/// a dotted name is compared, so `gen_ai.prompt` is one too).
const PROMPT_FIELDS: &[&str] = &[
    "prompt",
    "prompts",
    "completion",
    "completions",
    "input",
    "inputs",
    "output",
    "outputs",
    "response",
    "responses",
    "messages",
];

/// Does a field, header or variable name say its value is a secret?
fn is_secret_name(name: &str) -> bool {
    const CONTAINED: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "credential",
        "authorization",
        "cookie",
    ];
    const WHOLE: &[&str] = &["pwd", "auth", "dsn", "bearer", "session"];
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words
        .iter()
        .any(|w| CONTAINED.iter().any(|c| w.contains(c)) || WHOLE.contains(w))
        || words.windows(2).any(|p| {
            p[1] == "key" && matches!(p[0], "api" | "access" | "private" | "secret" | "signing")
        })
}

/// Is this field a model prompt or output?
fn is_prompt_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let last = lower.rsplit(['.', ':']).next().unwrap_or(&lower);
    PROMPT_FIELDS.contains(&last) || last.contains("prompt") || last.contains("completion")
}

/// Keys under which text is code locations, not messages: only the literal
/// secrets are replaced there, so stack traces stay readable.
fn is_code_location(key: &str) -> bool {
    matches!(key, "frames" | "debug_meta" | "sdk" | "modules")
}

struct Patterns {
    url_userinfo: Regex,
    authorization: Regex,
    scheme_token: Regex,
    key_value: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(p).unwrap_or_else(|e| unreachable!("constant pattern: {e}"));
    Patterns {
        // scheme://user:password@host — DSNs and database URLs.
        url_userinfo: re(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@]+@"),
        // The whole value of an Authorization header, whatever its scheme.
        authorization: re(
            r#"(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:\[Filtered\]|[^"'\r\n,;}\]]+)"#,
        ),
        scheme_token: re(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*"),
        // key=value, key: value, "key":"value" for secret-looking keys.
        key_value: re(
            r#"(?i)([a-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|credentials?|cookie|dsn|session[_\-]?id)[a-z0-9_.\-]*)(["']?\s*[:=]\s*["']?)(\[Filtered\]|[^\s"',;&}\])\[]+)"#,
        ),
    }
});

/// Removes secrets, and unless allowed prompts, from what is sent to
/// Sentry.
pub(crate) struct Scrubber {
    /// Literal values to replace, longest first.
    secrets: Vec<String>,
    send_prompts: bool,
}

impl Scrubber {
    pub(crate) fn new(mut secrets: Vec<String>, send_prompts: bool) -> Self {
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber {
            secrets,
            send_prompts,
        }
    }

    /// The event with every string scrubbed; `None` if it cannot be read
    /// back, since an unscrubbed event must not be sent.
    pub(crate) fn scrub_event(&self, event: Event<'static>) -> Option<Event<'static>> {
        let mut value = serde_json::to_value(&event).ok()?;
        if let Value::Object(map) = &mut value {
            // The event's own keys (`message`, `exception`, …) are protocol,
            // not user fields: only their contents are looked at.
            for (key, v) in map.iter_mut() {
                self.scrub_value(v, !is_code_location(key));
            }
        }
        serde_json::from_value(value).ok()
    }

    pub(crate) fn scrub_breadcrumb(&self, mut crumb: Breadcrumb) -> Breadcrumb {
        if let Some(message) = &mut crumb.message
            && let Cow::Owned(scrubbed) = self.scrub_str(message, true)
        {
            *message = scrubbed;
        }
        if !self.send_prompts {
            crumb.data.retain(|k, v| !(is_prompt_name(k) && is_text(v)));
        }
        for (k, v) in crumb.data.iter_mut() {
            self.scrub_entry(k, v, true);
        }
        crumb
    }

    fn scrub_entry(&self, key: &str, value: &mut Value, patterns: bool) {
        if is_secret_name(key) && is_text(value) {
            *value = Value::String(FILTERED.to_owned());
        } else {
            self.scrub_value(value, patterns && !is_code_location(key));
        }
    }

    fn scrub_value(&self, value: &mut Value, patterns: bool) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(scrubbed) = self.scrub_str(s, patterns) {
                    *s = scrubbed;
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.scrub_value(item, patterns);
                }
            }
            Value::Object(map) => {
                if !self.send_prompts {
                    map.retain(|k, v| !(is_prompt_name(k) && is_text(v)));
                }
                for (k, v) in map.iter_mut() {
                    self.scrub_entry(k, v, patterns);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn scrub_str<'a>(&self, text: &'a str, patterns: bool) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), FILTERED));
            }
        }
        if !patterns {
            return text;
        }
        let p = &*PATTERNS;
        let replaced = |t: Cow<'a, str>, re: &Regex, with: &dyn Fn(&Captures<'_>) -> String| {
            let changed = match re.replace_all(&t, |c: &Captures<'_>| with(c)) {
                Cow::Borrowed(_) => None,
                Cow::Owned(s) => Some(s),
            };
            changed.map_or(t, Cow::Owned)
        };
        text = replaced(text, &p.url_userinfo, &|c| format!("{}{FILTERED}@", &c[1]));
        text = replaced(text, &p.authorization, &|c| format!("{}{FILTERED}", &c[1]));
        text = replaced(text, &p.scheme_token, &|c| format!("{} {FILTERED}", &c[1]));
        replaced(text, &p.key_value, &|c| {
            let (sep, value) = (&c[2], &c[3]);
            let rust_path = sep.trim() == ":" && (value.starts_with(':') || c[0].contains("::"));
            if rust_path || value.bytes().all(|b| b.is_ascii_digit()) || value == FILTERED {
                c[0].to_owned()
            } else {
                format!("{}{sep}{FILTERED}", &c[1])
            }
        })
    }
}

/// Values that can carry text (numbers and booleans are kept: a token
/// count is not a token).
fn is_text(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Array(_) | Value::Object(_))
}

// ---------------------------------------------------------------------------
// The transport.

/// Makes the client's [`HttpTransport`].
struct HttpTransportFactory {
    http: reqwest::Client,
}

impl TransportFactory for HttpTransportFactory {
    fn create_transport_with_options(
        &self,
        options: ::sentry::TransportOptions,
    ) -> Arc<dyn Transport> {
        Arc::new(HttpTransport::start(self.http.clone(), options))
    }
}

/// Counts the envelopes queued or being sent, so `flush` can wait for them.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn done(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until nothing is in flight or `timeout` passed; `true` if idle.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self
                .idle
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn take(&self) -> usize {
        std::mem::take(&mut *self.count.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Sends envelopes to Sentry's envelope endpoint from a thread of its own,
/// honouring Sentry's rate limits, never retrying.
struct HttpTransport {
    queue: Mutex<Option<SyncSender<Envelope>>>,
    in_flight: Arc<InFlight>,
    /// Set when shutdown gave up waiting: what is left was counted as
    /// dropped and is discarded unsent.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    recorder: Recorder,
}

impl HttpTransport {
    fn start(http: reqwest::Client, options: ::sentry::TransportOptions) -> Self {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let in_flight = Arc::new(InFlight::default());
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let recorder = options.client_report_recorder.clone();
        let worker = Worker {
            http,
            url: options.dsn.envelope_api_url().to_string(),
            auth: options.dsn.to_auth(Some(&options.user_agent)).to_string(),
            limits: RateLimiter::new(),
            recorder: recorder.clone(),
            in_flight: Arc::clone(&in_flight),
            abandoned: Arc::clone(&abandoned),
        };
        let spawned = std::thread::Builder::new()
            .name(TRANSPORT_THREAD.into())
            .spawn(move || worker.run(rx));
        HttpTransport {
            // Without its thread the transport drops (and counts) everything.
            queue: Mutex::new(spawned.ok().map(|_| tx)),
            in_flight,
            abandoned,
            recorder,
        }
    }

    fn drop_envelope(&self, envelope: &Envelope, reason: LossReason) {
        record_dropped(SINK, telemetry_items(envelope));
        self.recorder.record_lost_data(envelope, reason);
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = queue.as_ref() else {
            drop(queue);
            self.drop_envelope(&envelope, LossReason::QueueOverflow);
            return;
        };
        self.in_flight.add();
        if let Err(TrySendError::Full(envelope) | TrySendError::Disconnected(envelope)) =
            tx.try_send(envelope)
        {
            drop(queue);
            self.in_flight.done();
            self.drop_envelope(&envelope, LossReason::QueueOverflow);
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.in_flight.wait_idle(timeout)
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let drained = self.flush(timeout);
        // Closing the queue ends the thread once it is empty.
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if !drained {
            self.abandoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let left = self.in_flight.take();
            record_dropped(SINK, u64::try_from(left).unwrap_or(u64::MAX));
        }
        drained
    }
}

/// The sending thread's state.
struct Worker {
    http: reqwest::Client,
    url: String,
    auth: String,
    limits: RateLimiter,
    recorder: Recorder,
    in_flight: Arc<InFlight>,
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Envelope>) {
        ON_TRANSPORT_THREAD.set(true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        for envelope in rx {
            if !self.abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                match &runtime {
                    Ok(rt) => self.send(rt, envelope),
                    Err(_) => self.lost(&envelope, LossReason::InternalError),
                }
            }
            self.in_flight.done();
        }
    }

    fn lost(&self, envelope: &Envelope, reason: LossReason) {
        record_dropped(SINK, telemetry_items(envelope));
        self.recorder.record_lost_data(envelope, reason);
    }

    fn send(&mut self, rt: &tokio::runtime::Runtime, envelope: Envelope) {
        if self.limits.is_disabled(RateLimitingCategory::Any).is_some() {
            self.lost(&envelope, LossReason::RatelimitBackoff);
            return;
        }
        // Per-category limits (`X-Sentry-Rate-Limits: 60:error:…`), as the
        // sentry crate's own transports apply them.
        let limits = &self.limits;
        let recorder = &self.recorder;
        let mut limited = 0;
        let envelope = envelope.filter(EnvelopeFilterCallbacks::new(
            |item: &EnvelopeItem| limits.is_enabled(category(item)),
            |item: EnvelopeItem| {
                limited += u64::from(!matches!(item, EnvelopeItem::ClientReport(_)));
                recorder.record_lost_data(&item, LossReason::RatelimitBackoff);
            },
        ));
        if limited > 0 {
            record_dropped(SINK, limited);
        }
        let Some(envelope) = envelope else {
            return;
        };
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            self.lost(&envelope, LossReason::InternalError);
            return;
        }
        let request = self
            .http
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-sentry-envelope",
            )
            .body(body);
        let answer = rt.block_on(async move {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            // Read the (small) body so the connection can be reused.
            let _ = response.bytes().await;
            Ok::<_, reqwest::Error>((status, headers))
        });
        match answer {
            Ok((status, headers)) => {
                let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
                if let Some(limits) = header("x-sentry-rate-limits") {
                    self.limits.update_from_sentry_header(limits);
                } else if let Some(after) = header("retry-after") {
                    self.limits.update_from_retry_after(after);
                } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    self.limits.update_from_429();
                }
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    // Lost, but Sentry counts it itself: no client report.
                    record_dropped(SINK, telemetry_items(&envelope));
                } else if !status.is_success() {
                    self.lost(&envelope, LossReason::SendError);
                }
            }
            Err(_) => self.lost(&envelope, LossReason::NetworkError),
        }
    }
}

/// The rate-limit category of an envelope item, as Sentry names them.
fn category(item: &EnvelopeItem) -> RateLimitingCategory {
    match item {
        EnvelopeItem::Event(_) => RateLimitingCategory::Error,
        EnvelopeItem::SessionUpdate(_) | EnvelopeItem::SessionAggregates(_) => {
            RateLimitingCategory::Session
        }
        EnvelopeItem::Transaction(_) => RateLimitingCategory::Transaction,
        EnvelopeItem::Attachment(_) => RateLimitingCategory::Attachment,
        _ => RateLimitingCategory::Any,
    }
}

/// Items of an envelope that count as telemetry (client reports are the
/// client's own bookkeeping).
fn telemetry_items(envelope: &Envelope) -> u64 {
    let n = envelope
        .items()
        .filter(|i| !matches!(i, EnvelopeItem::ClientReport(_)))
        .count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
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
                let span = tracing::info_span!("deploy", chain = "ethereum");
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

    fn scrubber(prompts: bool) -> Scrubber {
        Scrubber::new(vec!["hunter2-pass".to_owned()], prompts)
    }

    #[test]
    fn credentials_in_text_are_replaced() {
        let s = scrubber(false);
        let cases = [
            (
                "GET with Authorization: Bearer abc.def-ghi",
                "GET with Authorization: [Filtered]",
            ),
            ("sent bearer abc123xyz", "sent bearer [Filtered]"),
            ("header Basic dXNlcjpwYXNz==", "header Basic [Filtered]"),
            (
                "connect postgres://app:pa55@db:5432/x failed",
                "connect postgres://[Filtered]@db:5432/x failed",
            ),
            (
                "dsn https://k3y@o1.ingest.sentry.io/42",
                "dsn https://[Filtered]@o1.ingest.sentry.io/42",
            ),
            (
                "password=opensesame user=bob",
                "password=[Filtered] user=bob",
            ),
            (r#"{"api_key":"sk-123abc"}"#, r#"{"api_key":"[Filtered]"}"#),
            ("login with hunter2-pass", "login with [Filtered]"),
            ("tokens: 512", "tokens: 512"),
            ("in my_crate::token::refresh", "in my_crate::token::refresh"),
            ("out of gas on ethereum", "out of gas on ethereum"),
        ];
        for (input, want) in cases {
            let once = s.scrub_str(input, true);
            assert_eq!(once, want, "{input}");
            assert_eq!(
                s.scrub_str(&once, true),
                want,
                "scrubbing twice changes nothing"
            );
        }
    }

    #[test]
    fn secret_and_prompt_fields_are_filtered_in_breadcrumbs() {
        let mut crumb = Breadcrumb {
            message: Some("calling the model".to_owned()),
            ..Default::default()
        };
        crumb.data.insert("prompt".into(), "write a poem".into());
        crumb
            .data
            .insert("gen_ai.completion".into(), "roses".into());
        crumb.data.insert("authorization".into(), "Bearer x".into());
        crumb.data.insert("tokens.input".into(), 12.into());
        crumb.data.insert("chain".into(), "ethereum".into());
        let scrubbed = scrubber(false).scrub_breadcrumb(crumb.clone());
        assert!(!scrubbed.data.contains_key("prompt"));
        assert!(!scrubbed.data.contains_key("gen_ai.completion"));
        assert_eq!(scrubbed.data["authorization"], FILTERED);
        assert_eq!(scrubbed.data["tokens.input"], 12);
        assert_eq!(scrubbed.data["chain"], "ethereum");

        let kept = scrubber(true).scrub_breadcrumb(crumb);
        assert_eq!(kept.data["prompt"], "write a poem");
    }

    #[test]
    fn an_event_is_scrubbed_everywhere_and_keeps_its_stack_trace() {
        let mut event = Event {
            message: Some("failed: password=opensesame".to_owned()),
            ..Default::default()
        };
        event
            .tags
            .insert("note".into(), "Bearer abcdefgh".to_owned());
        event
            .extra
            .insert("output".into(), "the model's answer".into());
        event.extra.insert("db_password".into(), "x".into());
        event.fingerprint = Cow::Owned(vec![Cow::Owned("hunter2-pass".to_owned())]);
        let scrubbed = scrubber(false).scrub_event(event).unwrap();
        let text = serde_json::to_string(&scrubbed).unwrap();
        for secret in ["opensesame", "abcdefgh", "model's answer", "hunter2-pass"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(scrubbed.extra["db_password"], FILTERED);
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

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "password",
            "DB_PASSWORD",
            "x-api-key",
            "MLFLOW_TRACKING_TOKEN",
            "Authorization",
            "SENTRY_DSN",
            "client_secret",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["chain", "model", "status", "event.duration", "monkey"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
