//! One runtime for every background sink: a bounded queue, a worker thread,
//! batching by count, bytes and time, retry with backoff and jitter that
//! honours `Retry-After`, flush with a deadline, counted drops, one status
//! type and one rate-limited warning.
//!
//! A sink supplies only its delivery code, as an [`Exporter`]: how a batch
//! becomes requests, and which answers mean "try again" ([`Delivery::retry`])
//! or "never" ([`Delivery::reject`]). [`spawn`] runs it:
//!
//! ```
//! use std::time::Duration;
//! use hyperkit_obs::export::{self, Delivery, Exporter, Options};
//!
//! /// Appends each line to a file; a failed write is retried with backoff.
//! struct Lines(std::fs::File);
//!
//! impl Exporter for Lines {
//!     type Item = String;
//!     fn export(&mut self, batch: Vec<String>, delivery: &mut Delivery<'_, String>) {
//!         use std::io::Write;
//!         let text: String = batch.iter().map(|l| format!("{l}\n")).collect();
//!         if let Err(e) = self.0.write_all(text.as_bytes()) {
//!             delivery.fail(format!("cannot write: {e}"));
//!             delivery.retry_all(batch);
//!         }
//!     }
//! }
//!
//! let path = std::env::temp_dir().join(format!("export-doc-{}.log", std::process::id()));
//! let file = std::fs::File::create(&path)?;
//! let guard = export::spawn(Options::new("lines", path.display().to_string()), Lines(file))?;
//! let handle = guard.handle();
//! assert!(handle.send("first".to_owned()));     // never blocks, never does I/O
//! assert!(handle.flush(Duration::from_secs(5)));
//! assert_eq!(handle.status().delivered, 1);
//! drop(guard);                                   // delivers what is queued, then stops
//! assert_eq!(std::fs::read_to_string(&path)?, "first\n");
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The caller's side ([`Handle::send`]) is two relaxed atomics and one send
//! on a lock-free channel: no lock, no I/O, no wake-up (the worker looks for
//! new items every [`TICK`]), never a panic. A full queue drops the item and
//! counts it in `hyperkit_obs_dropped_total{sink}`, with one warning a
//! minute at most. The worker never panics either: a panicking exporter
//! loses its batch (counted), not the sink.
//!
//! Every running sink reports a [`SinkStatus`] ([`statuses`]), which feeds
//! its optional readiness check on `/health/ready`, the status page and
//! `hyperkit-obs check`. Its own trouble is logged under the target
//! [`LOG_TARGET`] with a `sink` field, at most one line every ten seconds;
//! the log layer never hands a sink the news of its own failure.

mod handle;
mod status;
mod worker;

use std::time::Duration;

pub use handle::{Guard, Handle};
pub use status::{SinkStatus, statuses};
pub use worker::{Delivery, Housekeeping};

/// The `tracing` target of the runtime's own log lines; each carries the
/// sink's name in its `sink` field.
pub const LOG_TARGET: &str = "hyperkit_obs::export";

/// How often an idle worker looks for new items, and how often
/// [`Exporter::tick`] runs.
pub const TICK: Duration = Duration::from_millis(20);

/// The delivery code of one sink: turns a batch into requests and says what
/// the answers mean. The runtime calls it on the sink's own thread, one
/// batch at a time.
pub trait Exporter: Send + 'static {
    /// What callers queue.
    type Item: Send + 'static;

    /// Delivers `batch` (oldest first). Items neither passed to
    /// [`Delivery::retry`] nor counted by [`Delivery::reject`] are
    /// delivered. Must return by [`Delivery::deadline`] when there is one.
    fn export(&mut self, batch: Vec<Self::Item>, delivery: &mut Delivery<'_, Self::Item>);

    /// Whether `item` takes a place in the queue's capacity (default: every
    /// item). Items that do not are bounded apart, by the same capacity: a
    /// sink whose queue carries two kinds of item (the MLflow sink's runs,
    /// and the late acceptances of runs) bounds each kind on its own, so
    /// that one cannot crowd out the other.
    fn counted(_item: &Self::Item) -> bool {
        true
    }

    /// The size of `item` in bytes, for [`Options::max_batch_bytes`].
    fn weight(&self, _item: &Self::Item) -> usize {
        0
    }

    /// Housekeeping, every [`TICK`] while no batch is due (retention,
    /// reconnecting, installing a template). Keep it short.
    fn tick(&mut self, _house: &mut Housekeeping<'_>) {}

    /// Called once when the sink stops, after the last batch.
    fn close(&mut self) {}
}

/// How a sink's runtime behaves. [`Options::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The sink's name: its `sink` label in `hyperkit_obs_dropped_total`,
    /// its readiness check and its thread (`hyperkit-<sink>`).
    pub sink: &'static str,
    /// Where items go, for people (never with credentials).
    pub target: String,
    /// Items accepted and not yet delivered or given up, at most (default
    /// 10,000); more are dropped and counted.
    pub capacity: usize,
    /// Items per batch, at most (default 1,000).
    pub max_batch: usize,
    /// Bytes per batch ([`Exporter::weight`]), at most; 0 for no limit
    /// (default). A single item larger than this still goes, alone.
    pub max_batch_bytes: usize,
    /// How long the first item of a batch waits for more before the batch
    /// goes anyway (default 0: at the next tick).
    pub linger: Duration,
    /// The first wait after a failed attempt (default 250 ms); doubled on
    /// each failure in a row up to `retry_max` (default 30 s), plus up to
    /// 25 % jitter. `Retry-After` ([`Delivery::retry_after`]) replaces it,
    /// capped at `retry_max`.
    pub retry_initial: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
    /// How long dropping the [`Guard`] waits for queued items (default
    /// 5 s); what is left then is dropped and counted.
    pub shutdown_deadline: Duration,
    /// Whether the sink reports as an optional readiness check named like
    /// it (default `true`).
    pub health_check: bool,
}

impl Options {
    /// The defaults for a sink named `sink` that delivers to `target`.
    pub fn new(sink: &'static str, target: impl Into<String>) -> Self {
        Options {
            sink,
            target: target.into(),
            capacity: 10_000,
            max_batch: 1_000,
            max_batch_bytes: 0,
            linger: Duration::ZERO,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(5),
            health_check: true,
        }
    }

    /// Sets [`capacity`](Self::capacity) (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets [`max_batch`](Self::max_batch) (at least 1) and
    /// [`max_batch_bytes`](Self::max_batch_bytes).
    pub fn batch(mut self, max_items: usize, max_bytes: usize) -> Self {
        self.max_batch = max_items.max(1);
        self.max_batch_bytes = max_bytes;
        self
    }

    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets the backoff bounds ([`retry_initial`](Self::retry_initial),
    /// [`retry_max`](Self::retry_max)).
    pub fn retry(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    /// Sets [`shutdown_deadline`](Self::shutdown_deadline).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Sets [`health_check`](Self::health_check).
    pub fn health_check(mut self, on: bool) -> Self {
        self.health_check = on;
        self
    }
}

/// A sink's runtime could not start (its thread could not be created).
#[derive(Debug, thiserror::Error)]
#[error("the {sink} sink cannot start its thread: {source}")]
pub struct SpawnError {
    /// The sink.
    pub sink: &'static str,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Starts `exporter` on a thread of its own (`hyperkit-<sink>`) and returns
/// the guard that owns it. Never waits for the backend.
pub fn spawn<E: Exporter>(options: Options, exporter: E) -> Result<Guard<E::Item>, SpawnError> {
    handle::spawn(options, exporter)
}

#[cfg(test)]
mod tests;
