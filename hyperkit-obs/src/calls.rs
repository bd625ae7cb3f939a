//! The one thing sinks receive from a tracked call: a [`FinishedCall`],
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
    /// What a model call cost in USD, when its usage is known and its
    /// model has a price ([`PriceTable`](crate::model::PriceTable)).
    pub cost_usd: Option<f64>,
    /// The id of a model call.
    pub call_id: Option<CallId>,
    pub(crate) label_names: &'static [&'static str],
    pub(crate) label_values: &'a [Box<str>],
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
            .field("error", &self.error.map(ToString::to_string))
            .finish_non_exhaustive()
    }
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
}

/// Receives every tracked call that finishes, on the caller's thread.
pub trait CallSink: Send + Sync + 'static {
    /// One call finished. Keep it short and never block.
    fn on_call(&self, call: &FinishedCall<'_>);

    /// Something was learnt about a call after it returned.
    fn on_feedback(&self, _feedback: &Feedback) {}
}

impl<S: CallSink> CallSink for Arc<S> {
    fn on_call(&self, call: &FinishedCall<'_>) {
        (**self).on_call(call);
    }
    fn on_feedback(&self, feedback: &Feedback) {
        (**self).on_feedback(feedback);
    }
}

type Sinks = Arc<[(u64, Arc<dyn CallSink>)]>;

/// Whether any sink is registered: the one load a call pays without sinks.
static ANY: AtomicBool = AtomicBool::new(false);
/// Bumped on every change, so each thread knows its copy is stale.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static SINKS: RwLock<Option<Sinks>> = RwLock::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's copy of the sinks: reading it takes no lock and
    /// touches no shared cache line.
    static LOCAL: RefCell<(u64, Option<Sinks>)> = const { RefCell::new((u64::MAX, None)) };
}

/// Keeps a sink registered; dropping it removes the sink.
#[must_use = "dropping the registration removes the sink"]
#[derive(Debug)]
pub struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        change(|sinks| sinks.retain(|(id, _)| *id != self.id));
    }
}

/// Adds `sink`: every call that finishes from now on is handed to it until
/// the registration is dropped.
pub fn register(sink: impl CallSink) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let sink: Arc<dyn CallSink> = Arc::new(sink);
    change(|sinks| sinks.push((id, sink)));
    Registration { id }
}

fn change(edit: impl FnOnce(&mut Vec<(u64, Arc<dyn CallSink>)>)) {
    let mut guard = SINKS.write().unwrap_or_else(PoisonError::into_inner);
    let mut sinks: Vec<(u64, Arc<dyn CallSink>)> =
        guard.as_deref().map(<[_]>::to_vec).unwrap_or_default();
    edit(&mut sinks);
    ANY.store(!sinks.is_empty(), Ordering::Release);
    *guard = (!sinks.is_empty()).then(|| Sinks::from(sinks));
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Whether a finished call has anyone to go to.
#[inline]
pub(crate) fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

/// Hands each registered sink to `f`, from this thread's copy of the list
/// (no lock, no reference count touched).
fn each(f: impl Fn(&dyn CallSink)) {
    let call = |sinks: &Sinks| {
        for (_, sink) in sinks.iter() {
            // A sink's panic must not reach the caller, nor skip the others.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&**sink)));
        }
    };
    let current = || SINKS.read().unwrap_or_else(PoisonError::into_inner).clone();
    let generation = GENERATION.load(Ordering::Acquire);
    LOCAL.with(|local| {
        if local.borrow().0 != generation {
            match local.try_borrow_mut() {
                Ok(mut copy) => *copy = (generation, current()),
                Err(_) => {
                    // A sink made a tracked call while the list changed: the
                    // outer call still reads this thread's copy.
                    if let Some(sinks) = current() {
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
}

/// Hands `call` to every sink.
pub(crate) fn dispatch(call: &FinishedCall<'_>) {
    each(|sink| sink.on_call(call));
}

/// Hands `feedback` to every sink.
pub(crate) fn feedback(feedback: &Feedback) {
    if any() {
        each(|sink| sink.on_feedback(feedback));
    }
}
