//! Trace context on tracked calls, as a user sees it: every call has a
//! 128-bit trace id and a 64-bit span id, a call inside another is its
//! child, a call inside a `tracing` span that carries a context (or inside
//! an attached context) joins that trace, and every log line of a call
//! carries the call's ids.

use std::io::Write;
use std::sync::{Arc, Mutex};

use hyperkit_obs::calls::{self, CallSink, FinishedCall};
use hyperkit_obs::trace::{self, FutureExt, SpanExt};
use hyperkit_obs::{track_build, track_model, track_query};
use tracing_subscriber::layer::SubscriberExt;

/// What a sink saw of one call.
#[derive(Clone, Debug)]
struct Seen {
    function: &'static str,
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    sampled: bool,
}

#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl CallSink for Recorder {
    fn on_call(&self, call: &FinishedCall<'_>) {
        if !call.function.starts_with("tr_") {
            return;
        }
        let t = call.trace.expect("trace context is on");
        self.0.lock().unwrap().push(Seen {
            function: call.function,
            trace_id: t.trace_id().to_string(),
            span_id: t.span_id().to_string(),
            parent: call.parent_span_id.map(|p| p.to_string()),
            sampled: t.is_sampled(),
        });
    }
}

#[track_query(operation = "select")]
fn tr_inner() -> Option<trace::SpanContext> {
    trace::current()
}

#[track_build(chain = "ethereum")]
fn tr_outer() -> (Option<trace::SpanContext>, Option<trace::SpanContext>) {
    let mine = trace::current();
    (mine, tr_inner())
}

#[track_model(model = "small-1", task = "codegen")]
async fn tr_model() -> Option<trace::SpanContext> {
    tokio::task::yield_now().await;
    tr_inner()
}

#[track_build(chain = "solana")]
async fn tr_async_outer() -> Option<trace::SpanContext> {
    tr_model().await
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One sink for the whole binary: tests run in parallel and each looks for
/// its own calls by their trace.
fn recorder() -> &'static Recorder {
    static R: std::sync::OnceLock<(Recorder, calls::Registration)> = std::sync::OnceLock::new();
    trace::enable();
    &R.get_or_init(|| {
        let r = Recorder::default();
        let reg = calls::register(r.clone());
        (r, reg)
    })
    .0
}

fn calls_of(trace_id: &str) -> Vec<Seen> {
    recorder()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

#[test]
fn a_call_inside_another_is_its_child_in_the_same_trace() {
    let _sampling = super::sampling_blocking();
    recorder();
    let (outer, inner) = tr_outer();
    let (outer, inner) = (outer.unwrap(), inner.unwrap());
    assert_eq!(outer.trace_id().to_string().len(), 32);
    assert_eq!(outer.span_id().to_string().len(), 16);
    assert_eq!(inner.trace_id(), outer.trace_id());
    assert_ne!(inner.span_id(), outer.span_id());
    let seen = calls_of(&outer.trace_id().to_string());
    let child = seen.iter().find(|s| s.function == "tr_inner").unwrap();
    let parent = seen.iter().find(|s| s.function == "tr_outer").unwrap();
    assert_eq!(child.parent.as_deref(), Some(parent.span_id.as_str()));
    assert_eq!(parent.parent, None, "the outer call is the trace's root");
    assert!(
        trace::current().is_none(),
        "nothing stays current after the call"
    );
}

#[test]
fn two_calls_outside_any_context_start_two_traces() {
    let _sampling = super::sampling_blocking();
    recorder();
    let a = tr_inner().unwrap();
    let b = tr_inner().unwrap();
    assert_ne!(a.trace_id(), b.trace_id());
}

#[test]
fn a_call_inside_an_attached_remote_context_joins_its_trace_with_its_sampled_flag() {
    let _sampling = super::sampling_blocking();
    recorder();
    for flags in ["01", "00"] {
        let header = PARENT.replace("-01", &format!("-{flags}"));
        let remote = trace::parse_traceparent(&header).unwrap();
        let inside = {
            let _g = remote.clone().attach();
            tr_inner().unwrap()
        };
        assert_eq!(inside.trace_id(), remote.trace_id());
        assert_eq!(inside.is_sampled(), flags == "01");
    }
    let seen = calls_of("4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        seen.iter()
            .all(|s| s.parent.as_deref() == Some("00f067aa0ba902b7"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_nest_across_awaits_and_spawned_tasks_that_carry_the_context() {
    let _sampling = super::sampling().await;
    recorder();
    let innermost = tr_async_outer().await.unwrap();
    let seen = calls_of(&innermost.trace_id().to_string());
    let by = |f: &str| seen.iter().find(|s| s.function == f).cloned().unwrap();
    assert_eq!(by("tr_model").parent, Some(by("tr_async_outer").span_id));
    assert_eq!(by("tr_inner").parent, Some(by("tr_model").span_id));
    assert!(seen.iter().all(|s| s.sampled), "parent-based, root sampled");

    let remote = trace::parse_traceparent(PARENT).unwrap();
    let task = {
        let _g = remote.clone().attach();
        tokio::spawn(async { tr_model().await }.in_current_trace())
    };
    let spawned = task.await.unwrap().unwrap();
    assert_eq!(spawned.trace_id(), remote.trace_id());
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

#[track_build(chain = "polygon")]
fn tr_logged() -> Option<trace::SpanContext> {
    tracing::info!("inside the build");
    tr_inner()
}

#[test]
fn every_log_line_of_a_call_carries_the_calls_trace_and_span_ids() {
    let _sampling = super::sampling_blocking();
    recorder();
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(trace::ContextLayer)
        .with(hyperkit_obs::logs::layer("agent").with_writer(buffer.clone()));
    let inner = tracing::subscriber::with_default(subscriber, tr_logged).unwrap();
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trace_id = inner.trace_id().to_string();
    let seen = calls_of(&trace_id);
    let outer = seen.iter().find(|s| s.function == "tr_logged").unwrap();
    // The line inside the body, the inner call's closing line, the outer
    // call's closing line.
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines.iter().all(|l| l["trace.id"] == trace_id.as_str()),
        "{text}"
    );
    assert_eq!(lines[0]["span.id"], outer.span_id.as_str());
    assert_eq!(lines[1]["span.id"], inner.span_id().to_string().as_str());
    assert_eq!(lines[2]["span.id"], outer.span_id.as_str());
}

#[test]
fn a_call_inside_a_tracing_span_that_carries_a_context_joins_it() {
    let _sampling = super::sampling_blocking();
    recorder();
    let subscriber = tracing_subscriber::registry().with(trace::ContextLayer);
    let remote = trace::parse_traceparent(PARENT).unwrap();
    let joined = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("consume message");
        span.set_trace_context(remote.clone());
        // Entered later, elsewhere: the context travels with the span.
        span.in_scope(tr_inner)
    })
    .unwrap();
    assert_eq!(joined.trace_id(), remote.trace_id());
}

#[test]
fn an_unsampled_call_still_has_ids_for_its_logs_and_children() {
    let _sampling = super::sampling_blocking();
    recorder();
    let remote = trace::parse_traceparent(&PARENT.replace("-01", "-00")).unwrap();
    let _g = remote.clone().attach();
    let (outer, inner) = tr_outer();
    let (outer, inner) = (outer.unwrap(), inner.unwrap());
    assert!(!outer.is_sampled() && !inner.is_sampled());
    assert_eq!(inner.trace_id(), remote.trace_id());
    assert_ne!(inner.span_id(), outer.span_id());
}
