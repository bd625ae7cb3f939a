//! The span and the closing event of each call, seen by a subscriber.

use std::sync::{Arc, Mutex};

use hyperkit_obs::{track_build, track_query};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Debug, Default)]
struct Seen {
    level: Option<Level>,
    target: String,
    message: String,
    fields: Vec<(String, String)>,
    span_name: String,
    span_fields: Vec<(String, String)>,
}

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct SpanFields(Vec<(String, String)>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut f = Fields(Vec::new());
        attrs.record(&mut f);
        ctx.span(id)
            .unwrap()
            .extensions_mut()
            .insert(SpanFields(f.0));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields(Vec::new());
        event.record(&mut f);
        let message =
            f.0.iter()
                .find(|(k, _)| k == "message")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
        let span = ctx.event_span(event);
        let (span_name, span_fields) = span
            .map(|s| {
                let fields = s
                    .extensions()
                    .get::<SpanFields>()
                    .map(|f| f.0.clone())
                    .unwrap_or_default();
                (s.name().to_owned(), fields)
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Seen {
            level: Some(*event.metadata().level()),
            target: event.metadata().target().to_owned(),
            message,
            fields: f.0,
            span_name,
            span_fields,
        });
    }
}

fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Seen>) {
    let cap = Capture::default();
    let subscriber = tracing_subscriber::registry().with(cap.clone());
    let r = tracing::subscriber::with_default(subscriber, f);
    let seen = cap.0.lock().unwrap().clone();
    (r, seen)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Debug)]
struct OutOfGas;
impl std::fmt::Display for OutOfGas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("out of gas at block 7")
    }
}

#[track_build(chain)]
fn deploy(chain: &str, fail: bool) -> Result<(), OutOfGas> {
    tracing::info!("inside");
    if fail { Err(OutOfGas) } else { Ok(()) }
}

#[test]
fn success_is_an_info_event_inside_a_span_that_carries_the_labels() {
    let (_, seen) = capture(|| deploy("ethereum", false));
    let inner = &seen[0];
    assert_eq!(inner.message, "inside");
    assert_eq!(inner.span_name, "deploy");
    assert_eq!(field(&inner.span_fields, "chain"), Some("ethereum"));

    let end = seen.last().unwrap();
    assert_eq!(end.level, Some(Level::INFO));
    assert_eq!(end.message, "deploy succeeded");
    assert_eq!(
        end.target,
        module_path!(),
        "the user's module is the target"
    );
    assert_eq!(field(&end.fields, "status"), Some("success"));
    assert!(
        field(&end.fields, "event.duration")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(end.span_name, "deploy");
}

#[test]
fn failure_is_an_error_event_with_the_errors_display() {
    let (_, seen) = capture(|| deploy("solana", true));
    let end = seen.last().unwrap();
    assert_eq!(end.level, Some(Level::ERROR));
    assert_eq!(end.message, "deploy failed: out of gas at block 7");
    assert_eq!(
        field(&end.fields, "error.message"),
        Some("out of gas at block 7")
    );
    assert_eq!(field(&end.fields, "status"), Some("failure"));
    assert_eq!(field(&end.span_fields, "chain"), Some("solana"));
}

#[test]
fn panic_is_an_error_event() {
    #[track_build(chain = "panicky")]
    fn explode() {
        panic!("boom")
    }
    let (_, seen) = capture(|| std::panic::catch_unwind(explode));
    let end = seen.last().unwrap();
    assert_eq!(
        (end.level, end.message.as_str()),
        (Some(Level::ERROR), "explode panicked")
    );
    assert_eq!(field(&end.fields, "status"), Some("panic"));
}

#[track_query(operation = "ping", db = "postgres", level = "debug")]
fn ping() -> bool {
    true
}

#[test]
fn level_debug_lowers_the_success_event_and_db_annotates_the_span() {
    let (_, seen) = capture(ping);
    let end = seen.last().unwrap();
    assert_eq!(end.level, Some(Level::DEBUG));
    assert_eq!(field(&end.span_fields, "operation"), Some("ping"));
    assert_eq!(field(&end.span_fields, "db"), Some("postgres"));
}
