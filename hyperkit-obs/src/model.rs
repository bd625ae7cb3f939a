//! What a model call's return value tells `#[track_model]`: token counts and
//! acceptance, through [`ModelOutput`]; and what calls cost
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
