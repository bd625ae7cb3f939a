//! The per-call guards that the tracking macros' generated code drives.
//!
//! A call is: resolve the label values to a `&'static` bundle of handles
//! ([`site`]), start a [`Call`] (in-flight gauge up, clock started), run the
//! body, [`finish`](Call::finish) with the outcome read from the return value,
//! and drop. The guard records on drop whatever `finish` did not see, so a
//! panic is recorded as `panic` and a future dropped before completion as
//! `cancelled`, and the gauge always comes back down. Nothing here allocates,
//! locks or blocks on the path of a call whose labels are already known, and
//! nothing here panics.

pub(crate) mod domain;
pub(crate) mod future;
pub(crate) mod model;
pub(crate) mod outcome;
pub(crate) mod site;
pub(crate) mod spans;
pub(crate) mod stream;

use std::fmt;
use std::mem::ManuallyDrop;
use std::num::NonZeroU64;
use std::time::{Duration, SystemTime};

use tracing::Span;

use crate::clock::clock;
use crate::metrics::{DomainHandles, Entry, Writer};
use crate::model::{CallId, Usage};
use crate::trace::{CallTrace, SpanContext};
use site::Site;

/// How a tracked call ended: the `status` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Returned a non-`Result` value, or `Ok`.
    Success,
    /// Returned `Err`.
    Failure,
    /// The body panicked; the panic continued unchanged.
    Panic,
    /// An async call was dropped before it finished.
    Cancelled,
}

impl Status {
    /// Every status, in the order of [`Status::index`].
    pub const ALL: [Status; 4] = [
        Status::Success,
        Status::Failure,
        Status::Panic,
        Status::Cancelled,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Panic => "panic",
            Status::Cancelled => "cancelled",
        }
    }

    /// Position in [`Status::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the return value says about the call.
#[derive(Clone, Copy)]
pub enum Outcome<'a> {
    /// Not a `Result`, or `Ok`.
    Success,
    /// `Err`, with the error's `Display` when it has one, and the error's
    /// type name.
    Failure(Option<&'a dyn fmt::Display>, &'static str),
}

/// A finished call, handed to the call site's log function so the closing
/// event carries the user's module as its target.
pub struct Finished<'a> {
    /// How the call ended.
    pub status: Status,
    /// Wall time from start to finish.
    pub elapsed: Duration,
    /// The error's `Display`, for a failure whose error has one.
    pub error: Option<&'a dyn fmt::Display>,
}

impl Finished<'_> {
    /// `elapsed` in nanoseconds, saturating (ECS `event.duration`).
    pub fn duration_ns(&self) -> u64 {
        u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Emits the closing event of a call; generated per call site.
pub type LogFn = fn(&Finished<'_>);

/// The label set of a call: its values and its metrics.
pub(crate) type LabelSet = Entry<DomainHandles>;

/// A call whose labels are resolved but which has not started yet: the state
/// of a returned future before its first poll.
pub struct Prepared {
    site: &'static Site<DomainHandles>,
    set: &'static LabelSet,
    /// `None` when INFO spans are off: nothing to move, enter or drop.
    /// Boxed, so that the call's value moves as one word (see `Call`).
    span: Option<Box<Span>>,
    /// A model call's `provider` (not a metric label).
    provider: Option<&'static str>,
}

impl Prepared {
    /// A call at `site` whose labels resolved to `set`; `span` carries
    /// them for logs.
    #[inline(always)]
    pub fn new(
        site: &'static Site<DomainHandles>,
        set: &'static LabelSet,
        span: Option<Span>,
    ) -> Self {
        Prepared {
            site,
            set,
            span: span.map(Box::new),
            provider: None,
        }
    }

    /// Gives a model call its `provider` (`#[track_model(…, provider = …)]`),
    /// for its span (`gen_ai.provider.name`) and its MLflow run (tag
    /// `provider`); never a metric label. Distinct values are kept once
    /// each, bounded like a label's (`HYPERKIT_MAX_LABEL_VALUES`, then
    /// `__overflow__`).
    #[inline]
    pub fn with_provider(mut self, provider: &str) -> Self {
        self.provider = Some(crate::model::provider::intern(provider));
        self
    }

    /// Counts the call as started and starts the clock, for a call that
    /// may finish on another thread (a future).
    #[inline(always)]
    pub fn start(self) -> Call {
        let handles = &self.set.handles;
        if handles.counts_in_flight() {
            handles.cells.start();
        }
        self.begin(None)
    }

    /// [`start`](Self::start) for a call that finishes on this thread (a
    /// synchronous body): the thread's counters are found once, not twice.
    #[inline(always)]
    pub fn start_here(self) -> Call {
        let handles = &self.set.handles;
        let here = handles.cells.start_here(handles.counts_in_flight());
        self.begin(Some(here))
    }

    #[inline(always)]
    fn begin(self, here: Option<Writer<'static>>) -> Call {
        let handles = &self.set.handles;
        let id = if handles.model.is_some() {
            model::next_call_id()
        } else {
            None
        };
        // One load when trace context is off.
        let trace = if crate::trace::enabled() {
            Some(crate::trace::start_span())
        } else {
            None
        };
        Call {
            site: self.site,
            set: self.set,
            span: ManuallyDrop::new(self.span),
            provider: self.provider,
            id,
            trace: ManuallyDrop::new(trace),
            here,
            start: clock().now(),
            first: None,
            done: false,
        }
    }
}

/// A running call. Records on [`finish`](Call::finish), or on drop as
/// `panic` (when unwinding) or `cancelled`.
#[must_use = "a call records when it is finished or dropped"]
pub struct Call {
    site: &'static Site<DomainHandles>,
    set: &'static LabelSet,
    /// Boxed: a `Span` is five words, which the moves of a call (into its
    /// `Prepared`, into the `Call`) copy 16 bytes at a time from where its
    /// words were written 8 at a time, and each such load waits for the
    /// stores before it (a failed store-to-load forward, about 4 ns a
    /// copy); one word moves as it was written. Only a call with INFO spans
    /// on, which costs a microsecond in its subscriber, allocates.
    /// Dropped by `Drop for Call` (see there).
    span: ManuallyDrop<Option<Box<Span>>>,
    provider: Option<&'static str>,
    /// A model call's sequence number (its id with `set`).
    id: Option<NonZeroU64>,
    /// The call's span in its trace, when trace context is on. Dropped by
    /// `Drop for Call`.
    trace: ManuallyDrop<Option<CallTrace>>,
    /// The counters of the thread the call started on, for a call that
    /// finishes there ([`Prepared::start_here`]); `None` for a future.
    here: Option<Writer<'static>>,
    /// The clock's ticks at the start.
    start: u64,
    /// Time to the first item, for a streamed call that has one.
    first: Option<Duration>,
    done: bool,
}

impl Call {
    /// The call's span (a disabled one when spans are off), to enter
    /// around the body.
    #[inline(always)]
    pub fn span(&self) -> Span {
        self.span.as_deref().cloned().unwrap_or_else(Span::none)
    }

    /// The call's id (model calls only).
    #[inline(always)]
    pub fn id(&self) -> Option<CallId> {
        self.id.map(|seq| CallId::new(seq, self.set))
    }

    /// The call's trace context (`None` while trace context is off).
    pub fn trace_context(&self) -> Option<SpanContext> {
        self.trace.as_ref().and_then(CallTrace::context)
    }

    /// What an async body needs to make the call current on each poll: its
    /// id and its trace context.
    #[inline(always)]
    pub fn current(&self) -> Current {
        Current {
            id: self.id(),
            trace: (*self.trace).clone(),
        }
    }

    /// Enters the call's span and makes it the current call of this thread
    /// (see [`current_call_id`](crate::model::current_call_id)) and its
    /// trace context the current one until the guard drops.
    #[inline(always)]
    pub fn enter(&self) -> Entered<'_> {
        // A call with nothing to enter (no span, no id, no trace) makes a
        // guard with nothing to test when it drops.
        if self.span.is_none() && self.id.is_none() && self.trace.is_none() {
            return Entered {
                parts: ManuallyDrop::new(None),
            };
        }
        Entered {
            parts: ManuallyDrop::new(Some(EnteredParts {
                _span: self.span.as_deref().map(Span::enter),
                _call: self.id().map(crate::model::CurrentCall::enter),
                _trace: self.trace.as_ref().map(CallTrace::enter),
            })),
        }
    }

    /// Records a streamed call's first item: its time since the start, in
    /// `hyperkit_model_time_to_first_token_seconds` (model calls) and in
    /// the finished call's record. Only the first time counts.
    #[inline]
    pub fn first_item(&mut self) {
        if self.first.is_some() {
            return;
        }
        let clock = clock();
        let elapsed = Duration::from_nanos(clock.nanos(self.start, clock.now()));
        self.first = Some(elapsed);
        if let Some(m) = &self.set.handles.model {
            m.time_to_first_token.observe(elapsed);
        }
    }

    /// Records the call as finished with `outcome`.
    #[inline(always)]
    pub fn finish(&mut self, outcome: Outcome<'_>) {
        self.finish_with_usage(outcome, None);
    }

    /// Records a model call as finished with `outcome` and the token usage
    /// and acceptance read from its output.
    #[inline(always)]
    pub fn finish_with_usage(&mut self, outcome: Outcome<'_>, usage: Option<Usage>) {
        let cost = usage
            .as_ref()
            .and_then(|usage| model::record_usage(&self.set.handles, usage));
        let (status, error, error_type) = match outcome {
            Outcome::Success => (Status::Success, None, None),
            Outcome::Failure(e, ty) => (Status::Failure, e, Some(ty)),
        };
        self.record(status, error, usage, cost, error_type);
    }

    #[inline(always)]
    fn record(
        &mut self,
        status: Status,
        error: Option<&dyn fmt::Display>,
        usage: Option<Usage>,
        cost_picos: Option<u64>,
        error_type: Option<&'static str>,
    ) {
        self.done = true;
        let clock = clock();
        let ns = clock.nanos(self.start, clock.now());
        let handles = &self.set.handles;
        match self.here {
            Some(here) => handles.cells.finish_with(here, status.index(), ns),
            None => handles.cells.finish(status.index(), ns),
        }
        // One load each when there is no sink, nothing logs (no subscriber,
        // or one that takes no ERROR), the call is not sampled and no score
        // waits for it: then nothing more is done, and what would be is out
        // of line, so the call's own code stays small.
        let sampled = self.trace.as_ref().is_some_and(CallTrace::is_sampled);
        let scored = self.id.is_some() && crate::model::pending::any();
        if sampled
            || scored
            || crate::calls::any()
            || tracing::level_enabled!(tracing::Level::ERROR)
        {
            self.report(status, ns, error, usage, cost_picos, error_type);
        }
    }

    /// What [`record`](Self::record) does beyond the metrics: the
    /// finished-call record to the sinks, the exemplar and the span of a
    /// sampled call, the closing log event.
    #[inline(never)]
    fn report(
        &self,
        status: Status,
        ns: u64,
        error: Option<&dyn fmt::Display>,
        usage: Option<Usage>,
        cost_picos: Option<u64>,
        error_type: Option<&'static str>,
    ) {
        let handles = &self.set.handles;
        let sampled = self.trace.as_ref().is_some_and(CallTrace::is_sampled);
        // Scores recorded inside the call wait for its span (one load when
        // none does).
        let scores = match self.id() {
            Some(id) => crate::model::pending::take(id.seq()),
            None => Vec::new(),
        };
        let to_sinks = crate::calls::any();
        let to_spans = sampled && crate::calls::any_sampled();
        let to_logs = tracing::level_enabled!(tracing::Level::ERROR);
        // `to_spans` implies `sampled`.
        if !(to_sinks || to_logs || sampled) {
            return;
        }
        let elapsed = Duration::from_nanos(ns);
        let end = (to_sinks || sampled).then(SystemTime::now);
        if sampled && let (Some(trace), Some(end)) = (&*self.trace, end) {
            handles.record_exemplar(trace.frame(), status.index(), ns, end);
        }
        if let Some(end) = end.filter(|_| to_sinks || to_spans) {
            let spec = handles.spec();
            let context = self.trace_context();
            let call = crate::calls::FinishedCall {
                domain: spec.name(),
                function: self.site.function,
                module: self.site.module,
                status,
                end,
                duration: elapsed,
                error,
                error_type,
                usage,
                time_to_first_token: self.first,
                cost_usd: cost_picos.map(crate::prices::usd),
                call_id: self.id(),
                trace: context.as_ref(),
                parent_span_id: self.trace.as_ref().and_then(CallTrace::parent),
                scores: &scores,
                provider: self.provider,
                label_names: spec.labels(),
                label_values: self.set.value_slice(),
            };
            if to_sinks {
                crate::calls::dispatch(&call);
            }
            if to_spans {
                crate::calls::dispatch_sampled(&call);
            }
        }
        if to_logs {
            let _entered = self.span.as_deref().map(Span::enter);
            // The closing line carries the call's own ids.
            let _trace = self.trace.as_ref().map(CallTrace::enter);
            (self.site.log)(&Finished {
                status,
                elapsed,
                error,
            });
        }
    }
}

impl Call {
    /// Records a call dropped before it was finished: a panic or a
    /// cancellation. Kept out of line, so the common drop (a finished call)
    /// stays a flag test.
    #[cold]
    #[inline(never)]
    fn record_unfinished(&mut self) {
        let status = if std::thread::panicking() {
            Status::Panic
        } else {
            Status::Cancelled
        };
        self.record(status, None, None, None, None);
    }

    /// Records a call dropped before it finished whose output so far is
    /// known (a stream the consumer dropped): `cancelled` (or `panic`),
    /// with the tokens streamed until then and their cost.
    #[cold]
    #[inline(never)]
    pub(crate) fn abandon(&mut self, usage: Option<Usage>) {
        let status = if std::thread::panicking() {
            Status::Panic
        } else {
            Status::Cancelled
        };
        let cost = usage
            .as_ref()
            .and_then(|usage| model::record_usage(&self.set.handles, usage));
        self.record(status, None, usage, cost, None);
    }
}

impl Drop for Call {
    /// A finished call without a span or a trace (the common case) drops
    /// with three flag tests inline; `span` and `trace` are `ManuallyDrop`
    /// so that their drop glue, which the compiler keeps out of line, is
    /// called only when one of them holds something.
    #[inline(always)]
    fn drop(&mut self) {
        if !self.done {
            self.record_unfinished();
        }
        if self.span.is_some() || self.trace.is_some() {
            self.release();
        }
    }
}

impl Call {
    /// Drops the span and the trace where they are (an assignment drops
    /// the old value in place; `take` would copy it out first).
    #[inline(never)]
    fn release(&mut self) {
        *self.span = None;
        *self.trace = None;
    }
}

/// The guard of [`Call::enter`].
pub struct Entered<'a> {
    // `ManuallyDrop`, dropped by `Drop for Entered`: as in `Call`, nothing
    // out of line runs for a call that entered nothing.
    parts: ManuallyDrop<Option<EnteredParts<'a>>>,
}

/// What a call entered, left in field order.
struct EnteredParts<'a> {
    _span: Option<tracing::span::Entered<'a>>,
    _call: Option<crate::model::CurrentCall>,
    _trace: Option<crate::trace::Scope>,
}

impl Drop for Entered<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.parts.is_some() {
            self.leave();
        }
    }
}

impl Entered<'_> {
    /// Leaves what was entered, where it is (as `Call::release`).
    #[inline(never)]
    fn leave(&mut self) {
        *self.parts = None;
    }
}

/// What makes a call current while its async body is polled
/// ([`Call::current`]).
#[derive(Clone)]
pub struct Current {
    pub(crate) id: Option<CallId>,
    pub(crate) trace: Option<CallTrace>,
}

/// Runs a synchronous body as a `FnOnce`, so that `return` and `?` in it end
/// the body, not the function, and captured references keep their lifetimes.
#[inline(always)]
pub fn call<R>(body: impl FnOnce() -> R) -> R {
    body()
}
