//! What a model call's return value tells `#[track_model]`: token counts and
//! acceptance, through [`ModelOutput`]; what is learnt about a call later
//! ([`record_acceptance`], [`record_score`]); and what calls cost
//! ([`PriceTable`]).

pub use crate::prices::{
    BadPrice, MAX_PRICE_PER_MILLION, ModelPrice, PriceTable, PriceTableError, install_prices,
};

/// Implemented by the return type of a `#[track_model]` function (or the `Ok`
/// type of a `Result`) to report token usage and acceptance. Every method has
/// a default of "unknown", so implement only what the type knows.
///
/// ```
/// use hyperkit_obs::{track_model, ModelOutput};
///
/// struct Completion { text: String, prompt_tokens: u64, completion_tokens: u64 }
///
/// impl ModelOutput for Completion {
///     fn input_tokens(&self) -> Option<u64> { Some(self.prompt_tokens) }
///     fn output_tokens(&self) -> Option<u64> { Some(self.completion_tokens) }
/// }
///
/// #[track_model(model, task = "summarize")]
/// fn summarize(model: &str, text: &str) -> Result<Completion, std::io::Error> {
///     Ok(Completion { text: text[..4].to_owned(), prompt_tokens: 12, completion_tokens: 4 })
/// }
///
/// assert_eq!(summarize("small-1", "some long text").unwrap().text, "some");
/// ```
pub trait ModelOutput {
    /// Tokens sent to the model.
    fn input_tokens(&self) -> Option<u64> {
        None
    }
    /// Tokens the model produced.
    fn output_tokens(&self) -> Option<u64> {
        None
    }
    /// The part of [`input_tokens`](Self::input_tokens) the provider served
    /// from its prompt cache (OpenAI's `cached_tokens`), priced at the
    /// table's `cached_input` price when it has one. Anthropic reports
    /// cache reads apart from `input_tokens`: add them to both.
    fn cached_input_tokens(&self) -> Option<u64> {
        None
    }
    /// Whether the output was accepted, when that is known at return.
    fn accepted(&self) -> Option<bool> {
        None
    }
}

impl<T: ModelOutput + ?Sized> ModelOutput for &T {
    fn input_tokens(&self) -> Option<u64> {
        (**self).input_tokens()
    }
    fn output_tokens(&self) -> Option<u64> {
        (**self).output_tokens()
    }
    fn cached_input_tokens(&self) -> Option<u64> {
        (**self).cached_input_tokens()
    }
    fn accepted(&self) -> Option<bool> {
        (**self).accepted()
    }
}

impl<T: ModelOutput + ?Sized> ModelOutput for Box<T> {
    fn input_tokens(&self) -> Option<u64> {
        (**self).input_tokens()
    }
    fn output_tokens(&self) -> Option<u64> {
        (**self).output_tokens()
    }
    fn cached_input_tokens(&self) -> Option<u64> {
        (**self).cached_input_tokens()
    }
    fn accepted(&self) -> Option<bool> {
        (**self).accepted()
    }
}

/// Implemented by the item type of a stream a `#[track_model]` function
/// returns (or the `Ok` type of a `Result` item), to report the tokens each
/// item carries. The call's output tokens are the sum of
/// [`output_tokens`](Self::output_tokens) over the items, unless an item
/// reports the provider's own count with [`final_usage`](Self::final_usage)
/// (OpenAI's last chunk with `stream_options.include_usage`, Anthropic's
/// `message_delta`): that count wins, and its input tokens are the call's.
/// Every method has a default of "unknown".
///
/// ```
/// use futures_core::Stream;
/// use hyperkit_obs::{track_model, ModelChunk, model::Usage};
///
/// enum Chunk { Text(String), Done { prompt_tokens: u64, completion_tokens: u64 } }
///
/// impl ModelChunk for Chunk {
///     fn output_tokens(&self) -> Option<u64> {
///         match self { Chunk::Text(_) => Some(1), Chunk::Done { .. } => None }
///     }
///     fn final_usage(&self) -> Option<Usage> {
///         match self {
///             Chunk::Done { prompt_tokens, completion_tokens } => Some(Usage {
///                 input_tokens: Some(*prompt_tokens),
///                 output_tokens: Some(*completion_tokens),
///                 ..Usage::default()
///             }),
///             Chunk::Text(_) => None,
///         }
///     }
/// }
///
/// #[track_model(model, task = "chat")]
/// fn chat(model: &str, words: Vec<String>) -> impl Stream<Item = Result<Chunk, std::io::Error>> {
///     let n = words.len() as u64;
///     let mut chunks: Vec<_> = words.into_iter().map(|w| Ok(Chunk::Text(w))).collect();
///     chunks.push(Ok(Chunk::Done { prompt_tokens: 9, completion_tokens: n }));
///     futures_core_iter(chunks)
/// }
/// # fn futures_core_iter<T>(items: Vec<T>) -> impl Stream<Item = T> {
/// #     struct Iter<T>(std::vec::IntoIter<T>);
/// #     impl<T> Unpin for Iter<T> {}
/// #     impl<T> Stream for Iter<T> {
/// #         type Item = T;
/// #         fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>)
/// #             -> std::task::Poll<Option<T>> { std::task::Poll::Ready(self.0.next()) }
/// #     }
/// #     Iter(items.into_iter())
/// # }
/// let _tokens = chat("small-1", vec!["hello".into(), "world".into()]);
/// ```
pub trait ModelChunk {
    /// Output tokens this item carries (summed over the stream).
    fn output_tokens(&self) -> Option<u64> {
        None
    }
    /// The provider's usage for the whole call, on the item that carries
    /// it: its input, cached input and output tokens (the output count
    /// replaces the sum of [`output_tokens`](Self::output_tokens)) and
    /// acceptance. When several items report one, the last wins.
    fn final_usage(&self) -> Option<Usage> {
        None
    }
}

impl<T: ModelChunk + ?Sized> ModelChunk for &T {
    fn output_tokens(&self) -> Option<u64> {
        (**self).output_tokens()
    }
    fn final_usage(&self) -> Option<Usage> {
        (**self).final_usage()
    }
}

impl<T: ModelChunk + ?Sized> ModelChunk for Box<T> {
    fn output_tokens(&self) -> Option<u64> {
        (**self).output_tokens()
    }
    fn final_usage(&self) -> Option<Usage> {
        (**self).final_usage()
    }
}

/// Usage read from a [`ModelOutput`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens sent to the model.
    pub input_tokens: Option<u64>,
    /// Tokens the model produced.
    pub output_tokens: Option<u64>,
    /// The part of the input tokens served from the provider's cache.
    pub cached_input_tokens: Option<u64>,
    /// Whether the output was accepted.
    pub accepted: Option<bool>,
}

impl Usage {
    /// Reads the usage of `output`.
    pub fn of<T: ModelOutput + ?Sized>(output: &T) -> Self {
        Usage {
            input_tokens: output.input_tokens(),
            output_tokens: output.output_tokens(),
            cached_input_tokens: output.cached_input_tokens(),
            accepted: output.accepted(),
        }
    }
}

/// The output rate of a streamed call: its output tokens over the time from
/// its first item to its end (the rate the consumer saw tokens arrive,
/// without the wait for the first one). `None` without a first item or an
/// output count, or when the whole output came in the first item.
pub(crate) fn output_tokens_per_second(
    output_tokens: Option<u64>,
    duration: std::time::Duration,
    time_to_first_token: Option<std::time::Duration>,
) -> Option<f64> {
    let streaming = duration.checked_sub(time_to_first_token?)?;
    if streaming.is_zero() {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // token counts are far below 2^53
    Some(output_tokens? as f64 / streaming.as_secs_f64())
}

/// The id of one `#[track_model]` call, for recording its acceptance once it
/// is decided ([`record_acceptance`]). Read it inside the call with
/// [`current_call_id`] and keep it with the output.
///
/// `Display` gives the id the call's MLflow run carries in its
/// `hyperkit.call_id` tag: unique across processes.
#[derive(Clone, Copy)]
pub struct CallId {
    seq: std::num::NonZeroU64,
    set: &'static crate::track::LabelSet,
}

impl CallId {
    pub(crate) fn new(seq: std::num::NonZeroU64, set: &'static crate::track::LabelSet) -> Self {
        CallId { seq, set }
    }

    /// The call's sequence number in this process.
    pub fn seq(&self) -> u64 {
        self.seq.get()
    }

    /// The `model` label of the call.
    pub fn model(&self) -> &'static str {
        self.set.value(0)
    }

    /// The `task` label of the call.
    pub fn task(&self) -> &'static str {
        self.set.value(1)
    }
}

impl PartialEq for CallId {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for CallId {}

impl std::hash::Hash for CallId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.seq.hash(state);
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", process_key(), self.seq)
    }
}

impl std::fmt::Debug for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CallId({self}, model={}, task={})",
            self.model(),
            self.task()
        )
    }
}

/// A random key of this process, making call ids unique across processes.
pub(crate) fn process_key() -> u64 {
    static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KEY.get_or_init(crate::util::random_u64)
}

thread_local! {
    static CURRENT: std::cell::Cell<Option<CallId>> = const { std::cell::Cell::new(None) };
}

/// The id of the `#[track_model]` call whose body is running on this thread
/// (the innermost one), or `None` outside of one.
///
/// ```
/// use hyperkit_obs::{track_model, model::{current_call_id, record_acceptance, CallId}};
///
/// struct Draft { text: String, call: Option<CallId> }
///
/// #[track_model(model, task = "review")]
/// fn draft(model: &str) -> Draft {
///     Draft { text: "fn main() {}".into(), call: current_call_id() }
/// }
///
/// let d = draft("small-1");
/// let id = d.call.expect("inside a tracked call");
/// assert_eq!(id.model(), "small-1");
/// // Later, when a reviewer has decided:
/// record_acceptance(id, true);
/// assert!(current_call_id().is_none());
/// ```
pub fn current_call_id() -> Option<CallId> {
    CURRENT.with(std::cell::Cell::get)
}

/// Makes a call current on this thread until dropped.
pub struct CurrentCall {
    previous: Option<CallId>,
}

impl CurrentCall {
    /// Makes `id` the current call.
    #[inline]
    pub fn enter(id: CallId) -> Self {
        CurrentCall {
            previous: CURRENT.with(|c| c.replace(Some(id))),
        }
    }
}

impl Drop for CurrentCall {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Records that the output of call `id` was accepted or rejected, once that
/// is decided: counts it in `hyperkit_model_acceptance_total{model,task,accepted}`
/// and logs metric `accepted` (1 or 0) to the call's MLflow run. Never
/// blocks. Record each call once, and only when its output's
/// [`ModelOutput::accepted`] did not already say.
pub fn record_acceptance(id: CallId, accepted: bool) {
    crate::track::model::record_acceptance(&id.set.handles, accepted);
    crate::calls::feedback(&crate::calls::Feedback::Acceptance {
        call: id,
        accepted,
        at_ms: crate::util::unix_ms(),
    });
}

/// The metrics every model call's MLflow run may carry: a score cannot take
/// one of these names (it would overwrite the call's own figure, and
/// `hyperkit-obs mlflow compare` reads every other metric as a score).
pub const RESERVED_SCORE_NAMES: &[&str] = &[
    "latency_seconds",
    "input_tokens",
    "output_tokens",
    "accepted",
    "cost_usd",
    "time_to_first_token_seconds",
    "output_tokens_per_second",
];

/// Buckets of `hyperkit_model_score`: ten of width 0.1 over [0, 1]. A
/// judge's or an evaluation's score in [0, 1] reads to one decimal, which
/// is enough to tell a 0.7 model from a 0.9 one and for
/// `histogram_quantile`; each finer bucket would cost one more series per
/// model, task and score.
pub const SCORE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Why [`record_score`] recorded nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The name is not a valid MLflow metric key.
    #[error("score name {name:?} is not a valid MLflow metric key: {problem}")]
    InvalidName {
        /// The name given (at most 300 characters of it).
        name: String,
        /// What MLflow's rule says.
        problem: &'static str,
    },
    /// The name is one of [`RESERVED_SCORE_NAMES`].
    #[error(
        "score name {name:?} is a metric every model call's run carries: name the score after what it measures (`judge`, `relevance`)"
    )]
    Reserved {
        /// The name given.
        name: String,
    },
    /// The value is NaN or infinite.
    #[error("score {name:?} is {value}: a score is a finite number")]
    NotFinite {
        /// The score's name.
        name: String,
        /// The value given.
        value: f64,
    },
}

/// Records a quality score of call `id`'s output (a judge's grade, a test
/// pass rate, a similarity), at any time after the call has its id: inside
/// the call, or later. The score is
/// - logged to the call's MLflow run as metric `name` (before the run is
///   created, while it is queued or once it is delivered: it reaches the
///   run either way);
/// - counted in `hyperkit_model_score{model,task,score}`, a histogram with
///   [`SCORE_BUCKETS`], when it is within [0, 1]; a value outside that
///   range (a 1-to-5 rating) is counted in
///   `hyperkit_model_score_out_of_range_total{model,task,score}` instead,
///   and still goes to MLflow and the span. Distinct `score` label values
///   are bounded by the cardinality guard (`HYPERKIT_MAX_LABEL_VALUES`): a
///   new name beyond it is counted as `__overflow__`;
/// - with the call's trace sampled and the score recorded inside the call,
///   a `gen_ai.evaluation.result` event on the call's span
///   (`gen_ai.evaluation.name`, `gen_ai.evaluation.score.value`), as the
///   OpenTelemetry GenAI conventions name it. A span is exported when its
///   call ends, so a later score is not on it.
///
/// The name is checked against MLflow's metric key rules, and the value
/// must be finite, before anything is recorded. Never blocks.
///
/// ```
/// use hyperkit_obs::{track_model, model::{current_call_id, record_score, CallId, ScoreError}};
///
/// #[track_model(model, task = "summarize")]
/// fn summarize(model: &str, text: &str) -> (String, Option<CallId>) {
///     let id = current_call_id();
///     if let Some(id) = id {
///         record_score(id, "brevity", 0.9).unwrap(); // inside the call
///     }
///     (text[..4].to_owned(), id)
/// }
///
/// let (summary, id) = summarize("small-1", "some long text");
/// assert_eq!(summary, "some");
/// let id = id.expect("inside a tracked call");
/// record_score(id, "judge", 0.75)?; // later, once a judge has graded it
/// assert!(matches!(record_score(id, "judge/", 0.5), Err(ScoreError::InvalidName { .. })));
/// # Ok::<(), ScoreError>(())
/// ```
pub fn record_score(id: CallId, name: &str, value: f64) -> Result<(), ScoreError> {
    if let Some(problem) = crate::util::mlflow_key_problem(name) {
        return Err(ScoreError::InvalidName {
            name: name.chars().take(300).collect(),
            problem,
        });
    }
    if RESERVED_SCORE_NAMES.contains(&name) {
        return Err(ScoreError::Reserved {
            name: name.to_owned(),
        });
    }
    if !value.is_finite() {
        return Err(ScoreError::NotFinite {
            name: name.to_owned(),
            value,
        });
    }
    crate::track::model::record_score(id.model(), id.task(), name, value);
    let at_ms = crate::util::unix_ms();
    // Kept for the call's span only when a span sink will receive it.
    if crate::calls::any_sampled()
        && current_call_id() == Some(id)
        && crate::trace::current().is_some_and(|c| c.is_sampled())
    {
        pending::add(id.seq(), name, value, at_ms);
    }
    crate::calls::feedback(&crate::calls::Feedback::Score {
        call: id,
        name: name.to_owned(),
        value,
        at_ms,
    });
    Ok(())
}

/// A score recorded inside a call, kept for its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The score's name.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// Scores recorded inside sampled calls that have not finished yet, for
/// their spans: taken by the call when it ends. A call pays one relaxed
/// load for this while none is pending.
pub(crate) mod pending {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, PoisonError};

    use super::Score;

    /// The most scores kept for spans at once; beyond it a score still goes
    /// everywhere else.
    const MAX: usize = 4096;

    static ANY: AtomicBool = AtomicBool::new(false);
    static PENDING: Mutex<Vec<(u64, Score)>> = Mutex::new(Vec::new());

    pub(crate) fn add(seq: u64, name: &str, value: f64, at_ms: i64) {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() < MAX {
            pending.push((
                seq,
                Score {
                    name: name.to_owned(),
                    value,
                    at_ms,
                },
            ));
            ANY.store(true, Ordering::Release);
        }
    }

    /// Whether any score waits for its call's span.
    #[inline]
    pub(crate) fn any() -> bool {
        ANY.load(Ordering::Relaxed)
    }

    /// The scores of call `seq`, removed.
    #[inline]
    pub(crate) fn take(seq: u64) -> Vec<Score> {
        if !any() {
            return Vec::new();
        }
        take_slow(seq)
    }

    #[cold]
    fn take_slow(seq: u64) -> Vec<Score> {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        let mut taken = Vec::new();
        pending.retain(|(s, score)| {
            if *s == seq {
                taken.push(score.clone());
                false
            } else {
                true
            }
        });
        ANY.store(!pending.is_empty(), Ordering::Release);
        taken
    }
}

/// The distinct `provider` values of model calls, each kept once for the
/// life of the process: bounded like a label's values, a new one past
/// `HYPERKIT_MAX_LABEL_VALUES` is `__overflow__`.
pub(crate) mod provider {
    use std::collections::HashSet;
    use std::sync::{PoisonError, RwLock};

    static KNOWN: RwLock<Option<HashSet<&'static str>>> = RwLock::new(None);

    thread_local! {
        /// The provider this thread gave last: a call site gives the same
        /// one call after call, so most calls stop here (one comparison of
        /// a short string) instead of hashing under the lock.
        static LAST: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
    }

    /// `provider`, sanitised, as a string that lives as long as the process.
    #[inline]
    pub(crate) fn intern(provider: &str) -> &'static str {
        if let Ok(last) = LAST.try_with(std::cell::Cell::get)
            && !last.is_empty()
            && last == provider
        {
            return last;
        }
        let interned = intern_slow(provider);
        let _ = LAST.try_with(|l| l.set(interned));
        interned
    }

    #[cold]
    fn intern_slow(provider: &str) -> &'static str {
        let provider = &*crate::label::sanitize(provider);
        let found = |known: &Option<HashSet<&'static str>>| {
            known.as_ref().and_then(|k| k.get(provider).copied())
        };
        if let Some(p) = found(&KNOWN.read().unwrap_or_else(PoisonError::into_inner)) {
            return p;
        }
        let mut known = KNOWN.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = found(&known) {
            return p;
        }
        let set = known.get_or_insert_with(HashSet::new);
        if set.len() >= crate::metrics::max_label_values() {
            return crate::label::OVERFLOW_VALUE;
        }
        let p: &'static str = Box::leak(Box::from(provider));
        set.insert(p);
        p
    }
}
