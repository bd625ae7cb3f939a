//! Which `tracing` spans and events the tracking macros make, for the
//! layers that treat them specially (the log layer keeps a tracked call's
//! labels on its ERROR line whatever `RUST_LOG` says; the Sentry layer
//! turns its failure into an issue).

use tracing::Metadata;

/// Label names the tracking macros put on their spans.
pub(crate) const TRACKED_LABELS: [&str; 5] = ["chain", "model", "task", "operation", "db"];

/// A span the tracking macros made: named after the function, its fields
/// all label names.
pub(crate) fn is_tracked_span(meta: &Metadata<'_>) -> bool {
    meta.is_span()
        && !meta.fields().is_empty()
        && meta
            .fields()
            .iter()
            .all(|f| TRACKED_LABELS.contains(&f.name()))
}

/// The event closing a tracked call (`__hyperkit_finished_event`): the only
/// events with both `status` and `event.duration`.
#[cfg(feature = "sentry")]
pub(crate) fn is_closing_event(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.fields().field("status").is_some()
        && meta.fields().field("event.duration").is_some()
}
