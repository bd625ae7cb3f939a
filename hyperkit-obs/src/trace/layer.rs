//! [`ContextLayer`]: lets `tracing` spans carry a trace context, so a
//! tracked call inside a span that has one joins its trace, even when the
//! span is entered on another task (`fut.instrument(span)` across
//! `tokio::spawn`).
//!
//! A span gets a context when it is made while one is current (inside a
//! tracked call or a traced request), or explicitly through
//! [`SpanExt::set_trace_context`]; entering it makes that context current
//! on the thread until it is exited. The spans of tracked calls are left
//! alone (a call manages its own context). Spans without a context cost a
//! thread-local read when made and one relaxed load when entered; the layer
//! never allocates for them, never blocks and never panics.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::span::{Attributes, Id};
use tracing::{Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{Scope, SpanContext, current};
use crate::track::spans::is_tracked_span;

/// The `tracing_subscriber` layer that carries trace context on `tracing`
/// spans; [`init()`](crate::init) installs it.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry().with(hyperkit_obs::trace::ContextLayer);
/// # drop(subscriber);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextLayer;

/// The context a span carries.
struct SpanTrace(SpanContext);

/// Spans alive that carry a context: while there are none, entering a span
/// costs one load.
static CARRIERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The spans entered on this thread that made their context current,
    /// each with the scope that restores what it replaced.
    static ENTERED: RefCell<Vec<(Id, Scope)>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for ContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let inherited = current().or_else(|| {
            let parent = ctx.span(attrs.parent()?)?;
            let ext = parent.extensions();
            ext.get::<SpanTrace>().map(|t| t.0.clone())
        });
        let Some(context) = inherited else { return };
        if is_tracked_span(attrs.metadata()) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanTrace(context));
            CARRIERS.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if CARRIERS.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let Some(context) = span.extensions().get::<SpanTrace>().map(|t| t.0.clone()) else {
            return;
        };
        let scope = Scope::enter_context(&context);
        let _ = ENTERED.try_with(|e| {
            if let Ok(mut e) = e.try_borrow_mut() {
                e.push((id.clone(), scope));
            }
        });
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let _ = ENTERED.try_with(|e| {
            let Ok(mut e) = e.try_borrow_mut() else {
                return;
            };
            if e.last().is_some_and(|(top, _)| top == id) {
                // Dropping the scope restores what the span replaced.
                e.pop();
            }
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && span.extensions().get::<SpanTrace>().is_some()
        {
            CARRIERS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Trace context on a `tracing` span (as tracing-opentelemetry's
/// `OpenTelemetrySpanExt`). Needs a subscriber built on
/// `tracing_subscriber::Registry` with [`ContextLayer`] (what
/// [`init()`](crate::init) installs); without one it does nothing.
///
/// ```
/// use hyperkit_obs::trace::{self, SpanExt};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry().with(trace::ContextLayer);
/// tracing::subscriber::with_default(subscriber, || {
///     // A message from a queue carries the trace of the request that sent it.
///     let parent = trace::parse_traceparent(
///         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
///     let span = tracing::info_span!("consume");
///     span.set_trace_context(parent.clone());
///     span.in_scope(|| assert_eq!(trace::current(), Some(parent)));
///     assert!(trace::current().is_none());
/// });
/// ```
pub trait SpanExt {
    /// Gives the span `context`: entering it makes `context` current.
    fn set_trace_context(&self, context: SpanContext);

    /// The context the span carries, if any.
    fn trace_context(&self) -> Option<SpanContext>;
}

impl SpanExt for Span {
    fn set_trace_context(&self, context: SpanContext) {
        self.with_subscriber(|(id, dispatch)| {
            let Some(registry) = dispatch.downcast_ref::<Registry>() else {
                return;
            };
            if let Some(span) = registry.span(id)
                && span.extensions_mut().replace(SpanTrace(context)).is_none()
            {
                CARRIERS.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    fn trace_context(&self) -> Option<SpanContext> {
        self.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let ext = span.extensions();
            ext.get::<SpanTrace>().map(|t| t.0.clone())
        })
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_span_made_in_a_context_carries_it_to_wherever_it_is_entered() {
        let subscriber = tracing_subscriber::registry().with(ContextLayer);
        tracing::subscriber::with_default(subscriber, || {
            let parent = crate::trace::parse_traceparent(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .unwrap();
            let span = {
                let _g = parent.clone().attach();
                tracing::info_span!("spawned")
            };
            assert!(current().is_none());
            assert_eq!(span.trace_context(), Some(parent.clone()));
            let child = span.in_scope(|| {
                let inner = tracing::info_span!("inner");
                inner.in_scope(current)
            });
            assert_eq!(child, Some(parent));
            assert!(current().is_none(), "exit restores");
            let plain = tracing::info_span!("no context");
            assert!(plain.trace_context().is_none());
        });
    }
}
