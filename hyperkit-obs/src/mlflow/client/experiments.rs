//! The experiments area of the API: look one up by name, create one, and
//! get-or-create that is safe when several processes race for one name.

use serde::Deserialize;
use serde_json::json;

use super::{MlflowClient, Replay};
use crate::mlflow::error::{ErrorCode, MlflowError};
use crate::mlflow::types::Experiment;

impl MlflowClient {
    /// The experiment named `name`, if there is one.
    pub async fn get_experiment_by_name(
        &self,
        name: &str,
    ) -> Result<Option<Experiment>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            experiment: Experiment,
        }
        let answer: Result<Answer, _> = self
            .call(
                reqwest::Method::GET,
                "experiments/get-by-name",
                &[("experiment_name", name)],
                None,
                Replay::Safe,
            )
            .await;
        match answer {
            Ok(a) => Ok(Some(a.experiment)),
            Err(e) if e.code() == Some(&ErrorCode::ResourceDoesNotExist) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the experiment `name` and returns its id. Fails with
    /// `RESOURCE_ALREADY_EXISTS` when the name is taken.
    pub async fn create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            experiment_id: String,
        }
        let a: Answer = self
            .post(
                "experiments/create",
                json!({ "name": name }),
                Replay::Unsafe,
            )
            .await?;
        Ok(a.experiment_id)
    }

    /// The id of the experiment `name`, created if missing. Safe when
    /// several processes do it at once: the loser of the race reads the
    /// winner's experiment. A deleted experiment is
    /// [`MlflowError::ExperimentDeleted`]: MLflow keeps its name until it is
    /// restored or purged.
    pub async fn get_or_create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if let Some(e) = self.get_experiment_by_name(name).await? {
            return active(e);
        }
        match self.create_experiment(name).await {
            Ok(id) => Ok(id),
            Err(e) if e.code() == Some(&ErrorCode::ResourceAlreadyExists) => {
                match self.get_experiment_by_name(name).await? {
                    Some(found) => active(found),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// The id of an experiment found by name, unless it is deleted.
fn active(e: Experiment) -> Result<String, MlflowError> {
    if e.lifecycle_stage == "deleted" {
        return Err(MlflowError::ExperimentDeleted {
            name: e.name,
            experiment_id: e.experiment_id,
        });
    }
    Ok(e.experiment_id)
}
