//! Tracking a returned future: for functions that return `impl Future` or a
//! boxed future (`#[async_trait]`), the call starts at the first poll and
//! finishes when the future completes; dropping it earlier records
//! `cancelled`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{Call, Current, Prepared};

pin_project! {
    /// A future that drives a [`Call`] around an inner future. It is `Send`,
    /// `Sync` and `Unpin` exactly when the inner future is.
    pub struct Tracked<F, Fin> {
        #[pin]
        inner: F,
        prepared: Option<Prepared>,
        call: Option<Call>,
        finish: Option<Fin>,
    }
}

impl<F, Fin> Tracked<F, Fin>
where
    F: Future,
    Fin: FnOnce(&mut Call, &F::Output),
{
    /// Tracks `inner`; `finish` records the outcome from its output.
    #[inline]
    pub fn new(prepared: Prepared, inner: F, finish: Fin) -> Self {
        Tracked {
            inner,
            prepared: Some(prepared),
            call: None,
            finish: Some(finish),
        }
    }
}

impl<F, Fin> Future for Tracked<F, Fin>
where
    F: Future,
    Fin: FnOnce(&mut Call, &F::Output),
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some(prepared) = this.prepared.take() {
            *this.call = Some(prepared.start());
        }
        let Some(call) = this.call.as_mut() else {
            // Polled after completion: the inner future decides what happens.
            return this.inner.poll(cx);
        };
        let poll = {
            let _entered = call.enter();
            this.inner.poll(cx)
        };
        if let Poll::Ready(out) = &poll {
            if let Some(finish) = this.finish.take() {
                finish(call, out);
            }
            *this.call = None;
        }
        poll
    }
}

pin_project! {
    /// The body of a tracked `async fn`: a model call is the current call of
    /// the thread (see [`current_call_id`](crate::model::current_call_id))
    /// and the call's trace context the current context while the body is
    /// polled; a call with neither only checks that. `Send` and `Sync`
    /// exactly when the body is.
    pub struct InCall<F> {
        current: Current,
        #[pin]
        inner: F,
    }
}

impl<F: Future> InCall<F> {
    /// Wraps `inner`.
    #[inline]
    pub fn new(current: Current, inner: F) -> Self {
        InCall { current, inner }
    }
}

impl<F: Future> Future for InCall<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = this.current.id.map(crate::model::CurrentCall::enter);
        let _trace = this
            .current
            .trace
            .as_ref()
            .map(crate::trace::CallTrace::enter);
        this.inner.poll(cx)
    }
}
