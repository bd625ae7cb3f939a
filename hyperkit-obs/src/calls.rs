//! The one thing sinks receive from a tracked call: a [`FinishedCall`]
//! (and span sinks, from a traced HTTP request, a [`FinishedRequest`]),
//! handed to every [`CallSink`] registered, on the caller's thread, after
//! the call's metrics are recorded. MLflow is one such sink (registered by
//! [`init()`](crate::init) or [`mlflow::start`](crate::mlflow::start)); a
//! program adds its own with [`register`]:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use hyperkit_obs::calls::{self, CallSink, FinishedCall};
//! use hyperkit_obs::{Status, track_model};
//!
//! /// Keeps the failed model calls (a real one would queue them for a file
//! /// through `hyperkit_obs::export`, so the caller never waits for a disk).
//! #[derive(Default)]
//! struct Failures(Mutex<Vec<String>>);
//!
//! impl CallSink for Failures {
//!     fn on_call(&self, call: &FinishedCall<'_>) {
//!         if call.domain == "model" && call.status != Status::Success {
//!             let labels: Vec<String> = call.labels().map(|(k, v)| format!("{k}={v}")).collect();
//!             self.0.lock().unwrap().push(format!("{} {} {}", call.function, call.status, labels.join(",")));
//!         }
//!     }
//! }
//!
//! #[track_model(model, task = "codegen")]
//! fn complete(model: &str, ok: bool) -> Result<String, String> {
//!     if ok { Ok("fn main() {}".into()) } else { Err("context window exceeded".into()) }
//! }
//!
//! let failures = Arc::new(Failures::default());
//! let _registration = calls::register(Arc::clone(&failures));
//! let _ = complete("small-1", true);
//! let _ = complete("small-1", false);
//! assert_eq!(*failures.0.lock().unwrap(), ["complete failure model=small-1,task=codegen"]);
//! ```
//!
//! A sink runs on the thread of the call it hears of, so it must be cheap
//! and must not block: queue anything slow for a background sink on the
//! shared runtime ([`crate::export`]). A panicking sink is caught and
//! skipped; it never reaches the caller. With no sink registered a call
//! pays one relaxed atomic load for all this.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use crate::model::{CallId, Usage};
use crate::trace::{SpanContext, SpanId};
use crate::track::Status;

/// A tracked call that has finished, as sinks receive it.
#[non_exhaustive]
pub struct FinishedCall<'a> {
    /// The domain the call was tracked under: `build`, `model` and `query`
    /// for the built-in macros.
    pub domain: &'static str,
    /// The annotated function's name.
    pub function: &'static str,
    /// The module path of the annotated function.
    pub module: &'static str,
    /// How it ended.
    pub status: Status,
    /// When it ended, by the wall clock.
    pub end: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// The error's `Display`, for a failure whose error has one.
    pub error: Option<&'a dyn fmt::Display>,
    /// The error's type name, for a failure.
    pub error_type: Option<&'static str>,
    /// Token usage and acceptance read from a model call's output.
    pub usage: Option<Usage>,
    /// For a streamed call (a `#[track_model]` function returning a
    /// stream), the time from its start to its first item; `None` for
    /// other calls and for a stream that ended or was dropped before one.
    pub time_to_first_token: Option<Duration>,
    /// What a model call cost in USD, when its usage is known and its
    /// model has a price ([`PriceTable`](crate::model::PriceTable)).
    pub cost_usd: Option<f64>,
    /// The id of a model call.
    pub call_id: Option<CallId>,
    /// The call's trace context (`None` while trace context is off: see
    /// [`crate::trace`]).
    pub trace: Option<&'a SpanContext>,
    /// The span the call ran under: an enclosing tracked call, or the
    /// request or context it joined.
    pub parent_span_id: Option<SpanId>,
    /// The scores recorded inside a sampled call, for its span
    /// ([`record_score`](crate::model::record_score)).
    pub scores: &'a [crate::model::Score],
    /// A model call's provider (`#[track_model(…, provider = …)]`), which
    /// is not a metric label.
    pub provider: Option<&'static str>,
    pub(crate) label_names: &'static [&'static str],
    pub(crate) label_values: &'static [Box<str>],
}

impl FinishedCall<'_> {
    /// The call's labels, `(name, value)`, in the domain's order (values
    /// sanitised, as the metrics carry them).
    pub fn labels(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.label_names
            .iter()
            .copied()
            .zip(self.label_values.iter().map(|v| &**v))
    }

    /// The value of label `name`, if the call has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// A streamed call's output tokens per second, from its first item to
    /// its end (so the wait for the first token does not count); `None` for
    /// a call that is not a stream, had no first item or no output count.
    pub fn output_tokens_per_second(&self) -> Option<f64> {
        crate::model::output_tokens_per_second(
            self.usage.and_then(|u| u.output_tokens),
            self.duration,
            self.time_to_first_token,
        )
    }

    /// When it started, by the wall clock (`end - duration`).
    pub fn start(&self) -> SystemTime {
        self.end.checked_sub(self.duration).unwrap_or(self.end)
    }
}

impl fmt::Debug for FinishedCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinishedCall")
            .field("domain", &self.domain)
            .field("function", &self.function)
            .field("status", &self.status)
            .field("labels", &self.labels().collect::<Vec<_>>())
            .field("duration", &self.duration)
            .field("time_to_first_token", &self.time_to_first_token)
            .field("error", &self.error.map(ToString::to_string))
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

/// An HTTP request the [`HttpMetricsLayer`](crate::http::HttpMetricsLayer)
/// served with its trace sampled, as span sinks receive it
/// ([`CallSink::on_request`]).
#[non_exhaustive]
#[derive(Debug)]
pub struct FinishedRequest<'a> {
    /// `GET`, `POST`, … (`other` for extension methods).
    pub method: &'static str,
    /// The route template (`/builds/{id}`), or `unmatched`.
    pub route: &'static str,
    /// The path requested (`url.path`).
    pub path: &'a str,
    /// `1.1`, `2`, … (`network.protocol.version`).
    pub protocol_version: &'static str,
    /// The response's status code; `None` when the service failed or the
    /// request was dropped before it answered.
    pub status_code: Option<u16>,
    /// When it arrived, by the wall clock.
    pub start: SystemTime,
    /// When it was answered (or dropped).
    pub end: SystemTime,
    /// The request's span.
    pub trace: &'a SpanContext,
    /// The caller's span, from its `traceparent`.
    pub parent_span_id: Option<SpanId>,
}

/// What was learnt about a model call after it returned.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Feedback {
    /// Its output was accepted or rejected
    /// ([`record_acceptance`](crate::model::record_acceptance)).
    Acceptance {
        /// The call.
        call: CallId,
        /// Whether the output was accepted.
        accepted: bool,
        /// When it was decided, in milliseconds since the Unix epoch.
        at_ms: i64,
    },
    /// A quality score of its output
    /// ([`record_score`](crate::model::record_score)).
    Score {
        /// The call.
        call: CallId,
        /// The score's name, a valid MLflow metric key.
        name: String,
        /// Its value, finite.
        value: f64,
        /// When it was recorded, in milliseconds since the Unix epoch.
        at_ms: i64,
    },
}

/// Receives every tracked call that finishes, on the caller's thread.
pub trait CallSink: Send + Sync + 'static {
    /// One call finished. Keep it short and never block.
    fn on_call(&self, call: &FinishedCall<'_>);

    /// Something was learnt about a call after it returned.
    fn on_feedback(&self, _feedback: &Feedback) {}

    /// An HTTP request with a sampled trace was served (span sinks only:
    /// see [`register_sampled`]).
    fn on_request(&self, _request: &FinishedRequest<'_>) {}
}

impl<S: CallSink> CallSink for Arc<S> {
    fn on_call(&self, call: &FinishedCall<'_>) {
        (**self).on_call(call);
    }
    fn on_feedback(&self, feedback: &Feedback) {
        (**self).on_feedback(feedback);
    }
    fn on_request(&self, request: &FinishedRequest<'_>) {
        (**self).on_request(request);
    }
}

type Sinks = Arc<[(u64, Arc<dyn CallSink>)]>;

/// One list of sinks: read without a lock from each thread's copy.
struct List {
    /// Whether any sink is registered: the one load a call pays without
    /// sinks.
    any: AtomicBool,
    /// Bumped on every change, so each thread knows its copy is stale.
    generation: AtomicU64,
    sinks: RwLock<Option<Sinks>>,
}

impl List {
    const fn new() -> Self {
        List {
            any: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            sinks: RwLock::new(None),
        }
    }

    fn change(&self, edit: impl FnOnce(&mut Vec<(u64, Arc<dyn CallSink>)>)) {
        let mut guard = self.sinks.write().unwrap_or_else(PoisonError::into_inner);
        let mut sinks: Vec<(u64, Arc<dyn CallSink>)> =
            guard.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        edit(&mut sinks);
        self.any.store(!sinks.is_empty(), Ordering::Release);
        *guard = (!sinks.is_empty()).then(|| Sinks::from(sinks));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn current(&self) -> Option<Sinks> {
        self.sinks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The sinks of every call.
static ALL: List = List::new();
/// The sinks of sampled calls only (span exporters).
static SAMPLED: List = List::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A thread's copy of a list, with the generation it was taken at.
type Copy = RefCell<(u64, Option<Sinks>)>;

thread_local! {
    /// This thread's copies of the lists: reading them takes no lock and
    /// touches no shared cache line.
    static LOCAL_ALL: Copy = const { RefCell::new((u64::MAX, None)) };
    static LOCAL_SAMPLED: Copy = const { RefCell::new((u64::MAX, None)) };
}

/// Keeps a sink registered; dropping it removes the sink.
#[must_use = "dropping the registration removes the sink"]
#[derive(Debug)]
pub struct Registration {
    id: u64,
    sampled_only: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let list = if self.sampled_only { &SAMPLED } else { &ALL };
        list.change(|sinks| sinks.retain(|(id, _)| *id != self.id));
    }
}

/// A background sink that hears calls: its registration and its queue, kept
/// together so that stopping it first ends the registration (calls from then
/// on are not queued) and then delivers what is queued within a deadline.
/// The guards of the MLflow exporter and of the span exporters hold one.
#[cfg(any(feature = "mlflow", feature = "otlp"))]
pub(crate) struct Subscribed<T> {
    registration: Option<Registration>,
    guard: Option<crate::export::Guard<T>>,
}

#[cfg(any(feature = "mlflow", feature = "otlp"))]
impl<T: Send + 'static> Subscribed<T> {
    pub(crate) fn new(registration: Registration, guard: crate::export::Guard<T>) -> Self {
        Subscribed {
            registration: Some(registration),
            guard: Some(guard),
        }
    }

    /// The queue's state, until stopped.
    pub(crate) fn status(&self) -> Option<crate::export::SinkStatus> {
        self.guard.as_ref().map(crate::export::Guard::status)
    }

    /// Waits until everything queued so far is delivered or given up, for
    /// at most `deadline`; `true` once stopped.
    pub(crate) fn flush(&self, deadline: Duration) -> bool {
        self.guard.as_ref().is_none_or(|g| g.flush(deadline))
    }

    /// Ends the registration, then delivers what is queued for at most
    /// `deadline` and stops the worker. Later calls do nothing.
    pub(crate) fn stop(&mut self, deadline: Duration) {
        self.registration.take();
        if let Some(guard) = self.guard.take() {
            guard.shutdown(deadline);
        }
    }
}

/// Adds `sink`: every call that finishes from now on is handed to it until
/// the registration is dropped.
pub fn register(sink: impl CallSink) -> Registration {
    add(&ALL, sink, false)
}

/// Adds `sink` for the calls whose trace is sampled only (see
/// [`crate::trace`]): a span exporter's way in. An unsampled call never
/// reaches it, and costs nothing more for its being registered.
pub fn register_sampled(sink: impl CallSink) -> Registration {
    add(&SAMPLED, sink, true)
}

fn add(list: &List, sink: impl CallSink, sampled_only: bool) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let sink: Arc<dyn CallSink> = Arc::new(sink);
    list.change(|sinks| sinks.push((id, sink)));
    Registration { id, sampled_only }
}

/// Whether a finished call has anyone to go to.
#[inline]
pub(crate) fn any() -> bool {
    ALL.any.load(Ordering::Relaxed)
}

/// Whether a sampled call has a span sink to go to.
#[inline]
pub(crate) fn any_sampled() -> bool {
    SAMPLED.any.load(Ordering::Relaxed)
}

/// Hands each sink of `list` to `f`, from this thread's copy of the list
/// (no lock, no reference count touched).
fn each(
    list: &'static List,
    local: &'static std::thread::LocalKey<Copy>,
    f: impl Fn(&dyn CallSink),
) {
    let call = |sinks: &Sinks| {
        for (_, sink) in sinks.iter() {
            // A sink's panic must not reach the caller, nor skip the others.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&**sink)));
        }
    };
    let generation = list.generation.load(Ordering::Acquire);
    let ran = local.try_with(|local| {
        if local.borrow().0 != generation {
            match local.try_borrow_mut() {
                Ok(mut copy) => *copy = (generation, list.current()),
                Err(_) => {
                    // A sink made a tracked call while the list changed: the
                    // outer call still reads this thread's copy.
                    if let Some(sinks) = list.current() {
                        call(&sinks);
                    }
                    return;
                }
            }
        }
        if let Some(sinks) = &local.borrow().1 {
            call(sinks);
        }
    });
    if ran.is_err() {
        // This thread's locals are being destroyed: read the list itself.
        if let Some(sinks) = list.current() {
            call(&sinks);
        }
    }
}

/// Hands `call` to every sink.
pub(crate) fn dispatch(call: &FinishedCall<'_>) {
    each(&ALL, &LOCAL_ALL, |sink| sink.on_call(call));
}

/// Hands a sampled `call` to every span sink.
pub(crate) fn dispatch_sampled(call: &FinishedCall<'_>) {
    each(&SAMPLED, &LOCAL_SAMPLED, |sink| sink.on_call(call));
}

/// Hands a sampled request's span to every span sink.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn dispatch_request(request: &FinishedRequest<'_>) {
    if any_sampled() {
        each(&SAMPLED, &LOCAL_SAMPLED, |sink| sink.on_request(request));
    }
}

/// Hands `feedback` to every sink.
pub(crate) fn feedback(feedback: &Feedback) {
    if any() {
        each(&ALL, &LOCAL_ALL, |sink| sink.on_feedback(feedback));
    }
}
