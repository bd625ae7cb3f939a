//! Tracking a returned stream: for `#[track_model]` functions that return a
//! stream of chunks (or an `async fn` that returns `Result<stream, E>`),
//! the call lasts until the stream ends. The first item records the time to
//! first token; each item adds its tokens ([`ModelChunk`]); the end records
//! `success`, the first `Err` item `failure`, and a drop before the end
//! `cancelled` (with the tokens streamed so far). Items pass through
//! untouched, in order; the wrapper allocates nothing per item and never
//! panics.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;

use super::{Call, Outcome};
use crate::model::{ModelChunk, Usage};

/// What one item says: whether it is a failure, and its tokens.
pub struct Step<'a> {
    outcome: Outcome<'a>,
    chunk: Chunk,
}

impl<'a> Step<'a> {
    /// An item's outcome (read as the macros read a return value) and its
    /// tokens ([`chunk`]).
    #[inline(always)]
    pub fn new(outcome: Outcome<'a>, chunk: Chunk) -> Self {
        Step { outcome, chunk }
    }
}

/// The tokens of one item, read from its [`ModelChunk`].
#[derive(Clone, Copy, Default)]
pub struct Chunk {
    output_tokens: Option<u64>,
    final_usage: Option<Usage>,
}

/// An item type a tracked model stream can carry: a [`ModelChunk`], or a
/// `Result` whose `Ok` type is one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a model stream chunk: implement `hyperkit_obs::ModelChunk` for it",
    label = "the items of a `#[track_model]` stream must implement `ModelChunk`",
    note = "a stream's items may be `T` or `Result<T, E>` with `T: hyperkit_obs::ModelChunk`; it reports each item's output tokens and the provider's final usage"
)]
pub trait StreamItem {
    /// The item's tokens (nothing for an `Err`).
    fn __hk_chunk(&self) -> Chunk;
}

impl<T: ModelChunk> StreamItem for T {
    #[inline(always)]
    fn __hk_chunk(&self) -> Chunk {
        Chunk {
            output_tokens: self.output_tokens(),
            final_usage: self.final_usage(),
        }
    }
}

impl<T: ModelChunk, E> StreamItem for Result<T, E> {
    #[inline(always)]
    fn __hk_chunk(&self) -> Chunk {
        match self {
            Ok(chunk) => chunk.__hk_chunk(),
            Err(_) => Chunk::default(),
        }
    }
}

/// The tokens of `item`. Generated code calls it where the user wrote the
/// item type, so a type without [`ModelChunk`] is reported there.
#[inline(always)]
pub fn chunk<T: StreamItem + ?Sized>(item: &T) -> Chunk {
    item.__hk_chunk()
}

/// The tokens of a stream so far.
#[derive(Default)]
struct Summed {
    output: u64,
    any_output: bool,
    last: Option<Usage>,
}

impl Summed {
    #[inline(always)]
    fn add(&mut self, chunk: Chunk) {
        if let Some(n) = chunk.output_tokens {
            self.output = self.output.saturating_add(n);
            self.any_output = true;
        }
        if chunk.final_usage.is_some() {
            self.last = chunk.final_usage;
        }
    }

    /// The call's usage: the provider's final count where it gave one, the
    /// sum of the items' output tokens otherwise; `None` when nothing was
    /// reported.
    fn total(&self) -> Option<Usage> {
        let summed = self.any_output.then_some(self.output);
        match self.last {
            None => summed.map(|n| Usage {
                output_tokens: Some(n),
                ..Usage::default()
            }),
            Some(last) => Some(Usage {
                output_tokens: last.output_tokens.or(summed),
                ..last
            }),
        }
    }
}

pin_project! {
    /// A stream that drives a running [`Call`] around an inner stream until
    /// it ends. `Send`, `Sync` and `Unpin` exactly when the inner stream is
    /// (the reader is a closure that captures nothing).
    pub struct TrackedStream<S, R> {
        #[pin]
        inner: S,
        call: Option<Call>,
        read: R,
        summed: Summed,
    }

    impl<S, R> PinnedDrop for TrackedStream<S, R> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut call) = this.call.take() {
                call.abandon(this.summed.total());
            }
        }
    }
}

impl<S, R> TrackedStream<S, R>
where
    S: Stream,
    R: for<'a> FnMut(&'a S::Item) -> Step<'a>,
{
    /// Tracks `inner` as the rest of `call`, which has started; `read`
    /// reads each item's outcome and tokens.
    #[inline]
    pub fn new(call: Call, inner: S, read: R) -> Self {
        TrackedStream {
            inner,
            call: Some(call),
            read,
            summed: Summed::default(),
        }
    }
}

impl<S, R> Stream for TrackedStream<S, R>
where
    S: Stream,
    R: for<'a> FnMut(&'a S::Item) -> Step<'a>,
{
    type Item = S::Item;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let Some(call) = this.call.as_mut() else {
            // Finished (ended or failed): the inner stream decides the rest.
            return this.inner.poll_next(cx);
        };
        let poll = {
            let _entered = call.enter();
            this.inner.poll_next(cx)
        };
        match &poll {
            Poll::Pending => {}
            Poll::Ready(Some(item)) => {
                call.first_item();
                let step = (this.read)(item);
                this.summed.add(step.chunk);
                if let Outcome::Failure(..) = step.outcome {
                    call.finish_with_usage(step.outcome, this.summed.total());
                    *this.call = None;
                }
            }
            Poll::Ready(None) => {
                call.finish_with_usage(Outcome::Success, this.summed.total());
                *this.call = None;
            }
        }
        poll
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(output: Option<u64>, last: Option<Usage>) -> Chunk {
        Chunk {
            output_tokens: output,
            final_usage: last,
        }
    }

    #[test]
    fn output_tokens_are_summed_unless_the_provider_reports_its_own() {
        let mut s = Summed::default();
        assert_eq!(s.total(), None, "nothing reported");
        s.add(chunk(Some(3), None));
        s.add(chunk(None, None));
        s.add(chunk(Some(4), None));
        assert_eq!(s.total().and_then(|u| u.output_tokens), Some(7));
        s.add(chunk(
            None,
            Some(Usage {
                input_tokens: Some(12),
                ..Usage::default()
            }),
        ));
        assert_eq!(
            s.total(),
            Some(Usage {
                input_tokens: Some(12),
                output_tokens: Some(7),
                ..Usage::default()
            }),
            "input from the final usage, output still summed"
        );
        s.add(chunk(
            Some(1),
            Some(Usage {
                input_tokens: Some(12),
                output_tokens: Some(9),
                ..Usage::default()
            }),
        ));
        assert_eq!(s.total().and_then(|u| u.output_tokens), Some(9));
    }
}
