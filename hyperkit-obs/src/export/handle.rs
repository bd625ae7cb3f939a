//! The caller's side of a sink: [`Handle::send`] queues without waiting,
//! [`Handle::flush`] waits with a deadline, and the [`Guard`] stops the
//! worker. What callers and the worker share lives in [`Core`].

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use super::{Exporter, LOG_TARGET, Options, SpawnError};
use crate::util::unix_ms;

/// A value alone on its cache line, so the callers' counter and the
/// worker's do not slow each other down.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Padded<T>(pub(crate) T);

pub(crate) enum Control {
    /// Answer once every item accepted up to `target` is finished.
    Flush { target: u64, reply: Sender<()> },
    /// Deliver what is queued within the deadline, then stop.
    Stop(Duration),
}

/// What a sink's handles, worker and status share.
pub(crate) struct Core {
    pub(crate) sink: &'static str,
    pub(crate) target: String,
    pub(crate) capacity: u64,
    /// Items callers offered and were let in (and queue-full drops), by
    /// lane ([`Exporter::counted`]: 0 for counted items, 1 for the others,
    /// each lane bounded by the capacity): written by callers only.
    accepted: Padded<[AtomicU64; 2]>,
    /// Items delivered, rejected or dropped, by lane: `accepted - finished`
    /// is the queue.
    finished: Padded<[AtomicU64; 2]>,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) accepting: AtomicBool,
    pub(crate) running: AtomicBool,
    pub(crate) failing: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) last_error_ms: AtomicI64,
    pub(crate) last_success_ms: AtomicI64,
    pub(crate) warning: Mutex<Option<String>>,
    last_full_warning_ms: AtomicI64,
    /// When the sink must have stopped, once its guard asked: an export
    /// under way when that happens reads it through `Delivery::deadline`.
    stop_at: Mutex<Option<Instant>>,
    control: Sender<Control>,
    dropped_total: IntCounter,
}

thread_local! {
    /// Set while this thread warns of a full queue: the warning may come
    /// back into `send` through the log layer, which must not warn again.
    static WARNING: Cell<bool> = const { Cell::new(false) };
}

impl Core {
    /// Items queued, both lanes.
    pub(crate) fn queued(&self) -> u64 {
        self.accepted().saturating_sub(self.finished())
    }

    /// Items queued in `lane` (0: the counted ones).
    pub(crate) fn queued_in(&self, lane: usize) -> u64 {
        self.accepted.0[lane]
            .load(Ordering::Acquire)
            .saturating_sub(self.finished.0[lane].load(Ordering::Acquire))
    }

    /// Items let in so far, both lanes.
    pub(crate) fn accepted(&self) -> u64 {
        let a = &self.accepted.0;
        a[0].load(Ordering::Acquire) + a[1].load(Ordering::Acquire)
    }

    /// Items finished so far, both lanes.
    pub(crate) fn finished(&self) -> u64 {
        let f = &self.finished.0;
        f[0].load(Ordering::Acquire) + f[1].load(Ordering::Acquire)
    }

    /// Counts `[counted, other]` items as finished (delivered, rejected or
    /// dropped: the status counters say which).
    pub(crate) fn finish(&self, lanes: [u64; 2]) {
        for (lane, n) in lanes.into_iter().enumerate() {
            if n > 0 {
                self.finished.0[lane].fetch_add(n, Ordering::Release);
            }
        }
    }

    pub(crate) fn count_delivered(&self, n: u64) {
        if n > 0 {
            self.delivered.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts `n` items refused for good by the backend.
    pub(crate) fn count_rejected(&self, n: u64) {
        if n > 0 {
            self.rejected.fetch_add(n, Ordering::Relaxed);
            self.dropped_total.inc_by(n);
        }
    }

    /// Counts `n` items dropped (a full queue, a stopped sink, the
    /// shutdown deadline, a panicking exporter).
    pub(crate) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.dropped_total.inc_by(n);
    }

    pub(crate) fn set_error(&self, message: String) {
        self.failing.store(true, Ordering::Relaxed);
        self.last_error_ms.store(unix_ms(), Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
    }

    pub(crate) fn set_success(&self) {
        self.failing.store(false, Ordering::Relaxed);
        self.last_success_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// When the sink must have stopped, if its guard asked it to stop.
    pub(crate) fn stop_deadline(&self) -> Option<Instant> {
        *self.stop_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_warning(&self, warning: Option<String>) {
        *self.warning.lock().unwrap_or_else(PoisonError::into_inner) = warning;
    }

    #[cold]
    #[inline(never)]
    fn queue_full(&self) {
        self.count_dropped(1);
        if WARNING.with(Cell::get) {
            return;
        }
        let now = unix_ms();
        let last = self.last_full_warning_ms.load(Ordering::Relaxed);
        if (last != 0 && now.saturating_sub(last) < 60_000)
            || self
                .last_full_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        WARNING.with(|w| w.set(true));
        tracing::warn!(
            target: LOG_TARGET,
            sink = self.sink,
            capacity = self.capacity,
            "the {} queue is full ({} items): new items are dropped and counted in \
             hyperkit_obs_dropped_total{{sink=\"{}\"}} (at most one warning a minute)",
            self.sink,
            self.capacity,
            self.sink
        );
        WARNING.with(|w| w.set(false));
    }
}

/// A cheap, cloneable handle that queues items for a sink.
pub struct Handle<T> {
    core: Arc<Core>,
    tx: Sender<T>,
    /// [`Exporter::counted`] of the sink's exporter.
    counted: fn(&T) -> bool,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle {
            core: Arc::clone(&self.core),
            tx: self.tx.clone(),
            counted: self.counted,
        }
    }
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("sink", &self.core.sink)
            .field("target", &self.core.target)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Handle<T> {
    /// Queues `item`. Returns `false`, dropping and counting it, when the
    /// queue is full or the sink has stopped.
    ///
    /// Never blocks, never does I/O, never panics.
    #[inline]
    pub fn send(&self, item: T) -> bool {
        self.try_send(item).is_ok()
    }

    /// [`send`](Self::send), handing a refused item back (it is counted as
    /// dropped all the same), for callers that report what they lose.
    #[inline]
    pub fn try_send(&self, item: T) -> Result<(), T> {
        let core = &*self.core;
        if !core.accepting.load(Ordering::Relaxed) {
            core.count_dropped(1);
            return Err(item);
        }
        let lane = usize::from(!(self.counted)(&item));
        let before = core.accepted.0[lane].fetch_add(1, Ordering::AcqRel);
        let finished = core.finished.0[lane].load(Ordering::Acquire);
        if before.saturating_sub(finished) >= core.capacity {
            core.finished.0[lane].fetch_add(1, Ordering::Release);
            core.queue_full();
            return Err(item);
        }
        self.tx.send(item).map_err(|e| {
            let mut lanes = [0; 2];
            lanes[lane] = 1;
            core.finish(lanes);
            core.count_dropped(1);
            e.0
        })
    }

    /// Waits until every item queued before the call is delivered or given
    /// up, for at most `deadline`; returns whether that happened in time.
    /// Never call it from the sink's own thread (its exporter).
    pub fn flush(&self, deadline: Duration) -> bool {
        let target = self.core.accepted();
        if self.core.finished() >= target {
            return true;
        }
        let (reply, answer) = std::sync::mpsc::channel();
        if self
            .core
            .control
            .send(Control::Flush { target, reply })
            .is_err()
        {
            return self.core.finished() >= target;
        }
        answer.recv_timeout(deadline).is_ok()
    }

    /// The sink's state now.
    pub fn status(&self) -> super::SinkStatus {
        super::status::snapshot(&self.core)
    }

    /// The sink's name.
    pub fn sink(&self) -> &'static str {
        self.core.sink
    }
}

/// Owns a running sink: dropping it delivers what is queued, within
/// [`Options::shutdown_deadline`], and stops the worker; what is left is
/// dropped and counted.
#[must_use = "dropping the guard stops the sink"]
pub struct Guard<T> {
    handle: Handle<T>,
    deadline: Duration,
    // In a Mutex only so that the guard is `Sync` (init()'s guard may live
    // in a `static`).
    done: Option<Mutex<Receiver<()>>>,
}

impl<T> std::fmt::Debug for Guard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Guard<T> {
    /// A handle to queue items with.
    pub fn handle(&self) -> Handle<T> {
        self.handle.clone()
    }

    /// Delivers what is queued, for at most `deadline`, then stops. Items
    /// still undelivered are dropped and counted.
    pub fn shutdown(mut self, deadline: Duration) {
        self.stop(deadline);
    }

    /// [`Handle::flush`] of the sink.
    pub fn flush(&self, deadline: Duration) -> bool {
        self.handle.flush(deadline)
    }

    /// [`Handle::status`] of the sink.
    pub fn status(&self) -> super::SinkStatus {
        self.handle.status()
    }
}

impl<T> Guard<T> {
    fn stop(&mut self, deadline: Duration) {
        let Some(done) = self.done.take() else {
            return;
        };
        let core = &self.handle.core;
        core.accepting.store(false, Ordering::SeqCst);
        *core.stop_at.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + deadline);
        let _ = core.control.send(Control::Stop(deadline));
        let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
        // The worker gives up at the deadline; allow it a moment to count.
        let _ = done.recv_timeout(deadline + Duration::from_secs(1));
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        self.stop(self.deadline);
    }
}

pub(super) fn spawn<E: Exporter>(
    options: Options,
    exporter: E,
) -> Result<Guard<E::Item>, SpawnError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (control, control_rx) = std::sync::mpsc::channel();
    let core = Arc::new(Core {
        sink: options.sink,
        target: options.target.clone(),
        capacity: options.capacity.max(1) as u64,
        accepted: Padded::default(),
        finished: Padded::default(),
        delivered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        accepting: AtomicBool::new(true),
        running: AtomicBool::new(true),
        failing: AtomicBool::new(false),
        last_error: Mutex::new(None),
        last_error_ms: AtomicI64::new(0),
        last_success_ms: AtomicI64::new(0),
        warning: Mutex::new(None),
        last_full_warning_ms: AtomicI64::new(0),
        stop_at: Mutex::new(None),
        control,
        dropped_total: crate::metrics::dropped_counter(options.sink),
    });
    let (done_tx, done) = std::sync::mpsc::channel();
    let worker_core = Arc::clone(&core);
    let deadline = options.shutdown_deadline;
    let health = options.health_check;
    std::thread::Builder::new()
        .name(format!("hyperkit-{}", options.sink))
        .spawn(move || {
            super::worker::run(exporter, rx, control_rx, &worker_core, &options);
            worker_core.running.store(false, Ordering::SeqCst);
            let _ = done_tx.send(());
        })
        .map_err(|source| SpawnError {
            sink: core.sink,
            source,
        })?;
    super::status::register(&core, health);
    Ok(Guard {
        handle: Handle {
            core,
            tx,
            counted: E::counted,
        },
        deadline,
        done: Some(Mutex::new(done)),
    })
}
