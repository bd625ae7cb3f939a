//! The MLflow sink: `#[track_model]` calls become MLflow runs, off the
//! caller's path.
//!
//! [`start`] registers a [`CallSink`](crate::calls::CallSink) that turns
//! each finished model call (and each late acceptance) into an item for a
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

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::client::MlflowClient;
use super::config::{MlflowConfig, TrackingTarget};
use super::error::MlflowError;
use super::file_store::FileStore;
use super::run::{CALL_ID_TAG, ModelRun, acceptance_metric};
use super::types::{RunRecord, RunStatus, ViewType};
use crate::calls::{CallSink, Feedback, FinishedCall, Registration};
use crate::export::{self, Delivery, Exporter, Guard, Handle, SinkStatus};
use crate::model::{CallId, Usage};
use crate::net::Blocking;
use crate::track::Status;

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
        usage: Option<Usage>,
        error_type: Option<&'static str>,
    },
    /// An acceptance recorded after the call returned.
    Acceptance {
        seq: u64,
        accepted: bool,
        at_ms: i64,
    },
    /// A run on its way, kept for another attempt.
    Run(Box<RunJob>),
    /// An acceptance of a delivered run, kept for another attempt.
    Accept {
        run_id: String,
        accepted: bool,
        at_ms: i64,
    },
}

pub(crate) struct RunJob {
    seq: u64,
    record: RunRecord,
    run_id: Option<String>,
    /// A create whose effect is unknown happened: look for the run by its
    /// call id before creating it again.
    ambiguous: bool,
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
    registration: Option<Registration>,
    guard: Option<Guard<Item>>,
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
        // Calls from now on are not queued.
        self.registration.take();
        if let Some(guard) = self.guard.take() {
            guard.shutdown(deadline);
        }
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
        registration: Some(registration),
        guard: Some(guard),
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
            usage: call.usage,
            error_type: call.error_type,
        });
    }

    fn on_feedback(&self, feedback: &Feedback) {
        match feedback {
            Feedback::Acceptance {
                call,
                accepted,
                at_ms,
            } => {
                self.0.send(Item::Acceptance {
                    seq: call.seq(),
                    accepted: *accepted,
                    at_ms: *at_ms,
                });
            }
        }
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
    /// Acceptances that arrived before their call finished.
    early: HashMap<u64, Vec<(bool, i64)>>,
    remembered: HashMap<u64, String>,
    remembered_order: VecDeque<u64>,
    /// How many runs `remembered` keeps (and `early` waits for).
    remember: usize,
    concurrency: usize,
    description: String,
}

/// One unit of delivery work.
enum Job {
    Run(Box<RunJob>),
    Accept {
        run_id: String,
        accepted: bool,
        at_ms: i64,
    },
}

impl Job {
    fn into_item(self) -> Item {
        match self {
            Job::Run(run) => Item::Run(run),
            Job::Accept {
                run_id,
                accepted,
                at_ms,
            } => Item::Accept {
                run_id,
                accepted,
                at_ms,
            },
        }
    }
}

type Done = (Job, Result<String, MlflowError>);

impl RunExporter {
    fn resolve_experiment(&mut self, delivery: &mut Delivery<'_, Item>) -> Option<String> {
        if let Some(id) = &self.experiment_id {
            return Some(id.clone());
        }
        let result = match &self.target {
            Target::Rest(client) => self
                .runtime
                .run_until(
                    || delivery.deadline(),
                    client.get_or_create_experiment(&self.experiment),
                )
                .unwrap_or_else(|| {
                    Err(MlflowError::Setup(
                        "stopped before the experiment was resolved".to_owned(),
                    ))
                }),
            Target::File(store) => store.get_or_create_experiment(&self.experiment),
            Target::Discard => Ok(String::new()),
        };
        match result {
            Ok(id) => {
                self.experiment_id = Some(id.clone());
                Some(id)
            }
            Err(e) => {
                delivery.fail(format!(
                    "cannot get or create MLflow experiment {:?} at {}: {e}; retrying",
                    self.experiment, self.description
                ));
                None
            }
        }
    }

    /// Turns the batch into jobs: calls become runs (with the acceptances
    /// that came before or with them), acceptances of delivered runs
    /// become their own jobs.
    fn jobs(&mut self, batch: Vec<Item>) -> Vec<Job> {
        let mut jobs: Vec<Job> = Vec::with_capacity(batch.len());
        let mut run_at: HashMap<u64, usize> = HashMap::new();
        for item in batch {
            match item {
                Item::Call {
                    id,
                    status,
                    end_ms,
                    elapsed,
                    usage,
                    error_type,
                } => {
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
                    run_at.insert(id.seq(), jobs.len());
                    jobs.push(Job::Run(Box::new(RunJob {
                        seq: id.seq(),
                        record,
                        run_id: None,
                        ambiguous: false,
                    })));
                }
                Item::Run(run) => {
                    run_at.insert(run.seq, jobs.len());
                    jobs.push(Job::Run(run));
                }
                Item::Acceptance {
                    seq,
                    accepted,
                    at_ms,
                } => {
                    if let Some(run_id) = self.remembered.get(&seq) {
                        jobs.push(Job::Accept {
                            run_id: run_id.clone(),
                            accepted,
                            at_ms,
                        });
                    } else if let Some(Job::Run(run)) = run_at.get(&seq).map(|&i| &mut jobs[i]) {
                        run.record.metrics.push(acceptance_metric(accepted, at_ms));
                    } else if self.early.len() < self.remember {
                        // Recorded inside the call, before it finished.
                        self.early.entry(seq).or_default().push((accepted, at_ms));
                    }
                }
                Item::Accept {
                    run_id,
                    accepted,
                    at_ms,
                } => jobs.push(Job::Accept {
                    run_id,
                    accepted,
                    at_ms,
                }),
            }
        }
        jobs
    }

    /// Delivers `jobs`, runs before acceptances (an acceptance of a run of
    /// this batch is part of that run's log-batch already). Returns each
    /// job attempted with its result, and the jobs not attempted (after a
    /// failure the rest must wait for, in order).
    fn deliver(
        &mut self,
        experiment_id: &str,
        jobs: Vec<Job>,
        delivery: &mut Delivery<'_, Item>,
    ) -> (Vec<Done>, Vec<Job>) {
        match self.target.clone() {
            Target::Discard => (
                jobs.into_iter().map(|j| (j, Ok(String::new()))).collect(),
                Vec::new(),
            ),
            Target::File(store) => {
                let mut done = Vec::with_capacity(jobs.len());
                let mut jobs = jobs.into_iter();
                for job in jobs.by_ref() {
                    let result = deliver_file(&store, experiment_id, &job);
                    let stop = result.as_ref().is_err_and(|e| waits(&job, e));
                    done.push((job, result));
                    if stop {
                        break;
                    }
                }
                (done, jobs.collect())
            }
            Target::Rest(client) => {
                let total = jobs.len();
                let mut done = Vec::with_capacity(total);
                let finished = self.runtime.run_until(
                    || delivery.deadline(),
                    deliver_concurrently(&client, experiment_id, jobs, self.concurrency, &mut done),
                );
                if finished.is_none() {
                    // The stop deadline passed: what did not finish is lost,
                    // and counted.
                    let lost = total - done.len();
                    delivery.give_up(lost);
                    delivery.fail(format!(
                        "{lost} MLflow runs were not delivered before shutdown; they are \
                         counted in hyperkit_obs_dropped_total{{sink=\"mlflow\"}}"
                    ));
                }
                (done, Vec::new())
            }
        }
    }

    fn remember(&mut self, seq: u64, run_id: String) {
        if self.remembered_order.len() >= self.remember
            && let Some(old) = self.remembered_order.pop_front()
        {
            self.remembered.remove(&old);
        }
        self.remembered_order.push_back(seq);
        self.remembered.insert(seq, run_id);
    }
}

impl Exporter for RunExporter {
    type Item = Item;

    /// Runs take the places of `HYPERKIT_MLFLOW_QUEUE_CAPACITY`; late
    /// acceptances are bounded apart, by as many again.
    fn counted(item: &Item) -> bool {
        matches!(item, Item::Call { .. } | Item::Run(_))
    }

    fn export(&mut self, batch: Vec<Item>, delivery: &mut Delivery<'_, Item>) {
        let Some(experiment_id) = self.resolve_experiment(delivery) else {
            delivery.retry_all(batch);
            return;
        };
        let jobs = self.jobs(batch);
        let (mut done, untried) = self.deliver(&experiment_id, jobs, delivery);
        // Retried in the order they came, whatever order they finished in.
        done.sort_by_key(|(job, _)| match job {
            Job::Run(run) => (0, run.seq),
            Job::Accept { .. } => (1, 0),
        });
        let mut waiting = 0;
        let mut last_wait = None;
        for (job, result) in done {
            match (job, result) {
                (Job::Run(run), Ok(run_id)) => self.remember(run.seq, run_id),
                (Job::Accept { .. }, Ok(_)) => {}
                (job, Err(e)) if waits(&job, &e) => {
                    if e.is_experiment_gone() {
                        // Deleted or purged since it was resolved: resolved
                        // again by name before the next create, which finds
                        // it restored, makes it anew, or waits.
                        self.experiment_id = None;
                    }
                    waiting += 1;
                    last_wait = Some(e);
                    delivery.retry(job.into_item());
                }
                (Job::Run(run), Err(e)) => {
                    delivery.reject(1);
                    let call = run.record.tag(CALL_ID_TAG).unwrap_or("?");
                    delivery.fail(match &run.run_id {
                        Some(run_id) => format!(
                            "MLflow refused run {run_id} (call {call}) after creating it; the run \
                             is marked FAILED and the call counted as dropped: {e}"
                        ),
                        None => format!(
                            "the MLflow run {:?} of call {call} could not be delivered and is \
                             dropped: {e}",
                            run.record.run_name
                        ),
                    });
                }
                (Job::Accept { run_id, .. }, Err(e)) => {
                    delivery.reject(1);
                    delivery.fail(format!(
                        "the acceptance of MLflow run {run_id} could not be logged: {e}"
                    ));
                }
            }
        }
        delivery.retry_all(untried.into_iter().map(Job::into_item));
        if let Some(e) = last_wait {
            delivery.fail(format!(
                "MLflow at {} is not accepting runs ({e}); {waiting} runs wait and will be retried",
                self.description
            ));
        }
    }
}

/// Delivers `jobs` with at most `concurrency` under way, each job with its
/// result into `done` as it finishes (so that what finished before a stop
/// deadline is known).
async fn deliver_concurrently(
    client: &MlflowClient,
    experiment_id: &str,
    jobs: Vec<Job>,
    concurrency: usize,
    done: &mut Vec<Done>,
) {
    let (runs, accepts): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| matches!(j, Job::Run(_)));
    for phase in [runs, accepts] {
        let mut set = tokio::task::JoinSet::new();
        let mut jobs = phase.into_iter();
        loop {
            while set.len() < concurrency {
                let Some(mut job) = jobs.next() else {
                    break;
                };
                let client = client.clone();
                let experiment_id = experiment_id.to_owned();
                set.spawn(async move {
                    let result = deliver_rest(&client, &experiment_id, &mut job).await;
                    (job, result)
                });
            }
            match set.join_next().await {
                Some(Ok(d)) => done.push(d),
                // A delivery task only fails by panicking; its job is lost.
                Some(Err(e)) => tracing::error!(
                    target: crate::export::LOG_TARGET,
                    sink = SINK,
                    "an MLflow delivery task failed: {e}"
                ),
                None => break,
            }
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
    is_transient(e)
        || (matches!(job, Job::Run(run) if run.run_id.is_none()) && e.is_experiment_gone())
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
        Job::Run(run) => {
            let RunJob {
                record,
                run_id,
                ambiguous,
                ..
            } = &mut **run;
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
        Job::Run(run) => store.log_run(experiment_id, &run.record),
    }
}
