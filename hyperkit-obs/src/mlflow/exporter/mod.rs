//! The MLflow sink: `#[track_model]` calls become MLflow runs, off the
//! caller's path.
//!
//! [`start`] registers a [`CallSink`](crate::calls::CallSink) that turns
//! each finished model call (and each late acceptance or score) into an item for a
//! sink on the shared export runtime ([`crate::export`]): the caller pays
//! one send on its bounded queue, `HYPERKIT_MLFLOW_QUEUE_CAPACITY` items,
//! beyond which calls are dropped and counted in
//! `hyperkit_obs_dropped_total{sink="mlflow"}`.
//!
//! Only MLflow's side is here. To a tracking server it delivers up to
//! `HYPERKIT_MLFLOW_CONCURRENCY` runs of a batch at once (create,
//! log-batch, update: the fewest requests MLflow's API allows for a run with
//! params), or it writes to the file store. A failure the server may
//! recover from (it is down, overloaded, answers 5xx, or the experiment was
//! deleted and may be restored) keeps the run for the runtime to retry with
//! backoff, so a server that is down for a while loses nothing within the
//! bound; runs that fail together count as one failure. A run MLflow refuses
//! is logged as an error, counted as rejected, and ended `FAILED` if it was
//! created.
//!
//! This module holds the sink's life (start, the guard, flush, status)
//! and what its queue carries; `batch` turns a batch into jobs and settles
//! their results, `deliver` delivers the jobs to a server or a file store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::client::MlflowClient;
use super::config::{MlflowConfig, TrackingTarget};
use super::error::MlflowError;
use super::file_store::FileStore;
use super::run::acceptance_metric;
use super::types::{Metric, RunRecord};
use crate::calls::{CallSink, Feedback, FinishedCall, Subscribed};
use crate::export::{self, Handle, SinkStatus};
use crate::model::{CallId, Usage};
use crate::net::Blocking;
use crate::track::Status;

mod batch;
mod deliver;

/// The sink name: its `sink` label, readiness check and thread.
pub const SINK: &str = "mlflow";
/// The default time the guard's drop waits for queued runs.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// Items per batch: enough to keep the concurrency busy.
const BATCH: usize = 256;

/// What the sink queues, and what a retry keeps.
pub(crate) enum Item {
    /// A finished model call, as the caller handed it over.
    Call {
        id: CallId,
        status: Status,
        end_ms: i64,
        elapsed: Duration,
        time_to_first_token: Option<Duration>,
        usage: Option<Usage>,
        cost_usd: Option<f64>,
        error_type: Option<&'static str>,
        trace_id: Option<crate::trace::TraceId>,
        provider: Option<&'static str>,
        /// The call's span was sampled: with the MLflow traces sink running
        /// it is a trace there, linked to the run.
        sampled: bool,
    },
    /// A metric learnt after the call returned (its acceptance, a
    /// score): logged with its run, or to it once it is delivered.
    Feedback { seq: u64, metric: Metric },
    /// A run on its way, kept for another attempt.
    Run(Box<RunJob>),
    /// A late metric of a delivered run, kept for another attempt.
    Late { run_id: String, metric: Metric },
}

pub(crate) struct RunJob {
    seq: u64,
    record: RunRecord,
    run_id: Option<String>,
    /// A create whose effect is unknown happened: look for the run by its
    /// call id before creating it again.
    ambiguous: bool,
    /// MLflow's id of the call's trace, to link to the run once it exists.
    link_trace: Option<String>,
}

/// The running sink's handle, for [`flush`] and [`status`].
static RUNNING: Mutex<Option<Handle<Item>>> = Mutex::new(None);

fn running() -> Option<Handle<Item>> {
    RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The state of the running exporter, if one runs.
pub fn status() -> Option<SinkStatus> {
    running().map(|h| h.status())
}

/// Waits until every run queued so far is delivered (or given up), for at
/// most `deadline`. Returns whether everything was delivered in time; `true`
/// when no exporter runs. Never call it from the exporter's own thread.
pub fn flush(deadline: Duration) -> bool {
    running().is_none_or(|h| h.flush(deadline))
}

/// Runs the exporter; dropping it delivers what is queued (within
/// [`SHUTDOWN_DEADLINE`]) and stops it.
#[must_use = "dropping the guard stops the exporter"]
pub struct MlflowGuard {
    sink: Subscribed<Item>,
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
        self.sink.stop(deadline);
        *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) = None;
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
    let mut slot = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_some() {
        return Err(MlflowError::Setup(
            "an MLflow exporter is already running".to_owned(),
        ));
    }
    let description = match &target {
        Target::Rest(c) => c.base_url().to_owned(),
        Target::File(s) => format!("file store {}", s.root().display()),
        Target::Discard => "nowhere (discarding)".to_owned(),
    };
    let runtime = Blocking::new()
        .map_err(|e| MlflowError::Setup(format!("cannot build the exporter's runtime: {e}")))?;
    let exporter = RunExporter {
        target,
        runtime,
        experiment: config.experiment_name.clone(),
        experiment_id: None,
        early: HashMap::new(),
        remembered: HashMap::new(),
        remembered_order: VecDeque::new(),
        remember: config.remembered_runs.max(1),
        concurrency: config.concurrency.max(1),
        description: description.clone(),
    };
    let options = export::Options::new(SINK, description)
        .capacity(config.queue_capacity)
        .batch(BATCH, 0)
        .retry(Duration::from_millis(250), Duration::from_secs(30))
        .shutdown_deadline(SHUTDOWN_DEADLINE);
    let guard = export::spawn(options, exporter)
        .map_err(|e| MlflowError::Setup(format!("cannot start the exporter: {e}")))?;
    let handle = guard.handle();
    *slot = Some(handle.clone());
    drop(slot);
    let registration = crate::calls::register(ModelCalls(handle));
    Ok(MlflowGuard {
        sink: Subscribed::new(registration, guard),
    })
}

/// Hands the finished model calls and acceptances to the exporter.
struct ModelCalls(Handle<Item>);

impl CallSink for ModelCalls {
    #[inline]
    fn on_call(&self, call: &FinishedCall<'_>) {
        let Some(id) = call.call_id else {
            return;
        };
        self.0.send(Item::Call {
            id,
            status: call.status,
            end_ms: crate::util::system_ms(call.end),
            elapsed: call.duration,
            time_to_first_token: call.time_to_first_token,
            usage: call.usage,
            cost_usd: call.cost_usd,
            error_type: call.error_type,
            trace_id: call.trace.map(crate::trace::SpanContext::trace_id),
            provider: call.provider,
            sampled: call
                .trace
                .is_some_and(crate::trace::SpanContext::is_sampled),
        });
    }

    fn on_feedback(&self, feedback: &Feedback) {
        let (seq, metric) = match feedback {
            Feedback::Acceptance {
                call,
                accepted,
                at_ms,
            } => (call.seq(), acceptance_metric(*accepted, *at_ms)),
            Feedback::Score {
                call,
                name,
                value,
                at_ms,
            } => (call.seq(), Metric::new(name.clone(), *value, *at_ms)),
        };
        self.0.send(Item::Feedback { seq, metric });
    }
}

#[derive(Clone)]
enum Target {
    Rest(MlflowClient),
    File(FileStore),
    Discard,
}

struct RunExporter {
    target: Target,
    runtime: Blocking,
    experiment: String,
    experiment_id: Option<String>,
    /// Acceptances and scores that arrived before their call finished.
    early: HashMap<u64, Vec<Metric>>,
    remembered: HashMap<u64, String>,
    remembered_order: VecDeque<u64>,
    /// How many runs `remembered` keeps (and `early` waits for).
    remember: usize,
    concurrency: usize,
    description: String,
}
