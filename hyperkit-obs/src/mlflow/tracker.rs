//! [`ExperimentTracker`]: the seed's API in Rust, logging and reading model
//! runs directly (not through the exporter's queue).

use std::time::Duration;

use super::client::MlflowClient;
use super::compare::{CompareFilter, Comparison};
use super::config::{MlflowConfig, TrackingTarget};
use super::error::MlflowError;
use super::file_store::FileStore;
use super::run::ModelRun;
use super::types::Run;
use crate::track::Status;
use crate::util::unix_ms as now_ms;

/// How often a model's outputs were accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptanceRate {
    /// Runs whose output was accepted (metric `accepted` = 1).
    pub accepted: u64,
    /// Runs whose output was rejected (metric `accepted` = 0).
    pub rejected: u64,
    /// Runs with no decision recorded.
    pub undecided: u64,
}

impl AcceptanceRate {
    /// `accepted / (accepted + rejected)`, or `None` with no decision yet.
    pub fn rate(&self) -> Option<f64> {
        let decided = self.accepted + self.rejected;
        #[allow(clippy::cast_precision_loss)]
        (decided > 0).then(|| self.accepted as f64 / decided as f64)
    }

    fn count(&mut self, run: &Run) {
        match run.data.metric("accepted") {
            Some(v) if v >= 0.5 => self.accepted += 1,
            Some(_) => self.rejected += 1,
            None => self.undecided += 1,
        }
    }
}

#[derive(Clone, Debug)]
enum Store {
    Rest(MlflowClient),
    File(FileStore),
}

/// Logs model runs to one experiment and reads their acceptance rate, on
/// the server or file store `MLFLOW_TRACKING_URI` names.
///
/// ```no_run
/// # async fn demo() -> Result<(), hyperkit_obs::mlflow::MlflowError> {
/// use std::time::Duration;
/// use hyperkit_obs::mlflow::ExperimentTracker;
///
/// let tracker = ExperimentTracker::new("codegen-eval").await?;
/// tracker
///     .log_model_run("small-1", "codegen", 812, 164, Duration::from_millis(1430), Some(true))
///     .await?;
/// let rate = tracker.acceptance_rate("small-1").await?;
/// println!("{:?} of {} decided", rate.rate(), rate.accepted + rate.rejected);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ExperimentTracker {
    store: Store,
    experiment_id: String,
    experiment: String,
}

impl ExperimentTracker {
    /// The experiment `experiment` (created if missing) on the store the
    /// environment configures.
    pub async fn new(experiment: &str) -> Result<Self, MlflowError> {
        let config =
            crate::MonitoringConfig::from_env().map_err(|e| MlflowError::Setup(e.to_string()))?;
        Self::with_config(experiment, &config.mlflow).await
    }

    /// The experiment `experiment` on the store `config` names.
    pub async fn with_config(experiment: &str, config: &MlflowConfig) -> Result<Self, MlflowError> {
        let (store, experiment_id) = match &config.target {
            TrackingTarget::Server(_) => {
                let client = MlflowClient::new(config)?;
                let id = client.get_or_create_experiment(experiment).await?;
                (Store::Rest(client), id)
            }
            TrackingTarget::FileStore(path) => {
                let store = FileStore::open(path)?;
                let id = store.get_or_create_experiment(experiment)?;
                (Store::File(store), id)
            }
        };
        Ok(ExperimentTracker {
            store,
            experiment_id,
            experiment: experiment.to_owned(),
        })
    }

    /// The existing experiment `experiment` on the store `config` names, or
    /// `None` when there is no active experiment of that name (a deleted one
    /// counts as none). Unlike [`with_config`](Self::with_config) it never
    /// creates the experiment, nor a file store directory that does not
    /// exist (an existing one gets what [`FileStore::open`] adds when
    /// missing: `.trash` and `Default`).
    pub async fn open(
        experiment: &str,
        config: &MlflowConfig,
    ) -> Result<Option<Self>, MlflowError> {
        let (store, found) = match &config.target {
            TrackingTarget::Server(_) => {
                let client = MlflowClient::new(config)?;
                let found = client.get_experiment_by_name(experiment).await?;
                (Store::Rest(client), found)
            }
            TrackingTarget::FileStore(path) => {
                if !path.is_dir() {
                    return Ok(None);
                }
                let store = FileStore::open(path)?;
                let found = store.experiment_by_name(experiment)?;
                (Store::File(store), found)
            }
        };
        Ok(found
            .filter(|e| e.lifecycle_stage == "active")
            .map(|e| ExperimentTracker {
                store,
                experiment_id: e.experiment_id,
                experiment: experiment.to_owned(),
            }))
    }

    /// The experiment's id.
    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    /// The experiment's name.
    pub fn experiment(&self) -> &str {
        &self.experiment
    }

    /// Logs one model call as a finished run (the same run
    /// `#[track_model]` logs) and returns its id.
    pub async fn log_model_run(
        &self,
        model: &str,
        task: &str,
        input_tokens: u64,
        output_tokens: u64,
        latency: Duration,
        accepted: Option<bool>,
    ) -> Result<String, MlflowError> {
        let record = ModelRun {
            model,
            task,
            provider: None,
            status: Status::Success,
            end_ms: now_ms(),
            latency,
            time_to_first_token: None,
            input_tokens: Some(input_tokens),
            output_tokens: Some(output_tokens),
            accepted,
            cost_usd: None,
            error_type: None,
            call_id: None,
            trace_id: crate::trace::current().map(|c| c.trace_id().to_string()),
        }
        .record();
        match &self.store {
            Store::Rest(client) => client.log_run(&self.experiment_id, &record).await,
            Store::File(store) => store.log_run(&self.experiment_id, &record),
        }
    }

    /// The acceptance rate of `model` over every run of the experiment
    /// (all pages, not only the first 1,000).
    pub async fn acceptance_rate(&self, model: &str) -> Result<AcceptanceRate, MlflowError> {
        self.acceptance_rate_for(model, None).await
    }

    /// The acceptance rate of `model`, for one task when `task` is given.
    pub async fn acceptance_rate_for(
        &self,
        model: &str,
        task: Option<&str>,
    ) -> Result<AcceptanceRate, MlflowError> {
        let mut rate = AcceptanceRate::default();
        match &self.store {
            Store::Rest(client) => {
                let mut filter = format!("params.model = '{}'", quote(model));
                if let Some(task) = task {
                    filter.push_str(&format!(" and params.task = '{}'", quote(task)));
                }
                for run in client
                    .search_all_runs(&[&self.experiment_id], &filter)
                    .await?
                {
                    rate.count(&run);
                }
            }
            Store::File(store) => {
                for run in store.runs(&self.experiment_id)? {
                    if run.data.param("model") == Some(model)
                        && task.is_none_or(|t| run.data.param("task") == Some(t))
                    {
                        rate.count(&run);
                    }
                }
            }
        }
        Ok(rate)
    }
}

impl ExperimentTracker {
    /// Every run of the experiment `filter` admits (all pages), compared
    /// per model and task ([`compare`](super::compare())).
    pub async fn compare(&self, filter: &CompareFilter) -> Result<Comparison, MlflowError> {
        let runs = match &self.store {
            Store::Rest(client) => {
                client
                    .search_all_runs(&[&self.experiment_id], &filter.search_filter())
                    .await?
            }
            Store::File(store) => store.runs(&self.experiment_id)?,
        };
        Ok(super::compare::compare(&runs, filter))
    }
}

/// Escapes a value for a single-quoted string of MLflow's filter syntax.
fn quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\'', "\\'")
}
