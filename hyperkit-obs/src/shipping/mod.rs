//! Network shippers for the log layer's ECS JSON documents: Elasticsearch
//! (`_bulk`, [`elasticsearch`]) and Logstash (`tcp` input with the
//! `json_lines` codec, [`logstash`]).
//!
//! The layer hands each document to a [`ShipperHandle`] with
//! [`ShipperHandle::send`]: one relaxed atomic add, one `Arc` clone by the
//! caller and one send on an unbounded channel whose length is bounded by
//! the shipper's queue capacity (a counter of documents accepted and not yet
//! delivered or given up, retries included). It never blocks, never does
//! I/O and never panics; a document that finds the queue full is dropped
//! and counted in `hyperkit_obs_dropped_total{sink}` with one warning a
//! minute at most.
//!
//! Each shipper runs on its own thread with its own single-threaded tokio
//! runtime, so it works whether or not the program uses tokio, and reports
//! its state as the optional readiness check named like its sink
//! (`elasticsearch`, `logstash`). Dropping the [`ShipperGuard`] delivers
//! what is queued within [`SHUTDOWN_DEADLINE`] and counts the rest as
//! dropped.
//!
//! The shippers log their own trouble with `tracing` under targets starting
//! with [`LOG_TARGET`]; a layer that feeds them should not ship those events
//! (a failing Elasticsearch would otherwise receive the news of its own
//! failure, once every ten seconds).

pub mod elasticsearch;
pub mod logstash;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use elasticsearch::{ElasticsearchAuth, ElasticsearchClient, ElasticsearchConfig};
pub use logstash::LogstashConfig;

/// The prefix of the `tracing` targets the shippers log under.
pub const LOG_TARGET: &str = "hyperkit_obs::shipping";
/// The default time a guard's drop waits for queued documents.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// How often a worker looks for new documents and control messages.
const TICK: Duration = Duration::from_millis(20);

/// Errors of the shippers and of the Elasticsearch client. Their text never
/// holds a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShippingError {
    /// The shipper could not start (its thread, runtime or HTTP client).
    #[error("the {sink} shipper cannot start: {message}")]
    Setup {
        /// `elasticsearch` or `logstash`.
        sink: &'static str,
        /// Why.
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{target} is unreachable: {message}")]
    Transport {
        /// The server (no credentials).
        target: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{target} answered HTTP {status}: {body}")]
    Http {
        /// The server (no credentials).
        target: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The server's answer could not be read.
    #[error("{target} answered something that is not Elasticsearch's JSON: {message}")]
    Decode {
        /// The server (no credentials).
        target: String,
        /// What could not be read.
        message: String,
    },
}

/// A snapshot of a shipper's state, as its readiness check reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipperStatus {
    /// `elasticsearch` or `logstash`.
    pub sink: &'static str,
    /// Where documents go (no credentials).
    pub target: String,
    /// Documents accepted and not yet delivered or given up.
    pub queued: usize,
    /// Documents delivered since start.
    pub delivered: u64,
    /// Documents dropped since start: queue full, or undelivered at
    /// shutdown. Rejected documents are counted in `rejected`, not here.
    pub dropped: u64,
    /// Documents the server refused for good (Elasticsearch per-item 4xx),
    /// handed to the rejected callback.
    pub rejected: u64,
    /// Whether the last attempt failed.
    pub failing: bool,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// A standing problem besides delivery, such as the Elasticsearch
    /// index template not being installed.
    pub warning: Option<String>,
}

type RejectedFn = dyn Fn(&[u8], &str) + Send + Sync;

/// What a shipper's handle, worker and readiness check share.
pub(crate) struct Shared {
    sink: &'static str,
    target: String,
    tx: Sender<Doc>,
    capacity: usize,
    queued: AtomicUsize,
    delivered: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    failing: AtomicBool,
    accepting: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// A standing problem that is not a delivery failure (the index
    /// template not installed).
    warning: Mutex<Option<String>>,
    last_full_warning: Mutex<Option<Instant>>,
    on_rejected: Mutex<Option<Arc<RejectedFn>>>,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
}

/// One document as the layer produced it.
pub(crate) struct Doc {
    pub(crate) bytes: Arc<[u8]>,
    pub(crate) timestamp_ms: i64,
}

pub(crate) enum Control {
    Flush(std::sync::mpsc::Sender<()>),
    Stop(Duration),
}

thread_local! {
    /// Set while this thread warns about a full queue: the warning may come
    /// back into `send` through the log layer, which must not warn again.
    static WARNING: Cell<bool> = const { Cell::new(false) };
}

impl Shared {
    pub(crate) fn delivered(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` documents given up (not refused by the server).
    pub(crate) fn dropped(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
        crate::metrics::record_dropped(self.sink, n as u64);
    }

    /// A document the server refused for good: counted as dropped in
    /// `hyperkit_obs_dropped_total{sink}` and handed to the callback.
    pub(crate) fn rejected(&self, doc: &[u8], reason: &str) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        crate::metrics::record_dropped(self.sink, 1);
        let callback = self
            .on_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(callback) = callback {
            // A panicking callback must not stop the shipper.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                callback(doc, reason);
            }));
        }
    }

    pub(crate) fn set_error(&self, error: Option<String>) {
        self.failing.store(error.is_some(), Ordering::Relaxed);
        if let Some(e) = error {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn status(&self) -> ShipperStatus {
        ShipperStatus {
            sink: self.sink,
            target: self.target.clone(),
            queued: self.queued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            warning: self
                .warning
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    #[cold]
    fn queue_full(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        crate::metrics::record_dropped(self.sink, 1);
        if WARNING.with(Cell::get) {
            return;
        }
        let now = Instant::now();
        {
            let Ok(mut last) = self.last_full_warning.try_lock() else {
                return;
            };
            if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(60)) {
                return;
            }
            *last = Some(now);
        }
        WARNING.with(|w| w.set(true));
        tracing::warn!(
            target: "hyperkit_obs::shipping",
            sink = self.sink,
            capacity = self.capacity,
            "the {} queue is full: log documents are being dropped and counted in \
             hyperkit_obs_dropped_total{{sink=\"{}\"}} (at most one warning a minute)",
            self.sink,
            self.sink
        );
        WARNING.with(|w| w.set(false));
    }
}

/// A cheap, cloneable handle the log layer sends documents through.
#[derive(Clone)]
pub struct ShipperHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShipperHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperHandle")
            .field("sink", &self.shared.sink)
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl ShipperHandle {
    /// Queues one ECS JSON document (a JSON object, no trailing newline)
    /// whose `@timestamp` is `timestamp_ms` milliseconds since the Unix
    /// epoch (Elasticsearch picks the daily index from it). Returns whether
    /// it was queued: `false` when the queue is full (the document is
    /// dropped and counted) or the shipper has stopped.
    ///
    /// Never blocks, never does I/O, never panics.
    #[inline]
    pub fn send(&self, doc: Arc<[u8]>, timestamp_ms: i64) -> bool {
        let s = &*self.shared;
        if !s.accepting.load(Ordering::Relaxed) {
            return false;
        }
        if s.queued.fetch_add(1, Ordering::Relaxed) >= s.capacity {
            s.queued.fetch_sub(1, Ordering::Relaxed);
            s.queue_full();
            return false;
        }
        let doc = Doc {
            bytes: doc,
            timestamp_ms,
        };
        if s.tx.send(doc).is_err() {
            s.dropped(1);
            return false;
        }
        true
    }

    /// Waits until every document queued so far is delivered or given up,
    /// for at most `deadline`; returns whether that happened in time. Never
    /// call it from the shipper's own thread.
    pub fn flush(&self, deadline: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.shared.control.send(Control::Flush(tx)).is_err() {
            return self.shared.queued() == 0;
        }
        rx.recv_timeout(deadline).is_ok()
    }

    /// The shipper's state.
    pub fn status(&self) -> ShipperStatus {
        self.shared.status()
    }

    /// Sets the function that receives each document the server refused for
    /// good, with the server's reason (`type: reason`), so that it can be
    /// kept elsewhere (the local log store). It runs on the shipper's
    /// thread: keep it short. Replaces any earlier callback.
    pub fn on_rejected(&self, callback: impl Fn(&[u8], &str) + Send + Sync + 'static) {
        *self
            .shared
            .on_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(callback));
    }
}

/// Runs a shipper; dropping it delivers what is queued (within
/// [`SHUTDOWN_DEADLINE`]) and stops it.
#[must_use = "dropping the guard stops the shipper"]
pub struct ShipperGuard {
    handle: ShipperHandle,
    // In a Mutex only so that the guard is `Sync`.
    done: Option<Mutex<Receiver<()>>>,
}

impl std::fmt::Debug for ShipperGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperGuard")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl ShipperGuard {
    /// The handle the log layer sends documents through.
    pub fn handle(&self) -> ShipperHandle {
        self.handle.clone()
    }

    /// Delivers what is queued, for at most `deadline`, then stops.
    /// Documents still undelivered are counted as dropped.
    pub fn shutdown(mut self, deadline: Duration) {
        self.stop(deadline);
    }

    fn stop(&mut self, deadline: Duration) {
        let Some(done) = self.done.take() else {
            return;
        };
        self.handle.shared.accepting.store(false, Ordering::SeqCst);
        let _ = self.handle.shared.control.send(Control::Stop(deadline));
        let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
        let _ = done.recv_timeout(deadline + Duration::from_secs(1));
    }
}

impl Drop for ShipperGuard {
    fn drop(&mut self) {
        self.stop(SHUTDOWN_DEADLINE);
    }
}

/// What a worker gets: its documents, control messages and shared state.
pub(crate) struct WorkerIo {
    pub(crate) rx: Receiver<Doc>,
    pub(crate) control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    pub(crate) shared: Arc<Shared>,
}

/// Starts a worker thread running `work` on its own runtime, registers the
/// readiness check named `sink`, and returns the guard.
pub(crate) fn spawn<F, Fut>(
    sink: &'static str,
    target: String,
    capacity: usize,
    work: F,
) -> Result<ShipperGuard, ShippingError>
where
    F: FnOnce(WorkerIo) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let (control_tx, control) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        sink,
        target,
        tx,
        capacity: capacity.max(1),
        queued: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        failing: AtomicBool::new(false),
        accepting: AtomicBool::new(true),
        last_error: Mutex::new(None),
        warning: Mutex::new(None),
        last_full_warning: Mutex::new(None),
        on_rejected: Mutex::new(None),
        control: control_tx,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ShippingError::Setup {
            sink,
            message: format!("cannot build its runtime: {e}"),
        })?;
    let (done_tx, done) = std::sync::mpsc::channel();
    let io = WorkerIo {
        rx,
        control,
        shared: Arc::clone(&shared),
    };
    std::thread::Builder::new()
        .name(format!("hyperkit-{sink}"))
        .spawn(move || {
            runtime.block_on(work(io));
            let _ = done_tx.send(());
        })
        .map_err(|e| ShippingError::Setup {
            sink,
            message: format!("cannot start its thread: {e}"),
        })?;
    let weak = Arc::downgrade(&shared);
    crate::health::register_optional(sink, move || {
        let shared = weak.upgrade();
        async move {
            let Some(s) = shared else {
                return Err("stopped".to_owned());
            };
            let st = s.status();
            if !s.accepting.load(Ordering::Relaxed) {
                return Err(format!("{}: stopped", st.target));
            }
            let detail = format!(
                "{}: {} queued, {} delivered, {} dropped, {} rejected{}{}",
                st.target,
                st.queued,
                st.delivered,
                st.dropped,
                st.rejected,
                st.warning
                    .as_deref()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default(),
                st.last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            );
            if st.failing || st.warning.is_some() {
                Err(detail)
            } else {
                Ok(detail)
            }
        }
    });
    Ok(ShipperGuard {
        handle: ShipperHandle { shared },
        done: Some(Mutex::new(done)),
    })
}

/// Control-message bookkeeping every worker shares.
pub(crate) struct Lifecycle {
    pub(crate) waiters: Vec<std::sync::mpsc::Sender<()>>,
    pub(crate) stop_at: Option<Instant>,
    pub(crate) closed: bool,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            waiters: Vec::new(),
            stop_at: None,
            closed: false,
        }
    }

    pub(crate) fn handle(&mut self, msg: Option<Control>) {
        match msg {
            Some(Control::Flush(reply)) => self.waiters.push(reply),
            Some(Control::Stop(deadline)) => {
                self.stop_at = Some(Instant::now() + deadline);
            }
            None => {
                self.closed = true;
                self.stop_at.get_or_insert_with(Instant::now);
            }
        }
    }

    /// Takes the control messages waiting, without blocking.
    pub(crate) fn poll(&mut self, control: &mut tokio::sync::mpsc::UnboundedReceiver<Control>) {
        if self.closed {
            return;
        }
        loop {
            match control.try_recv() {
                Ok(msg) => self.handle(Some(msg)),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    self.handle(None);
                    return;
                }
            }
        }
    }

    /// Whether documents should go out now rather than wait for a batch.
    pub(crate) fn urgent(&self) -> bool {
        !self.waiters.is_empty() || self.stop_at.is_some()
    }

    pub(crate) fn past_deadline(&self) -> bool {
        self.stop_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Answers the flush waiters once nothing is queued.
    pub(crate) fn answer(&mut self, shared: &Shared) {
        if shared.queued() == 0 {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Runs `fut` while still taking control messages; `None` when the stop
    /// deadline passes first.
    pub(crate) async fn run<F: std::future::Future>(
        &mut self,
        control: &mut tokio::sync::mpsc::UnboundedReceiver<Control>,
        fut: F,
    ) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let until = self
                .stop_at
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                out = &mut fut => return Some(out),
                () = tokio::time::sleep_until(until.into()) => return None,
                msg = control.recv(), if !self.closed => self.handle(msg),
            }
        }
    }

    /// Sleeps until `until` (at most one tick), waking early for a control
    /// message.
    pub(crate) async fn wait(
        &mut self,
        control: &mut tokio::sync::mpsc::UnboundedReceiver<Control>,
        until: Option<Instant>,
    ) {
        let tick = Instant::now() + TICK;
        let until = until.map_or(tick, |u| u.min(tick));
        if self.closed {
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => {}
            msg = control.recv() => self.handle(msg),
        }
    }
}

/// Logs a shipper's failures at most once every ten seconds.
pub(crate) struct FailureLog(crate::util::LogLimiter);

impl FailureLog {
    pub(crate) fn new() -> Self {
        FailureLog(crate::util::LogLimiter::default())
    }

    pub(crate) fn log(&mut self, shared: &Shared, message: &str) {
        shared.set_error(Some(message.to_owned()));
        if let Some(suppressed) = self.0.admit() {
            tracing::error!(target: "hyperkit_obs::shipping", sink = shared.sink, suppressed, "{message}");
        }
    }
}

use crate::config::invalid;

/// A whole number from `min` to `max`.
pub(crate) fn parse_number(
    variable: &'static str,
    v: &str,
    min: u64,
    max: u64,
    example: &'static str,
) -> Result<u64, crate::config::ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            variable,
            v,
            format!("must be a whole number from {min} to {max}"),
            example,
        )),
    }
}
