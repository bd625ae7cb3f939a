//! Experiments of a file store: listing them, looking one up by name, and
//! creating one under the store's lock so that concurrent callers, in
//! threads or processes, make exactly one. A damaged `meta.yaml` is an
//! error naming the file, never a panic.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use super::write::file_uri;
use super::yaml::{Yaml, yaml_str};
use super::{FileStore, LOCK, META, META_TMP, TRASH, io, read_dir};
use crate::mlflow::{Experiment, MlflowError};
use crate::util::{random_u64, unix_ms as now_ms};

/// MLflow's `MAX_EXPERIMENT_NAME_LENGTH`.
const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;

impl FileStore {
    /// The active experiments, newest first (MLflow's order: creation time
    /// descending, then id).
    pub fn experiments(&self) -> Result<Vec<Experiment>, MlflowError> {
        let mut found: Vec<(i64, Experiment)> = self
            .read_experiments(&self.root)?
            .into_iter()
            .filter(|(_, e)| e.lifecycle_stage == "active")
            .collect();
        found.sort_by(|(ta, a), (tb, b)| {
            tb.cmp(ta)
                .then_with(|| a.experiment_id.cmp(&b.experiment_id))
        });
        Ok(found.into_iter().map(|(_, e)| e).collect())
    }

    /// The experiment named `name`, active or deleted (in `.trash`).
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, MlflowError> {
        for parent in [self.root.clone(), self.root.join(TRASH)] {
            if let Some((_, e)) = self
                .read_experiments(&parent)?
                .into_iter()
                .find(|(_, e)| e.name == name)
            {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The id of the active experiment named `name`, created if there is
    /// none. Safe when several threads or processes ask for the same name at
    /// once: exactly one experiment results. A deleted experiment of that
    /// name is an error, as in MLflow.
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if name.is_empty() || name.chars().count() > MAX_EXPERIMENT_NAME_LENGTH {
            return Err(MlflowError::Store {
                path: self.root.clone(),
                message: format!(
                    "invalid experiment name {name:?}: it must have 1 to {MAX_EXPERIMENT_NAME_LENGTH} characters"
                ),
            });
        }
        if let Some(id) = self.active_experiment_id(name)? {
            return Ok(id);
        }
        let _lock = self.lock()?;
        // Looked up again: another thread or process may have created it
        // while this one waited for the lock.
        if let Some(id) = self.active_experiment_id(name)? {
            return Ok(id);
        }
        loop {
            let id = (random_u64() % 900_000_000_000_000_000 + 100_000_000_000_000_000).to_string();
            if self.root.join(&id).exists() || self.root.join(TRASH).join(&id).exists() {
                continue;
            }
            self.create_experiment_dir(&id, name)?;
            return Ok(id);
        }
    }

    pub(super) fn lock(&self) -> Result<File, MlflowError> {
        let path = self.root.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // Released when the file is closed (dropped).
        file.lock().map_err(|e| io(&path, e))?;
        Ok(file)
    }

    fn active_experiment_id(&self, name: &str) -> Result<Option<String>, MlflowError> {
        match self.experiment_by_name(name)? {
            Some(e) if e.lifecycle_stage == "active" => Ok(Some(e.experiment_id)),
            Some(e) => Err(MlflowError::ExperimentDeleted {
                name: e.name,
                experiment_id: e.experiment_id,
            }),
            None => Ok(None),
        }
    }

    /// Creates `<root>/<id>/meta.yaml` (the file renamed into place, so that a
    /// reader never sees it half written).
    pub(super) fn create_experiment_dir(&self, id: &str, name: &str) -> Result<(), MlflowError> {
        let dir = self.root.join(id);
        fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
        let now = now_ms();
        let meta = format!(
            "artifact_location: {}\ncreation_time: {now}\nexperiment_id: {}\nlast_update_time: {now}\nlifecycle_stage: active\nname: {}\n",
            yaml_str(&file_uri(&dir)),
            yaml_str(id),
            yaml_str(name),
        );
        let tmp = dir.join(META_TMP);
        fs::write(&tmp, meta).map_err(|e| io(&tmp, e))?;
        let path = dir.join(META);
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    /// The experiments directly under `parent` (the root or `.trash`) with
    /// their creation times.
    fn read_experiments(&self, parent: &Path) -> Result<Vec<(i64, Experiment)>, MlflowError> {
        let mut found = Vec::new();
        if !parent.is_dir() {
            return Ok(found);
        }
        for entry in read_dir(parent)? {
            let name = entry.file_name();
            let path = entry.path();
            if name == TRASH || name == "models" || !path.is_dir() {
                continue;
            }
            if let Some(e) = self.read_experiment(&path)? {
                found.push(e);
            }
        }
        Ok(found)
    }

    /// The experiment in `dir`; `None` when it has no `meta.yaml` (being
    /// created) or names another id (MLflow ignores both).
    pub(super) fn read_experiment(
        &self,
        dir: &Path,
    ) -> Result<Option<(i64, Experiment)>, MlflowError> {
        let path = dir.join(META);
        let Some(meta) = Yaml::read(&path)? else {
            return Ok(None);
        };
        let experiment_id = meta.id(&path, "experiment_id")?;
        if dir.file_name().and_then(|n| n.to_str()) != Some(experiment_id.as_str()) {
            return Ok(None);
        }
        let experiment = Experiment {
            experiment_id,
            name: meta.string(&path, "name")?,
            lifecycle_stage: meta
                .opt_string(&path, "lifecycle_stage")?
                .unwrap_or_else(|| "active".to_owned()),
        };
        Ok(Some((
            meta.opt_int(&path, "creation_time")?.unwrap_or(0),
            experiment,
        )))
    }
}
