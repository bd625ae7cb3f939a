//! The background exporter: `#[track_model]` calls become MLflow runs, off
//! the caller's path.
//!
//! A finished call costs its caller two relaxed atomic operations and one
//! send on an unbounded channel (no lock, no allocation of its own, no
//! wake-up: the worker polls the channel every [`TICK`]). The number of runs
//! waiting, queued or being retried, is bounded by
//! `HYPERKIT_MLFLOW_QUEUE_CAPACITY`: a call that finds it full is dropped and
//! counted in `hyperkit_obs_dropped_total{sink="mlflow"}`.
//!
//! The worker runs on its own thread with its own single-threaded runtime,
//! so it works whether or not the program uses tokio. It delivers to a
//! tracking server up to `HYPERKIT_MLFLOW_CONCURRENCY` runs at a time
//! (create, log-batch, update: the fewest requests MLflow's API allows for a
//! run with params), or writes to the file store. A failure the server may
//! recover from (it is down, overloaded, answers 5xx) keeps the run and
//! retries it with backoff, so a server that is down for a while loses
//! nothing within the bound; a run MLflow refuses is logged once as an error
//! and counted as dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::client::MlflowClient;
use super::config::{MlflowConfig, TrackingTarget};
use super::error::MlflowError;
use super::file_store::FileStore;
use super::run::{CALL_ID_TAG, ModelRun, acceptance_metric};
use super::types::{RunRecord, RunStatus, ViewType};
use crate::model::{CallId, Usage};
use crate::track::{Exported, Status};
use crate::util::unix_ms as now_ms;

/// How often the worker looks for new runs.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// The longest wait between two attempts at a server that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Runs whose id the worker remembers for late acceptances.
const REMEMBERED: usize = 100_000;
/// The default time the guard's drop waits for queued runs.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

enum Item {
    Call {
        id: CallId,
        status: Status,
        end_ms: i64,
        elapsed: Duration,
        usage: Option<Usage>,
        error_type: Option<&'static str>,
    },
    Acceptance {
        seq: u64,
        accepted: bool,
        at_ms: i64,
    },
}

struct Queue {
    tx: Sender<Item>,
    rx: Mutex<Option<Receiver<Item>>>,
}

fn queue() -> &'static Queue {
    static QUEUE: OnceLock<Queue> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        Queue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    })
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Runs accepted and not yet delivered or given up.
static QUEUED: AtomicUsize = AtomicUsize::new(0);
static CAPACITY: AtomicUsize = AtomicUsize::new(0);
static LAST_FULL_WARNING: AtomicU64 = AtomicU64::new(0);

/// The running exporter's control channel and state.
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

#[derive(Clone)]
struct Running {
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    state: Arc<State>,
}

enum Control {
    Flush(std::sync::mpsc::Sender<()>),
    Stop(Duration),
}

/// What the exporter has done, for health checks and the status page.
#[derive(Default)]
struct State {
    target: String,
    delivered: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    failing: AtomicBool,
}

/// A snapshot of the running exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExporterStatus {
    /// Where runs go.
    pub target: String,
    /// Runs waiting for delivery (queued or being retried).
    pub queued: usize,
    /// Runs delivered since start.
    pub delivered: u64,
    /// Runs given up (refused by MLflow) since start.
    pub failed: u64,
    /// Whether the last attempt failed.
    pub failing: bool,
    /// The last delivery error.
    pub last_error: Option<String>,
}

/// The state of the running exporter, if one runs.
pub fn status() -> Option<ExporterStatus> {
    let running = RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()?;
    let s = &running.state;
    Some(ExporterStatus {
        target: s.target.clone(),
        queued: QUEUED.load(Ordering::Relaxed),
        delivered: s.delivered.load(Ordering::Relaxed),
        failed: s.failed.load(Ordering::Relaxed),
        failing: s.failing.load(Ordering::Relaxed),
        last_error: s
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    })
}

/// Queues a finished model call. Called by `#[track_model]`'s guard.
#[inline]
pub(crate) fn model_call(call: &Exported) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    if QUEUED.fetch_add(1, Ordering::Relaxed) >= CAPACITY.load(Ordering::Relaxed) {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
        queue_full();
        return;
    }
    let item = Item::Call {
        id: call.id,
        status: call.status,
        end_ms: now_ms(),
        elapsed: call.elapsed,
        usage: call.usage,
        error_type: call.error_type,
    };
    if queue().tx.send(item).is_err() {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::record_dropped("mlflow", 1);
    }
}

#[cold]
fn queue_full() {
    crate::metrics::record_dropped("mlflow", 1);
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let last = LAST_FULL_WARNING.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST_FULL_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            target: "hyperkit_obs::mlflow",
            capacity = CAPACITY.load(Ordering::Relaxed),
            "the MLflow queue is full: model call runs are being dropped and counted in \
             hyperkit_obs_dropped_total{{sink=\"mlflow\"}} (at most one warning a minute)"
        );
    }
}

/// Queues a late acceptance. Called by [`crate::model::record_acceptance`].
pub(crate) fn acceptance(id: CallId, accepted: bool) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let _ = queue().tx.send(Item::Acceptance {
        seq: id.seq(),
        accepted,
        at_ms: now_ms(),
    });
}

/// Waits until every run queued so far is delivered (or given up), for at
/// most `deadline`. Returns whether everything was delivered in time; `true`
/// when no exporter runs. Never call it from the exporter's own thread.
pub fn flush(deadline: Duration) -> bool {
    let Some(running) = RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
    else {
        return true;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    if running.control.send(Control::Flush(tx)).is_err() {
        return QUEUED.load(Ordering::Relaxed) == 0;
    }
    rx.recv_timeout(deadline).is_ok()
}

/// Runs the exporter; dropping it delivers what is queued (within
/// [`SHUTDOWN_DEADLINE`]) and stops it.
#[must_use = "dropping the guard stops the exporter"]
pub struct MlflowGuard {
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    // In a Mutex only so that the guard (and `ObsGuard`, which holds it) is
    // `Sync`, as a `static` needs.
    done: Option<Mutex<std::sync::mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for MlflowGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowGuard").finish_non_exhaustive()
    }
}

impl MlflowGuard {
    /// Delivers what is queued, for at most `deadline`, then stops. Runs
    /// still undelivered are counted as dropped and logged once.
    pub fn shutdown(mut self, deadline: Duration) {
        self.stop(deadline);
    }

    fn stop(&mut self, deadline: Duration) {
        let Some(done) = self.done.take() else {
            return;
        };
        ENABLED.store(false, Ordering::SeqCst);
        let _ = self.control.send(Control::Stop(deadline));
        // The worker gives up at the deadline; allow it a moment to count.
        let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
        let _ = done.recv_timeout(deadline + Duration::from_secs(1));
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if running
            .as_ref()
            .is_some_and(|r| r.control.same_channel(&self.control))
        {
            *running = None;
        }
    }
}

impl Drop for MlflowGuard {
    fn drop(&mut self) {
        self.stop(SHUTDOWN_DEADLINE);
    }
}

/// Starts the exporter for `config`: every `#[track_model]` call from now
/// on is logged as a run. One exporter runs at a time.
pub fn start(config: &MlflowConfig) -> Result<MlflowGuard, MlflowError> {
    let target = match &config.target {
        TrackingTarget::Server(_) => Target::Rest(MlflowClient::new(config)?),
        TrackingTarget::FileStore(path) => Target::File(FileStore::open(path)?),
    };
    start_with(config, target)
}

/// Starts an exporter that builds every run, as for a real store, and then
/// discards it: for benchmarks of the caller's cost.
#[doc(hidden)]
pub fn start_discarding(config: &MlflowConfig) -> Result<MlflowGuard, MlflowError> {
    start_with(config, Target::Discard)
}

fn start_with(config: &MlflowConfig, target: Target) -> Result<MlflowGuard, MlflowError> {
    let rx = queue()
        .rx
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .ok_or_else(|| MlflowError::Setup("an MLflow exporter is already running".to_owned()))?;
    // Calls queued while no exporter ran are stale: forget them.
    while rx.try_recv().is_ok() {}
    QUEUED.store(0, Ordering::SeqCst);
    CAPACITY.store(config.queue_capacity, Ordering::SeqCst);
    let state = Arc::new(State {
        target: match &target {
            Target::Rest(c) => c.base_url().to_owned(),
            Target::File(s) => format!("file store {}", s.root().display()),
            Target::Discard => "nowhere (discarding)".to_owned(),
        },
        ..State::default()
    });
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    let worker = Worker {
        rx,
        target,
        experiment: config.experiment_name.clone(),
        experiment_id: None,
        pending: VecDeque::new(),
        inflight: tokio::task::JoinSet::new(),
        inflight_seqs: HashSet::new(),
        late: HashMap::new(),
        early: HashMap::new(),
        remembered: HashMap::new(),
        remembered_order: VecDeque::new(),
        concurrency: config.concurrency.max(1),
        retry_at: None,
        backoff: Duration::ZERO,
        waiters: Vec::new(),
        state: Arc::clone(&state),
        failure_log: crate::util::LogLimiter::default(),
    };
    std::thread::Builder::new()
        .name("hyperkit-mlflow".to_owned())
        .spawn(move || {
            let rx = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(worker.run(control_rx)),
                Err(e) => {
                    tracing::error!(target: "hyperkit_obs::mlflow", "the MLflow exporter cannot start its runtime: {e}");
                    worker.rx
                }
            };
            *queue().rx.lock().unwrap_or_else(PoisonError::into_inner) = Some(rx);
            let _ = done_tx.send(());
        })
        .map_err(|e| MlflowError::Setup(format!("cannot start the exporter thread: {e}")))?;
    *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) = Some(Running {
        control: control.clone(),
        state,
    });
    ENABLED.store(true, Ordering::SeqCst);
    Ok(MlflowGuard {
        control,
        done: Some(Mutex::new(done)),
    })
}

#[derive(Clone)]
enum Target {
    Rest(MlflowClient),
    File(FileStore),
    Discard,
}

enum Job {
    Run {
        seq: u64,
        record: RunRecord,
        run_id: Option<String>,
        /// A create whose effect is unknown happened: look for the run by
        /// its call id before creating it again.
        ambiguous: bool,
    },
    Accept {
        run_id: String,
        accepted: bool,
        at_ms: i64,
    },
}

type Done = (Job, Result<String, MlflowError>);

struct Worker {
    rx: Receiver<Item>,
    target: Target,
    experiment: String,
    experiment_id: Option<String>,
    pending: VecDeque<Job>,
    inflight: tokio::task::JoinSet<Done>,
    inflight_seqs: HashSet<u64>,
    /// Acceptances that arrived while their run was in flight.
    late: HashMap<u64, Vec<(bool, i64)>>,
    /// Acceptances that arrived before their call finished.
    early: HashMap<u64, Vec<(bool, i64)>>,
    remembered: HashMap<u64, String>,
    remembered_order: VecDeque<u64>,
    concurrency: usize,
    retry_at: Option<Instant>,
    backoff: Duration,
    waiters: Vec<std::sync::mpsc::Sender<()>>,
    state: Arc<State>,
    failure_log: crate::util::LogLimiter,
}

impl Worker {
    async fn run(
        mut self,
        mut control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    ) -> Receiver<Item> {
        let mut stop_at: Option<Instant> = None;
        loop {
            let disconnected = self.drain();
            let now = Instant::now();
            if self.retry_at.is_none_or(|t| now >= t) {
                self.retry_at = None;
                if self.experiment_id.is_none() && !self.pending.is_empty() {
                    // The lookup can take minutes against a server that is
                    // down or hangs: keep answering control messages, and
                    // give it up at the stop deadline.
                    let mut waiters = Vec::new();
                    {
                        let resolve = self.resolve_experiment();
                        tokio::pin!(resolve);
                        loop {
                            let until =
                                stop_at.unwrap_or_else(|| now + Duration::from_secs(86_400));
                            tokio::select! {
                                () = &mut resolve => break,
                                () = tokio::time::sleep_until(until.into()) => break,
                                msg = control.recv() => match msg {
                                    Some(Control::Flush(reply)) => waiters.push(reply),
                                    Some(Control::Stop(deadline)) => {
                                        stop_at = Some(Instant::now() + deadline);
                                    }
                                    None => stop_at = Some(Instant::now()),
                                },
                            }
                        }
                    }
                    self.waiters.append(&mut waiters);
                }
                if self.experiment_id.is_some() {
                    self.dispatch();
                }
            }
            let idle = self.pending.is_empty() && self.inflight.is_empty();
            if idle {
                for w in self.waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            if disconnected || stop_at.is_some_and(|t| idle || Instant::now() >= t) {
                break;
            }
            let wait = self
                .retry_at
                .map_or(TICK, |t| t.saturating_duration_since(Instant::now()))
                .min(TICK);
            tokio::select! {
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    self.finished(done);
                }
                msg = control.recv() => match msg {
                    Some(Control::Flush(reply)) => self.waiters.push(reply),
                    Some(Control::Stop(deadline)) => stop_at = Some(Instant::now() + deadline),
                    None => stop_at = Some(Instant::now()),
                },
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.inflight.abort_all();
        let _ = self.drain();
        let lost = QUEUED.swap(0, Ordering::SeqCst);
        if lost > 0 {
            crate::metrics::record_dropped("mlflow", lost as u64);
            tracing::error!(
                target: "hyperkit_obs::mlflow",
                runs = lost,
                target_store = %self.state.target,
                "{lost} MLflow runs were not delivered before shutdown; they are counted in \
                 hyperkit_obs_dropped_total{{sink=\"mlflow\"}}"
            );
        }
        self.rx
    }

    /// Moves what callers queued into `pending`. Returns whether the
    /// channel is gone.
    fn drain(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Item::Call {
                    id,
                    status,
                    end_ms,
                    elapsed,
                    usage,
                    error_type,
                }) => {
                    let usage = usage.unwrap_or_default();
                    let mut record = ModelRun {
                        model: id.model(),
                        task: id.task(),
                        status,
                        end_ms,
                        latency: elapsed,
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                        accepted: usage.accepted,
                        error_type,
                        call_id: Some(id.to_string()),
                    }
                    .record();
                    for (accepted, at) in self.early.remove(&id.seq()).unwrap_or_default() {
                        record.metrics.push(acceptance_metric(accepted, at));
                    }
                    self.pending.push_back(Job::Run {
                        seq: id.seq(),
                        record,
                        run_id: None,
                        ambiguous: false,
                    });
                }
                Ok(Item::Acceptance {
                    seq,
                    accepted,
                    at_ms,
                }) => self.acceptance(seq, accepted, at_ms),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn acceptance(&mut self, seq: u64, accepted: bool, at_ms: i64) {
        if let Some(run_id) = self.remembered.get(&seq) {
            self.pending.push_back(Job::Accept {
                run_id: run_id.clone(),
                accepted,
                at_ms,
            });
        } else if self.inflight_seqs.contains(&seq) {
            self.late.entry(seq).or_default().push((accepted, at_ms));
        } else if let Some(Job::Run { record, .. }) = self
            .pending
            .iter_mut()
            .find(|j| matches!(j, Job::Run { seq: s, .. } if *s == seq))
        {
            record.metrics.push(acceptance_metric(accepted, at_ms));
        } else if self.early.len() < REMEMBERED {
            // Recorded inside the call, before it finished.
            self.early.entry(seq).or_default().push((accepted, at_ms));
        }
    }

    async fn resolve_experiment(&mut self) {
        let result = match &self.target {
            Target::Rest(client) => client.get_or_create_experiment(&self.experiment).await,
            Target::File(store) => store.get_or_create_experiment(&self.experiment),
            Target::Discard => Ok(String::new()),
        };
        match result {
            Ok(id) => self.experiment_id = Some(id),
            Err(e) => {
                self.log_failure(&format!(
                    "cannot get or create MLflow experiment {:?} at {}: {e}; retrying",
                    self.experiment, self.state.target
                ));
                self.back_off(&e);
            }
        }
    }

    fn dispatch(&mut self) {
        let Some(experiment_id) = self.experiment_id.clone() else {
            return;
        };
        match self.target.clone() {
            Target::Discard => {
                while let Some(job) = self.pending.pop_front() {
                    self.finished(Ok((job, Ok(String::new()))));
                }
            }
            Target::File(store) => {
                while let Some(job) = self.pending.pop_front() {
                    let result = deliver_file(&store, &experiment_id, &job);
                    let waits = result.as_ref().is_err_and(|e| waits(&job, e));
                    self.finished(Ok((job, result)));
                    if waits {
                        break;
                    }
                }
            }
            Target::Rest(client) => {
                while self.inflight.len() < self.concurrency {
                    let Some(mut job) = self.pending.pop_front() else {
                        break;
                    };
                    if let Job::Run { seq, .. } = &job {
                        self.inflight_seqs.insert(*seq);
                    }
                    let client = client.clone();
                    let experiment_id = experiment_id.clone();
                    self.inflight.spawn(async move {
                        let result = deliver_rest(&client, &experiment_id, &mut job).await;
                        (job, result)
                    });
                }
            }
        }
    }

    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) {
        let (job, result) = match done {
            Ok(done) => done,
            Err(e) => {
                // Only when aborted at shutdown, or if a delivery panicked.
                if !e.is_cancelled() {
                    QUEUED.fetch_sub(1, Ordering::Relaxed);
                    crate::metrics::record_dropped("mlflow", 1);
                    self.log_failure(&format!("an MLflow delivery task failed: {e}"));
                }
                return;
            }
        };
        if let Job::Run { seq, .. } = &job {
            self.inflight_seqs.remove(seq);
        }
        match (job, result) {
            (Job::Run { seq, .. }, Ok(run_id)) => {
                QUEUED.fetch_sub(1, Ordering::Relaxed);
                self.state.delivered.fetch_add(1, Ordering::Relaxed);
                self.state.failing.store(false, Ordering::Relaxed);
                self.backoff = Duration::ZERO;
                for (accepted, at_ms) in self.late.remove(&seq).unwrap_or_default() {
                    self.pending.push_back(Job::Accept {
                        run_id: run_id.clone(),
                        accepted,
                        at_ms,
                    });
                }
                self.remember(seq, run_id);
            }
            (Job::Accept { .. }, Ok(_)) => {
                self.backoff = Duration::ZERO;
            }
            (mut job, Err(e)) if waits(&job, &e) => {
                if e.is_experiment_gone() {
                    // Deleted or purged since it was resolved: resolved
                    // again by name before the next create, which finds
                    // it restored, makes it anew, or waits.
                    self.experiment_id = None;
                }
                if let Job::Run { seq, record, .. } = &mut job {
                    for (accepted, at_ms) in self.late.remove(seq).unwrap_or_default() {
                        record.metrics.push(acceptance_metric(accepted, at_ms));
                    }
                }
                self.pending.push_front(job);
                self.log_failure(&format!(
                    "MLflow at {} is not accepting runs ({e}); {} runs wait and will be retried",
                    self.state.target,
                    QUEUED.load(Ordering::Relaxed)
                ));
                self.back_off(&e);
            }
            (
                Job::Run {
                    seq,
                    record,
                    run_id,
                    ..
                },
                Err(e),
            ) => {
                self.late.remove(&seq);
                QUEUED.fetch_sub(1, Ordering::Relaxed);
                self.state.failed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::record_dropped("mlflow", 1);
                let call = record.tag(CALL_ID_TAG).unwrap_or("?");
                self.log_failure(&match run_id {
                    Some(run_id) => format!(
                        "MLflow refused run {run_id} (call {call}) after creating it; the run \
                         is marked FAILED and the call counted as dropped: {e}"
                    ),
                    None => format!(
                        "the MLflow run {:?} of call {call} could not be delivered and is \
                         dropped: {e}",
                        record.run_name
                    ),
                });
            }
            (Job::Accept { run_id, .. }, Err(e)) => {
                self.log_failure(&format!(
                    "the acceptance of MLflow run {run_id} could not be logged: {e}"
                ));
            }
        }
    }

    fn remember(&mut self, seq: u64, run_id: String) {
        if self.remembered_order.len() >= REMEMBERED
            && let Some(old) = self.remembered_order.pop_front()
        {
            self.remembered.remove(&old);
        }
        self.remembered_order.push_back(seq);
        self.remembered.insert(seq, run_id);
    }

    fn back_off(&mut self, e: &MlflowError) {
        self.state.failing.store(true, Ordering::Relaxed);
        *self
            .state
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        let now = Instant::now();
        if self.retry_at.is_some_and(|t| t > now) {
            // Already waiting: runs that were in flight together fail
            // together, and count as one failure, not one doubling each.
            return;
        }
        self.backoff =
            crate::util::next_backoff(self.backoff, Duration::from_millis(250), MAX_BACKOFF);
        self.retry_at = Some(now + self.backoff);
    }

    /// Logs a failure, at most once every 10 s; the next log says how many
    /// were not shown.
    fn log_failure(&mut self, message: &str) {
        *self
            .state
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message.to_owned());
        if let Some(suppressed) = self.failure_log.admit() {
            tracing::error!(target: "hyperkit_obs::mlflow", suppressed, "{message}");
        }
    }
}

/// Whether the exporter keeps a run after `e` and tries again: the server
/// is unreachable or overloaded, or answered with something that is not
/// MLflow's (a proxy's malformed page).
fn is_transient(e: &MlflowError) -> bool {
    e.is_transient() || matches!(e, MlflowError::Decode { .. })
}

/// Whether the exporter keeps `job` after `e` and tries again: `e` is
/// transient, or the run was refused for want of its experiment, which is
/// then resolved again.
fn waits(job: &Job, e: &MlflowError) -> bool {
    is_transient(e) || (matches!(job, Job::Run { run_id: None, .. }) && e.is_experiment_gone())
}

/// Whether a failed create may have created the run anyway.
fn may_have_taken_effect(e: &MlflowError) -> bool {
    match e {
        MlflowError::Transport { maybe_sent, .. } => *maybe_sent,
        MlflowError::Api { status, .. } | MlflowError::Http { status, .. } => {
            *status >= 500 && *status != 503
        }
        MlflowError::Decode { .. } => true,
        _ => false,
    }
}

async fn deliver_rest(
    client: &MlflowClient,
    experiment_id: &str,
    job: &mut Job,
) -> Result<String, MlflowError> {
    match job {
        Job::Accept {
            run_id,
            accepted,
            at_ms,
        } => {
            client
                .log_batch(run_id, &[acceptance_metric(*accepted, *at_ms)], &[], &[])
                .await?;
            Ok(run_id.clone())
        }
        Job::Run {
            record,
            run_id,
            ambiguous,
            ..
        } => {
            if run_id.is_none() && *ambiguous {
                if let Some(call_id) = record.tag(CALL_ID_TAG) {
                    let filter = format!("tags.`{CALL_ID_TAG}` = '{call_id}'");
                    // Deleted already, it is still the call's run: not
                    // made again.
                    let found = client
                        .search_runs_in(ViewType::All, &[experiment_id], &filter, 1, None)
                        .await?;
                    *run_id = found.runs.into_iter().next().map(|r| r.info.run_id);
                }
                *ambiguous = false;
            }
            let id = match run_id {
                Some(id) => id.clone(),
                None => {
                    match client
                        .create_run(
                            experiment_id,
                            &record.run_name,
                            record.start_time,
                            &record.tags,
                        )
                        .await
                    {
                        Ok(info) => {
                            *run_id = Some(info.run_id.clone());
                            info.run_id
                        }
                        Err(e) => {
                            *ambiguous = may_have_taken_effect(&e);
                            return Err(e);
                        }
                    }
                }
            };
            if let Err(e) = client.complete_run(&id, record).await {
                if !is_transient(&e) {
                    // Refused for good: ended FAILED rather than left
                    // RUNNING, as Python's `with start_run()` ends a run
                    // whose logging raised. Best effort: the refusal is
                    // what is reported.
                    let _ = client
                        .update_run(&id, RunStatus::Failed, record.end_time)
                        .await;
                }
                return Err(e);
            }
            Ok(id)
        }
    }
}

fn deliver_file(store: &FileStore, experiment_id: &str, job: &Job) -> Result<String, MlflowError> {
    match job {
        Job::Accept {
            run_id,
            accepted,
            at_ms,
        } => {
            store.log_metric(run_id, &acceptance_metric(*accepted, *at_ms))?;
            Ok(run_id.clone())
        }
        Job::Run { record, .. } => store.log_run(experiment_id, record),
    }
}
