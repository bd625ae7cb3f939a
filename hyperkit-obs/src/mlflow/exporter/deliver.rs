//! Delivering jobs: to a tracking server, up to the configured number at
//! once (create, log-batch, update; a create whose effect is unknown is
//! looked up by its call id before it is made again), or to the file
//! store one after the other. What counts as worth a retry is decided
//! here, and a run MLflow refuses for good is ended `FAILED` rather than
//! left `RUNNING`. A run whose call went to MLflow as a trace is linked to
//! it last (a link MLflow refuses, as a server without the endpoint does,
//! is given up without failing the run). Nothing here panics on an answer; a server delivery runs
//! in a task of its own, so even a panic there loses one job, not the
//! worker.

use super::batch::{Done, Job};
use super::{RunJob, SINK};
use crate::mlflow::client::MlflowClient;
use crate::mlflow::error::MlflowError;
use crate::mlflow::file_store::FileStore;
use crate::mlflow::run::CALL_ID_TAG;
use crate::mlflow::types::{RunStatus, ViewType};

/// Delivers `jobs` with at most `concurrency` under way, each job with its
/// result into `done` as it finishes (so that what finished before a stop
/// deadline is known).
pub(super) async fn deliver_concurrently(
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
pub(super) fn waits(job: &Job, e: &MlflowError) -> bool {
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
        Job::Late { run_id, metric } => {
            client
                .log_batch(run_id, std::slice::from_ref(metric), &[], &[])
                .await?;
            Ok(run_id.clone())
        }
        Job::Run(run) => {
            let RunJob {
                record,
                run_id,
                ambiguous,
                link_trace,
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
            if let Some(trace) = link_trace.as_deref() {
                match client.link_traces_to_run(&id, &[trace]).await {
                    Err(e) if is_transient(&e) => return Err(e),
                    Err(e) => tracing::debug!(
                        target: crate::export::LOG_TARGET,
                        sink = SINK,
                        "MLflow did not link trace {trace} to run {id}: {e}"
                    ),
                    Ok(()) => {}
                }
                *link_trace = None;
            }
            Ok(id)
        }
    }
}

pub(super) fn deliver_file(
    store: &FileStore,
    experiment_id: &str,
    job: &Job,
) -> Result<String, MlflowError> {
    match job {
        Job::Late { run_id, metric } => {
            store.log_metric(run_id, metric)?;
            Ok(run_id.clone())
        }
        Job::Run(run) => store.log_run(experiment_id, &run.record),
    }
}
