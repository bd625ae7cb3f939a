//! One batch of the sink's queue: calls become runs (with the acceptances
//! and scores that came before or with them), those of delivered runs
//! become jobs of their own, and each job's result is settled: the run id
//! remembered, the job kept for a retry when MLflow may recover, or
//! rejected, counted and reported once. Never blocks a caller: it runs
//! on the sink's worker thread.

use std::collections::HashMap;

use super::deliver::{deliver_concurrently, deliver_file, waits};
use super::{Item, RunExporter, RunJob, Target};
use crate::export::{Delivery, Exporter};
use crate::mlflow::error::MlflowError;
use crate::mlflow::run::{CALL_ID_TAG, ModelRun};
use crate::mlflow::types::Metric;

/// One unit of delivery work.
pub(super) enum Job {
    Run(Box<RunJob>),
    /// A late metric (acceptance, score) of a delivered run.
    Late {
        run_id: String,
        metric: Metric,
    },
}

impl Job {
    fn into_item(self) -> Item {
        match self {
            Job::Run(run) => Item::Run(run),
            Job::Late { run_id, metric } => Item::Late { run_id, metric },
        }
    }
}

pub(super) type Done = (Job, Result<String, MlflowError>);

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
        // Whether traces go to MLflow, read once a batch (and only for a
        // batch with a sampled call).
        let mut traces_sent: Option<bool> = None;
        let sending = crate::mlflow::traces::sending;
        for item in batch {
            match item {
                Item::Call {
                    id,
                    status,
                    end_ms,
                    elapsed,
                    time_to_first_token,
                    usage,
                    cost_usd,
                    error_type,
                    trace_id,
                    provider,
                    sampled,
                } => {
                    let usage = usage.unwrap_or_default();
                    let mut record = ModelRun {
                        model: id.model(),
                        task: id.task(),
                        provider,
                        status,
                        end_ms,
                        latency: elapsed,
                        time_to_first_token,
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                        accepted: usage.accepted,
                        cost_usd,
                        error_type,
                        call_id: Some(id.to_string()),
                        trace_id: trace_id.map(|t| t.to_string()),
                    }
                    .record();
                    record
                        .metrics
                        .extend(self.early.remove(&id.seq()).unwrap_or_default());
                    run_at.insert(id.seq(), jobs.len());
                    jobs.push(Job::Run(Box::new(RunJob {
                        seq: id.seq(),
                        record,
                        run_id: None,
                        ambiguous: false,
                        link_trace: trace_id
                            .filter(|_| sampled && *traces_sent.get_or_insert_with(sending))
                            .map(crate::mlflow::traces::mlflow_trace_id),
                    })));
                }
                Item::Run(run) => {
                    run_at.insert(run.seq, jobs.len());
                    jobs.push(Job::Run(run));
                }
                Item::Feedback { seq, metric } => {
                    if let Some(run_id) = self.remembered.get(&seq) {
                        jobs.push(Job::Late {
                            run_id: run_id.clone(),
                            metric,
                        });
                    } else if let Some(Job::Run(run)) = run_at.get(&seq).map(|&i| &mut jobs[i]) {
                        run.record.metrics.push(metric);
                    } else if self.early.len() < self.remember || self.early.contains_key(&seq) {
                        // Recorded inside the call, before it finished.
                        self.early.entry(seq).or_default().push(metric);
                    }
                }
                Item::Late { run_id, metric } => jobs.push(Job::Late { run_id, metric }),
            }
        }
        jobs
    }

    /// Delivers `jobs`, runs before late metrics (a late metric of a run of
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
            Job::Late { .. } => (1, 0),
        });
        let mut waiting = 0;
        let mut last_wait = None;
        for (job, result) in done {
            match (job, result) {
                (Job::Run(run), Ok(run_id)) => self.remember(run.seq, run_id),
                (Job::Late { .. }, Ok(_)) => {}
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
                (Job::Late { run_id, metric }, Err(e)) => {
                    delivery.reject(1);
                    delivery.fail(format!(
                        "metric {:?} of MLflow run {run_id} could not be logged: {e}",
                        metric.key
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
