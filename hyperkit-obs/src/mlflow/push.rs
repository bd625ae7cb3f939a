//! Replaying a local MLflow file store into a tracking server: the runs a
//! program logged to `./mlruns` (offline, or before a server existed)
//! copied to a server, once (`hyperkit-obs mlflow push` is this and some
//! printing).
//!
//! Every copy carries the tag [`SOURCE_RUN_TAG`] naming the local run it
//! came from, so a push run again (after an interruption, or with new
//! local runs) skips the runs the server holds, finishes a run an
//! interrupted push left half done instead of duplicating it, and does not
//! bring back a run someone deleted on the server. It only reads the file
//! store, and creates on the server only the experiments it has runs for.

use std::collections::HashMap;
use std::path::PathBuf;

use super::client::MlflowClient;
use super::error::MlflowError;
use super::file_store::FileStore;
use super::run::SOURCE_RUN_TAG;
use super::types::{Experiment, KeyValue, Run, RunRecord, ViewType};

/// The tag MLflow keeps a run's name in; a pushed run gets its name from
/// the create call instead.
const RUN_NAME_TAG: &str = "mlflow.runName";

/// What a push did in one experiment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExperimentPush {
    /// The experiment's name (the same in the store and on the server).
    pub name: String,
    /// Runs copied (or finished) by this push.
    pub pushed: usize,
    /// Runs the server already held, whole.
    pub already: usize,
    /// Runs pushed before and deleted on the server since: someone meant
    /// them gone, so they are not pushed again.
    pub deleted: usize,
}

/// What a whole push did: one entry per experiment of the store that has
/// runs, in the store's order. An experiment without runs is not created
/// on the server and has no entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Each experiment pushed.
    pub experiments: Vec<ExperimentPush>,
}

impl PushReport {
    /// Whether the store had no run to push.
    pub fn is_empty(&self) -> bool {
        self.experiments.is_empty()
    }
}

/// Why a push stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The file store's list of experiments or runs cannot be read.
    #[error("reading {}: {source}", root.display())]
    Local {
        /// The store's root directory.
        root: PathBuf,
        /// What failed.
        source: MlflowError,
    },
    /// The experiment asked for is not in the file store.
    #[error("no experiment named {name:?} in the file store {}", root.display())]
    NoSuchExperiment {
        /// The name asked for.
        name: String,
        /// The store's root directory.
        root: PathBuf,
    },
    /// Pushing one experiment failed part-way (the server refused or could
    /// not be reached, or a run's metric history could not be read). What
    /// was pushed stays on the server; pushing again resumes.
    #[error(
        "experiment {:?}: pushing to {url} failed after {} runs pushed ({} already there): {source}",
        progress.name, progress.pushed, progress.already
    )]
    Experiment {
        /// The experiments pushed whole before this one.
        done: Vec<ExperimentPush>,
        /// What this experiment's push had done when it failed.
        progress: ExperimentPush,
        /// The server's base URL.
        url: String,
        /// What failed.
        source: MlflowError,
    },
}

impl PushError {
    /// The MLflow error underneath, if there is one.
    pub fn mlflow_error(&self) -> Option<&MlflowError> {
        match self {
            PushError::Local { source, .. } | PushError::Experiment { source, .. } => Some(source),
            PushError::NoSuchExperiment { .. } => None,
        }
    }
}

/// Pushes every run of `store` (of the experiment named `experiment` only,
/// if given) that the server behind `client` does not hold yet, each
/// experiment to the server's experiment of the same name (created when
/// missing). Safe to run again: see the [module documentation](self).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use hyperkit_obs::mlflow::{FileStore, MlflowClient, push};
///
/// let store = FileStore::open("mlruns")?;
/// let client = MlflowClient::from_url("http://127.0.0.1:5000")?;
/// let report = push::push_store(&store, &client, None).await?;
/// for e in &report.experiments {
///     println!("{}: {} pushed, {} already there", e.name, e.pushed, e.already);
/// }
/// # Ok(()) }
/// ```
pub async fn push_store(
    store: &FileStore,
    client: &MlflowClient,
    experiment: Option<&str>,
) -> Result<PushReport, PushError> {
    push_store_with(store, client, experiment, |_| {}).await
}

/// [`push_store`], calling `on_experiment` as each experiment is done (a
/// command line prints its line then, not after the last experiment).
pub async fn push_store_with(
    store: &FileStore,
    client: &MlflowClient,
    experiment: Option<&str>,
    mut on_experiment: impl FnMut(&ExperimentPush),
) -> Result<PushReport, PushError> {
    let local = |source| PushError::Local {
        root: store.root().to_owned(),
        source,
    };
    let experiments: Vec<Experiment> = store
        .experiments()
        .map_err(local)?
        .into_iter()
        .filter(|e| experiment.is_none_or(|name| e.name == name))
        .collect();
    if let (Some(name), true) = (experiment, experiments.is_empty()) {
        return Err(PushError::NoSuchExperiment {
            name: name.to_owned(),
            root: store.root().to_owned(),
        });
    }
    let mut report = PushReport::default();
    for experiment in experiments {
        let runs = store.runs(&experiment.experiment_id).map_err(local)?;
        if runs.is_empty() {
            continue;
        }
        let mut progress = ExperimentPush {
            name: experiment.name,
            ..ExperimentPush::default()
        };
        if let Err(source) = push_runs(store, client, &runs, &mut progress).await {
            return Err(PushError::Experiment {
                done: report.experiments,
                progress,
                url: client.base_url().to_owned(),
                source,
            });
        }
        on_experiment(&progress);
        report.experiments.push(progress);
    }
    Ok(report)
}

/// Pushes the local `runs` of experiment `progress.name` that the server
/// does not hold yet, finishing any that an interrupted push left
/// incomplete, and counts in `progress` as it goes.
async fn push_runs(
    store: &FileStore,
    client: &MlflowClient,
    runs: &[Run],
    progress: &mut ExperimentPush,
) -> Result<(), MlflowError> {
    let experiment_id = client.get_or_create_experiment(&progress.name).await?;
    // Listed once, deleted runs included: the server's runs by the local
    // run they came from.
    let mut on_server: HashMap<String, Vec<Run>> = HashMap::new();
    for run in client
        .search_all_runs_in(ViewType::All, &[&experiment_id], "")
        .await?
    {
        if let Some(source) = run.data.tag(SOURCE_RUN_TAG) {
            on_server.entry(source.to_owned()).or_default().push(run);
        }
    }
    for local in runs {
        let copies = on_server
            .get(&local.info.run_id)
            .map_or(&[][..], Vec::as_slice);
        if copies
            .iter()
            .any(|copy| copy.info.lifecycle_stage == "deleted")
        {
            progress.deleted += 1;
            continue;
        }
        if copies.iter().any(|copy| is_complete(copy, local)) {
            progress.already += 1;
            continue;
        }
        let record = record_of(store, local)?;
        let run_id = match copies.first() {
            // Created by a push that stopped before its last step: finished
            // now (every step of `complete_run` is safe to repeat).
            Some(copy) => copy.info.run_id.clone(),
            None => {
                let mut tags = record.tags.clone();
                tags.push(KeyValue::new(SOURCE_RUN_TAG, local.info.run_id.clone()));
                client
                    .create_run(&experiment_id, &record.run_name, record.start_time, &tags)
                    .await?
                    .run_id
            }
        };
        client.complete_run(&run_id, &record).await?;
        progress.pushed += 1;
    }
    Ok(())
}

/// Whether `copy`, a server run pushed from `local`, went through every
/// step: the last one sets status and end time; params and metrics come
/// before it.
fn is_complete(copy: &Run, local: &Run) -> bool {
    copy.info.status == local.info.status
        && copy.info.end_time == local.info.end_time
        && local
            .data
            .params
            .iter()
            .all(|p| copy.data.param(&p.key).is_some())
        && local
            .data
            .metrics
            .iter()
            .all(|m| copy.data.metric(&m.key).is_some())
}

/// A local run as it is pushed: its name, times, status, params, tags
/// (without `mlflow.runName`, which the name sets, and any source tag of its
/// own) and every value of every metric.
fn record_of(store: &FileStore, run: &Run) -> Result<RunRecord, MlflowError> {
    let run_name = run
        .data
        .tag(RUN_NAME_TAG)
        .unwrap_or(&run.info.run_name)
        .to_owned();
    let mut metrics = Vec::new();
    for latest in &run.data.metrics {
        metrics.extend(store.metric_history(&run.info.run_id, &latest.key)?);
    }
    Ok(RunRecord {
        run_name,
        start_time: run.info.start_time,
        end_time: run.info.end_time,
        status: run.info.status,
        params: run.data.params.clone(),
        metrics,
        tags: run
            .data
            .tags
            .iter()
            .filter(|t| t.key != RUN_NAME_TAG && t.key != SOURCE_RUN_TAG)
            .cloned()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::{Metric, RunStatus};

    /// A fresh file store under the system's temporary directory, removed
    /// when dropped.
    struct TempStore(PathBuf);

    impl TempStore {
        fn new(name: &str) -> (TempStore, FileStore) {
            let dir = std::env::temp_dir().join(format!(
                "hyperkit-obs-push-{name}-{}-{}",
                std::process::id(),
                crate::util::random_u64()
            ));
            let store = FileStore::open(dir.join("mlruns")).unwrap();
            (TempStore(dir), store)
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn local_run(store: &FileStore) -> Run {
        let experiment = store.get_or_create_experiment("e").unwrap();
        let record = RunRecord {
            run_name: "r".to_owned(),
            start_time: 1_000,
            end_time: Some(2_000),
            status: RunStatus::Finished,
            params: vec![KeyValue::new("model", "m")],
            metrics: vec![
                Metric::new("loss", 1.0, 1_100),
                Metric {
                    step: 1,
                    ..Metric::new("loss", 0.5, 1_200)
                },
            ],
            tags: vec![
                KeyValue::new("team", "ml"),
                KeyValue::new(SOURCE_RUN_TAG, "an older store's run"),
            ],
        };
        let id = store.log_run(&experiment, &record).unwrap();
        store.run(&id).unwrap().unwrap()
    }

    #[test]
    fn a_pushed_record_has_every_metric_value_and_only_the_runs_own_tags() {
        let (_dir, store) = TempStore::new("record");
        let run = local_run(&store);
        let record = record_of(&store, &run).unwrap();
        assert_eq!(record.run_name, "r");
        assert_eq!(record.metrics.len(), 2, "{:?}", record.metrics);
        assert_eq!(record.tags, vec![KeyValue::new("team", "ml")]);
        assert_eq!(record.params, vec![KeyValue::new("model", "m")]);
        assert_eq!(
            (record.start_time, record.end_time, record.status),
            (1_000, Some(2_000), RunStatus::Finished)
        );
    }

    #[test]
    fn a_copy_is_complete_once_its_status_end_params_and_metrics_are_there() {
        let (_dir, store) = TempStore::new("complete");
        let local = local_run(&store);
        assert!(is_complete(&local, &local));
        let mut created_only = local.clone();
        created_only.data.params.clear();
        created_only.data.metrics.clear();
        created_only.info.status = RunStatus::Running;
        created_only.info.end_time = None;
        assert!(!is_complete(&created_only, &local));
        let mut no_end = local.clone();
        no_end.info.end_time = None;
        assert!(!is_complete(&no_end, &local));
    }
}
