//! [`SinkStatus`]: one sink's state, as its readiness check, the status
//! page and `hyperkit-obs check` show it, and the list of running sinks.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::Serialize;

use super::handle::Core;

/// A snapshot of one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SinkStatus {
    /// The sink's name (`elasticsearch`, `mlflow`, …).
    pub sink: &'static str,
    /// Where its items go (never with credentials).
    pub target: String,
    /// Items accepted and not yet delivered or given up, retries included
    /// (those that take a place in the capacity: see
    /// [`Exporter::counted`](super::Exporter::counted)).
    pub queued: usize,
    /// Queued items that take no place in the capacity (the MLflow sink's
    /// late acceptances), bounded apart by as many again.
    pub queued_other: usize,
    /// The most items it queues.
    pub capacity: usize,
    /// Items delivered since start.
    pub delivered: u64,
    /// Items dropped since start: the queue was full, the sink had stopped,
    /// or the shutdown deadline passed. Rejected items are counted in
    /// `rejected`, not here; `hyperkit_obs_dropped_total` counts both.
    pub dropped: u64,
    /// Items the backend refused for good.
    pub rejected: u64,
    /// Whether the last attempt failed.
    pub failing: bool,
    /// Whether its worker still runs.
    pub running: bool,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// When `last_error` happened, in milliseconds since the Unix epoch.
    pub last_error_ms: Option<i64>,
    /// When a batch last went through, in milliseconds since the Unix
    /// epoch.
    pub last_success_ms: Option<i64>,
    /// A standing problem besides delivery (an index template that could
    /// not be installed).
    pub warning: Option<String>,
}

impl SinkStatus {
    /// Whether the sink is running, delivering and has no standing
    /// problem.
    pub fn healthy(&self) -> bool {
        self.running && !self.failing && self.warning.is_none()
    }

    /// One line for people: `<target>: 3 queued, 120 delivered, 0 dropped,
    /// 0 rejected[; warning][; last error: …]`.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{}: {} queued, {} delivered, {} dropped, {} rejected",
            self.target, self.queued, self.delivered, self.dropped, self.rejected
        );
        if !self.running {
            line.push_str("; stopped");
        }
        if let Some(w) = &self.warning {
            line.push_str("; ");
            line.push_str(w);
        }
        if let Some(e) = self.last_error.as_deref().filter(|_| self.failing) {
            line.push_str("; last error: ");
            line.push_str(e);
        }
        line
    }
}

fn millis(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

pub(super) fn snapshot(core: &Core) -> SinkStatus {
    SinkStatus {
        sink: core.sink,
        target: core.target.clone(),
        queued: usize::try_from(core.queued_in(0)).unwrap_or(usize::MAX),
        queued_other: usize::try_from(core.queued_in(1)).unwrap_or(usize::MAX),
        capacity: usize::try_from(core.capacity).unwrap_or(usize::MAX),
        delivered: core.delivered.load(Ordering::Relaxed),
        dropped: core.dropped.load(Ordering::Relaxed),
        rejected: core.rejected.load(Ordering::Relaxed),
        failing: core.failing.load(Ordering::Relaxed),
        running: core.running.load(Ordering::Relaxed) && core.accepting.load(Ordering::Relaxed),
        last_error: core
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        last_error_ms: millis(core.last_error_ms.load(Ordering::Relaxed)),
        last_success_ms: millis(core.last_success_ms.load(Ordering::Relaxed)),
        warning: core
            .warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    }
}

static SINKS: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

pub(super) fn register(core: &Arc<Core>, health_check: bool) {
    let mut sinks = SINKS.lock().unwrap_or_else(PoisonError::into_inner);
    // A sink started again under the same name replaces the stopped one.
    sinks.retain(|w| {
        w.upgrade()
            .is_some_and(|c| c.sink != core.sink || c.running.load(Ordering::Relaxed))
    });
    sinks.push(Arc::downgrade(core));
    drop(sinks);
    #[cfg(feature = "http")]
    if health_check {
        let weak = Arc::downgrade(core);
        crate::health::register_optional(core.sink, move || {
            let status = weak.upgrade().map(|c| snapshot(&c));
            async move {
                match status {
                    Some(s) if s.healthy() => Ok(s.summary()),
                    Some(s) => Err(s.summary()),
                    None => Err("stopped".to_owned()),
                }
            }
        });
    }
    #[cfg(not(feature = "http"))]
    let _ = health_check;
}

/// The state of every sink started and not yet stopped (and of stopped
/// ones still referenced by a handle), in the order they started.
pub fn statuses() -> Vec<SinkStatus> {
    SINKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .map(|c| snapshot(&c))
        .collect()
}
