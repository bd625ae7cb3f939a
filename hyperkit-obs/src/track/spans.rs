//! Which `tracing` spans and events the tracking macros make, for the
//! layers that treat them specially (the log layer keeps a tracked call's
//! labels on its ERROR line whatever `RUST_LOG` says; the Sentry layer
//! turns its failure into an issue).
//!
//! A tracked call's span declares one field that is never recorded,
//! [`MARKER`]: declared fields without a value are invisible to every
//! formatter and visitor, so the mark costs nothing in the output, and its
//! dotted name can never be a label's. Every recorded field of such a span
//! is a label.

use tracing::Metadata;

/// The field that marks a tracked call's span.
pub const MARKER: &str = "hyperkit.call";

/// A span the tracking macros made: named after the function, its recorded
/// fields all labels.
pub(crate) fn is_tracked_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.fields().field(MARKER).is_some()
}

/// The event closing a tracked call (`__hyperkit_finished_event`): the only
/// events with both `status` and `event.duration`.
#[cfg(feature = "sentry")]
pub(crate) fn is_closing_event(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.fields().field("status").is_some()
        && meta.fields().field("event.duration").is_some()
}
