//! The context current on each thread, and the span of a tracked call.
//!
//! What a call reads and writes on its path is a [`Frame`]: four aligned
//! words (trace id, span id, flags) in a `Cell` that needs no destructor,
//! so reading it, making a call's frame current and restoring the one
//! before are plain loads and stores, with no lock, no allocation, no
//! reference count. The vendors' `tracestate`, rare and shared, lives
//! beside it and is touched only by frames that carry one.

use std::cell::{Cell, RefCell};

use super::id::{self, SpanId, TraceFlags, TraceId};
use super::sampler;
use super::{SpanContext, TraceState};

const SAMPLED: u64 = 1;
const REMOTE: u64 = 1 << 8;
const HAS_STATE: u64 = 1 << 9;

/// A span's ids and flags, as the thread keeps them.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub(crate) struct Frame {
    trace_hi: u64,
    trace_lo: u64,
    /// 0: no span (nothing current).
    span: u64,
    meta: u64,
}

impl Frame {
    pub(crate) const NONE: Frame = Frame {
        trace_hi: 0,
        trace_lo: 0,
        span: 0,
        meta: 0,
    };

    fn new(trace_id: TraceId, span_id: SpanId, sampled: bool, remote: bool, state: bool) -> Frame {
        let t = trace_id.to_u128();
        Frame {
            trace_hi: (t >> 64) as u64,
            trace_lo: t as u64,
            span: span_id.to_u64(),
            meta: u64::from(sampled)
                | if remote { REMOTE } else { 0 }
                | if state { HAS_STATE } else { 0 },
        }
    }

    fn of(context: &SpanContext) -> Frame {
        Frame::new(
            context.trace_id(),
            context.span_id(),
            context.is_sampled(),
            context.is_remote(),
            !context.trace_state().is_empty(),
        )
    }

    #[inline]
    pub(crate) fn is_none(self) -> bool {
        self.span == 0
    }

    #[inline]
    pub(crate) fn is_sampled(self) -> bool {
        self.meta & SAMPLED != 0
    }

    #[inline]
    fn has_state(self) -> bool {
        self.meta & HAS_STATE != 0
    }

    /// The trace id (a frame that is not `NONE` has a valid one).
    #[inline]
    pub(crate) fn trace_id(self) -> Option<TraceId> {
        TraceId::from_u128((u128::from(self.trace_hi) << 64) | u128::from(self.trace_lo))
    }

    #[inline]
    pub(crate) fn span_id(self) -> Option<SpanId> {
        SpanId::from_u64(self.span)
    }

    /// The public form of this frame with `state`.
    pub(crate) fn context(self, state: &TraceState) -> Option<SpanContext> {
        let context = SpanContext::new(
            self.trace_id()?,
            self.span_id()?,
            if self.is_sampled() {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::NOT_SAMPLED
            },
            if self.has_state() {
                state.clone()
            } else {
                TraceState::NONE
            },
        );
        Some(if self.meta & REMOTE != 0 {
            SpanContext::remote(context.trace_id(), context.span_id(), context.flags())
                .with_trace_state(context.trace_state().clone())
        } else {
            context
        })
    }
}

thread_local! {
    static CURRENT: Cell<Frame> = const { Cell::new(Frame::NONE) };
    /// The trace state of the current frame, when it has one.
    static STATE: RefCell<TraceState> = const { RefCell::new(TraceState::NONE) };
}

#[inline]
fn current_frame() -> Frame {
    CURRENT.try_with(Cell::get).unwrap_or(Frame::NONE)
}

fn current_state() -> TraceState {
    STATE
        .try_with(|s| s.try_borrow().map(|s| s.clone()).unwrap_or_default())
        .unwrap_or_default()
}

/// The context current on this thread: the innermost tracked call whose
/// body runs here, or the request or context attached around it.
pub fn current() -> Option<SpanContext> {
    let frame = current_frame();
    if frame.is_none() {
        return None;
    }
    let state = if frame.has_state() {
        current_state()
    } else {
        TraceState::NONE
    };
    frame.context(&state)
}

/// A frame made current while a value lives, the one before restored when
/// it drops.
pub(crate) struct Scope {
    previous: Frame,
    /// The state replaced, when either frame has one.
    previous_state: Option<TraceState>,
}

impl Scope {
    #[inline]
    pub(crate) fn enter(frame: Frame, state: &TraceState) -> Scope {
        let previous = CURRENT
            .try_with(|c| c.replace(frame))
            .unwrap_or(Frame::NONE);
        let previous_state = if frame.has_state() || previous.has_state() {
            Some(swap_state(state.clone()))
        } else {
            None
        };
        Scope {
            previous,
            previous_state,
        }
    }

    /// Makes `context` current.
    pub(crate) fn enter_context(context: &SpanContext) -> Scope {
        Scope::enter(Frame::of(context), context.trace_state())
    }
}

#[cold]
fn swap_state(state: TraceState) -> TraceState {
    STATE
        .try_with(|s| match s.try_borrow_mut() {
            Ok(mut s) => std::mem::replace(&mut *s, state),
            Err(_) => TraceState::NONE,
        })
        .unwrap_or_default()
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.previous));
        if let Some(state) = self.previous_state.take() {
            swap_state(state);
        }
    }
}

/// Restores the context that was current before [`SpanContext::attach`].
#[must_use = "the context is current only while the guard lives"]
pub struct ContextGuard {
    _scope: Scope,
    /// The context is this thread's: the guard stays on it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ContextGuard {
    pub(crate) fn attach(context: &SpanContext) -> ContextGuard {
        ContextGuard {
            _scope: Scope::enter_context(context),
            _not_send: std::marker::PhantomData,
        }
    }
}

impl std::fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextGuard").finish_non_exhaustive()
    }
}

/// The span of one tracked call (or request): its frame, its parent's span
/// id (0 for a root) and its trace's state.
#[derive(Clone)]
pub(crate) struct CallTrace {
    frame: Frame,
    parent: u64,
    state: TraceState,
}

impl CallTrace {
    #[inline]
    pub(crate) fn is_sampled(&self) -> bool {
        self.frame.is_sampled()
    }

    #[inline]
    pub(crate) fn frame(&self) -> Frame {
        self.frame
    }

    /// The span's parent, if it has one.
    pub(crate) fn parent(&self) -> Option<SpanId> {
        SpanId::from_u64(self.parent)
    }

    /// The public form of the span's context.
    pub(crate) fn context(&self) -> Option<SpanContext> {
        self.frame.context(&self.state)
    }

    /// Makes the span current until the scope drops.
    #[inline]
    pub(crate) fn enter(&self) -> Scope {
        Scope::enter(self.frame, &self.state)
    }
}

/// The span of a new call here: a child of the current frame, or the root
/// of a new trace. Sampling follows the process's sampler.
#[inline(always)]
pub(crate) fn start_span() -> CallTrace {
    let parent = current_frame();
    let span_id = id::new_span_id();
    if parent.is_none() {
        return root(span_id);
    }
    let state = if parent.has_state() {
        current_state()
    } else {
        TraceState::NONE
    };
    child(parent, span_id, state)
}

#[inline(always)]
fn root(span_id: SpanId) -> CallTrace {
    let trace_id = id::new_trace_id();
    let sampled = sampler::decide(None, trace_id);
    CallTrace {
        frame: Frame::new(trace_id, span_id, sampled, false, false),
        parent: 0,
        state: TraceState::NONE,
    }
}

#[inline(always)]
fn child(parent: Frame, span_id: SpanId, state: TraceState) -> CallTrace {
    let Some(trace_id) = parent.trace_id() else {
        return root(span_id);
    };
    let sampled = sampler::decide(Some(parent.is_sampled()), trace_id);
    CallTrace {
        frame: Frame::new(trace_id, span_id, sampled, false, !state.is_empty()),
        parent: parent.span,
        state,
    }
}

/// The span of a new request under `parent` (a new trace when there is
/// none), as named by its `traceparent`.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn start_span_under(parent: Option<&SpanContext>) -> CallTrace {
    let span_id = id::new_span_id();
    match parent {
        Some(p) => child(Frame::of(p), span_id, p.trace_state().clone()),
        None => root(span_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(sampled: bool) -> SpanContext {
        SpanContext::remote(
            TraceId::from_u128(7).unwrap(),
            SpanId::from_u64(9).unwrap(),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::NOT_SAMPLED
            },
        )
        .with_trace_state(TraceState::parse(["a=b"]))
    }

    #[test]
    fn a_child_keeps_its_parents_trace_state_and_sampled_flag() {
        for sampled in [true, false] {
            let child = start_span_under(Some(&remote(sampled))).context().unwrap();
            assert_eq!(child.trace_id(), TraceId::from_u128(7).unwrap());
            assert_eq!(child.is_sampled(), sampled);
            assert_eq!(child.trace_state().as_str(), "a=b");
            assert!(!child.is_remote());
        }
        assert!(start_span_under(None).parent().is_none());
        assert_eq!(
            start_span_under(Some(&remote(true))).parent(),
            SpanId::from_u64(9)
        );
    }

    #[test]
    fn scopes_nest_and_restore_the_frame_and_the_state() {
        assert!(current().is_none());
        let outer = remote(true);
        let g = ContextGuard::attach(&outer);
        assert_eq!(current(), Some(outer.clone()));
        {
            let inner = start_span();
            let _s = inner.enter();
            let now = current().unwrap();
            assert_eq!(now.trace_state().as_str(), "a=b");
            assert_eq!(inner.parent(), Some(outer.span_id()));
            let plain = SpanContext::new(
                TraceId::from_u128(1).unwrap(),
                SpanId::from_u64(2).unwrap(),
                TraceFlags::SAMPLED,
                TraceState::NONE,
            );
            {
                let _p = Scope::enter_context(&plain);
                assert_eq!(current(), Some(plain));
            }
            assert_eq!(current().unwrap().trace_state().as_str(), "a=b");
        }
        assert_eq!(current(), Some(outer));
        drop(g);
        assert!(current().is_none());
    }
}
