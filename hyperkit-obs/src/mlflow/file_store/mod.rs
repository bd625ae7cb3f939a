//! [`FileStore`]: MLflow's local file store (`./mlruns`), written and read
//! from Rust in exactly the layout MLflow's Python `FileStore` uses, so that
//! `mlflow ui`, `mlflow server --backend-store-uri ./mlruns` and
//! `MlflowClient(tracking_uri="file://…")` read what Rust wrote, and Rust
//! reads what they wrote.
//!
//! ```text
//! mlruns/.trash/                          deleted experiments
//! mlruns/0/meta.yaml                      the Default experiment
//! mlruns/<exp>/meta.yaml                  artifact_location, creation_time, experiment_id, …
//! mlruns/<exp>/<run>/meta.yaml            artifact_uri, end_time, …, status: 3, user_id
//! mlruns/<exp>/<run>/params/<key>         the value, no newline
//! mlruns/<exp>/<run>/metrics/<key>        lines `timestamp value step`
//! mlruns/<exp>/<run>/tags/<key>           the value
//! mlruns/<exp>/<run>/artifacts/
//! ```
//!
//! A key with `/` is a subdirectory (`metrics/a/b`).
//!
//! # Consistency
//!
//! MLflow lists every directory of an experiment as a run, whatever its name,
//! and silently skips one without a `meta.yaml` (its `MissingConfigException`
//! is trapped). [`FileStore::log_run`] therefore writes a run's params,
//! metrics and tags into a directory `.tmp-<run id>` without a `meta.yaml`,
//! renames it to `<run id>`, then renames its `meta.yaml` into place: a
//! reader sees the whole run or none of it. Tags are replaced by renaming a
//! file written beside `tags/`, metric values appended with one `O_APPEND`
//! write. Experiments are created under an exclusive lock on
//! `<root>/.hyperkit-obs.lock` (a file, which MLflow ignores), after looking
//! the name up again inside the lock, so that concurrent
//! [`FileStore::get_or_create_experiment`] calls from several threads or
//! processes make one experiment.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{
    Experiment, KeyValue, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, Metric, MlflowError, Run,
    RunRecord, RunStatus, truncate_value, validate_key,
};
use crate::util::{random_u64, unix_ms as now_ms};

mod read;
mod yaml;

use read::{read_metric_file, read_run, read_run_info};
use yaml::{Yaml, yaml_str};

const TRASH: &str = ".trash";
const META: &str = "meta.yaml";
const LOCK: &str = ".hyperkit-obs.lock";
const METRICS: &str = "metrics";
const PARAMS: &str = "params";
const TAGS: &str = "tags";
const ARTIFACTS: &str = "artifacts";
/// Folders of an experiment that are not runs (`RESERVED_EXPERIMENT_FOLDERS`).
const RESERVED: [&str; 4] = ["tags", "datasets", "traces", "models"];
/// The tag holding a run's name.
const RUN_NAME_TAG: &str = "mlflow.runName";
/// MLflow's `SourceType.LOCAL`.
const SOURCE_TYPE_LOCAL: i64 = 4;
/// MLflow's `MAX_EXPERIMENT_NAME_LENGTH`.
const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;

/// MLflow's local file store at a root directory (`./mlruns`).
///
/// Every method is synchronous and touches only the file system; none
/// panics on a damaged store: a file MLflow would not have written is a
/// [`MlflowError::Store`] naming it, a failed system call an
/// [`MlflowError::Io`] naming the path.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Opens the store at `root` (made absolute), creating the directory, its
    /// `.trash` and experiment `0` (`Default`) when missing (and not
    /// deleted).
    pub fn open(root: impl Into<PathBuf>) -> Result<FileStore, MlflowError> {
        let root = root.into();
        let root = std::path::absolute(&root).map_err(|e| io(&root, e))?;
        fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        let trash = root.join(TRASH);
        fs::create_dir_all(&trash).map_err(|e| io(&trash, e))?;
        let store = FileStore { root };
        store.recover_interrupted();
        // Not recreated when deleted (moved to `.trash`), as in MLflow.
        let default_missing =
            |s: &FileStore| !s.root.join("0").exists() && !s.root.join(TRASH).join("0").exists();
        if default_missing(&store) {
            let _lock = store.lock()?;
            if default_missing(&store) {
                store.create_experiment_dir("0", "Default")?;
            }
        }
        Ok(store)
    }

    /// Finishes or removes what a writer killed mid-run left behind: a
    /// `.tmp-<run id>` directory (never renamed into place) is removed; a
    /// run directory whose `meta.yaml` was written but not yet renamed into
    /// place (the kill came between the two renames) gets it. Best effort:
    /// a store it cannot tidy still opens.
    fn recover_interrupted(&self) {
        let Ok(experiments) = fs::read_dir(&self.root) else {
            return;
        };
        for experiment in experiments.flatten() {
            let Ok(entries) = fs::read_dir(experiment.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let path = entry.path();
                if name.to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_dir_all(&path);
                } else if path.join(META_TMP).is_file() && !path.join(META).exists() {
                    let _ = fs::rename(path.join(META_TMP), path.join(META));
                }
            }
        }
    }

    /// The store's absolute root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

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

    /// Writes the whole run `run` into experiment `experiment_id` and returns
    /// its new id. Every key is checked with [`validate_key`] before anything
    /// is written; param and tag values longer than MLflow accepts are cut
    /// with [`truncate_value`] (and a warning naming the key). Tag
    /// `mlflow.runName` is added unless the record has it; the user is
    /// `$USER` or `unknown`. A record without `end_time` is written
    /// `RUNNING`, whatever its `status`.
    pub fn log_run(&self, experiment_id: &str, run: &RunRecord) -> Result<String, MlflowError> {
        check_id(&self.root, "experiment", experiment_id, 64)?;
        for kv in run.params.iter().chain(&run.tags) {
            validate_key(&kv.key)?;
        }
        for metric in &run.metrics {
            validate_key(&metric.key)?;
        }
        for (i, p) in run.params.iter().enumerate() {
            if run.params[..i]
                .iter()
                .any(|q| q.key == p.key && q.value != p.value)
            {
                return Err(MlflowError::InvalidKey {
                    key: p.key.clone(),
                    problem: "a param key appears twice with different values",
                });
            }
        }
        let exp_dir = self.root.join(experiment_id);
        match self.read_experiment(&exp_dir)? {
            Some(e) if e.1.lifecycle_stage == "active" => {}
            Some((_, e)) => {
                return Err(MlflowError::ExperimentDeleted {
                    name: e.name,
                    experiment_id: e.experiment_id,
                });
            }
            None => {
                return Err(MlflowError::ExperimentNotFound {
                    experiment_id: experiment_id.to_owned(),
                });
            }
        }

        let params: Vec<KeyValue> = run
            .params
            .iter()
            .map(|p| truncated(p, MAX_PARAM_VALUE_LENGTH, "param"))
            .collect();
        let mut tags: Vec<KeyValue> = run
            .tags
            .iter()
            .map(|t| truncated(t, MAX_TAG_VALUE_LENGTH, "tag"))
            .collect();
        if run.tag(RUN_NAME_TAG).is_none() {
            let mut name = KeyValue::new(RUN_NAME_TAG, run.run_name.clone());
            if truncate_value(&mut name.value, MAX_TAG_VALUE_LENGTH) {
                warn_truncated("tag", RUN_NAME_TAG, MAX_TAG_VALUE_LENGTH);
            }
            tags.push(name);
        }

        let run_id = random_hex32();
        let tmp = exp_dir.join(format!(".tmp-{run_id}"));
        let result = self.write_run_dir(&tmp, experiment_id, &run_id, run, &params, &tags);
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result?;
        let dir = exp_dir.join(&run_id);
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io(&dir, e));
        }
        let meta = dir.join(META);
        fs::rename(dir.join(META_TMP), &meta).map_err(|e| io(&meta, e))?;
        Ok(run_id)
    }

    /// Appends one value to metric `metric.key` of the existing run `run_id`
    /// (one `O_APPEND` write of one line).
    pub fn log_metric(&self, run_id: &str, metric: &Metric) -> Result<(), MlflowError> {
        validate_key(&metric.key)?;
        let dir = self.active_run_dir(run_id)?;
        let path = dir.join(METRICS).join(&metric.key);
        create_parent(&path)?;
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // One small write to an O_APPEND file: lines of concurrent writers
        // do not interleave.
        file.write_all(metric_line(metric).as_bytes())
            .map_err(|e| io(&path, e))
    }

    /// Sets tag `tag.key` of the existing run `run_id` (the value cut to
    /// [`MAX_TAG_VALUE_LENGTH`]), replacing the file atomically.
    pub fn set_tag(&self, run_id: &str, tag: &KeyValue) -> Result<(), MlflowError> {
        validate_key(&tag.key)?;
        let tag = truncated(tag, MAX_TAG_VALUE_LENGTH, "tag");
        let dir = self.active_run_dir(run_id)?;
        let path = dir.join(TAGS).join(&tag.key);
        create_parent(&path)?;
        // Written beside `tags/`, not in it: MLflow reads every file under
        // `tags/` as a tag.
        let tmp = dir.join(format!(".tag-{}.tmp", random_hex32()));
        let result = fs::write(&tmp, tag.value.as_bytes())
            .map_err(|e| io(&tmp, e))
            .and_then(|()| fs::rename(&tmp, &path).map_err(|e| io(&path, e)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Every active run of experiment `experiment_id` with its params, tags
    /// and the latest value of each metric, newest first (start time
    /// descending, then id). Params, tags and metrics are sorted by key.
    pub fn runs(&self, experiment_id: &str) -> Result<Vec<Run>, MlflowError> {
        check_id(&self.root, "experiment", experiment_id, 64)?;
        let exp_dir = self.root.join(experiment_id);
        if self.read_experiment(&exp_dir)?.is_none() {
            return Err(MlflowError::ExperimentNotFound {
                experiment_id: experiment_id.to_owned(),
            });
        }
        let mut runs = Vec::new();
        for entry in read_dir(&exp_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if RESERVED.contains(&name.as_str()) || !path.is_dir() {
                continue;
            }
            let Some(info) = read_run_info(&path)? else {
                continue; // being written, or not a run
            };
            if info.experiment_id != experiment_id || info.lifecycle_stage != "active" {
                continue; // MLflow ignores both
            }
            runs.push(read_run(&path, info)?);
        }
        runs.sort_by(|a, b| {
            b.info
                .start_time
                .cmp(&a.info.start_time)
                .then_with(|| a.info.run_id.cmp(&b.info.run_id))
        });
        Ok(runs)
    }

    /// The run `run_id`, active or deleted, if it exists.
    pub fn run(&self, run_id: &str) -> Result<Option<Run>, MlflowError> {
        let Some(dir) = self.find_run_dir(run_id)? else {
            return Ok(None);
        };
        let Some(info) = read_run_info(&dir)? else {
            return Ok(None);
        };
        Ok(Some(read_run(&dir, info)?))
    }

    /// Every value of metric `key` of run `run_id`, in the order logged;
    /// empty when the run has no such metric.
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>, MlflowError> {
        validate_key(key)?;
        let Some(dir) = self.find_run_dir(run_id)? else {
            return Err(no_run(&self.root, run_id));
        };
        let path = dir.join(METRICS).join(key);
        if !path.is_file() {
            return Ok(Vec::new());
        }
        read_metric_file(&path, key)
    }

    // ---- internals ----

    fn lock(&self) -> Result<File, MlflowError> {
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
    fn create_experiment_dir(&self, id: &str, name: &str) -> Result<(), MlflowError> {
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
    fn read_experiment(&self, dir: &Path) -> Result<Option<(i64, Experiment)>, MlflowError> {
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

    /// The directory of run `run_id` in an active or deleted experiment.
    fn find_run_dir(&self, run_id: &str) -> Result<Option<PathBuf>, MlflowError> {
        check_id(&self.root, "run", run_id, 256)?;
        for parent in [self.root.clone(), self.root.join(TRASH)] {
            if !parent.is_dir() {
                continue;
            }
            for entry in read_dir(&parent)? {
                if entry.file_name() == TRASH {
                    continue;
                }
                let dir = entry.path().join(run_id);
                // MLflow's `_is_valid_run_directory`.
                if [METRICS, PARAMS, ARTIFACTS]
                    .iter()
                    .all(|sub| dir.join(sub).is_dir())
                {
                    return Ok(Some(dir));
                }
            }
        }
        Ok(None)
    }

    /// The directory of the active run `run_id`, or an error.
    fn active_run_dir(&self, run_id: &str) -> Result<PathBuf, MlflowError> {
        let Some(dir) = self.find_run_dir(run_id)? else {
            return Err(no_run(&self.root, run_id));
        };
        match read_run_info(&dir)? {
            Some(info) if info.lifecycle_stage == "active" => Ok(dir),
            Some(_) => Err(MlflowError::Store {
                path: dir,
                message: format!("run {run_id} is deleted"),
            }),
            None => Err(no_run(&self.root, run_id)),
        }
    }

    fn write_run_dir(
        &self,
        dir: &Path,
        experiment_id: &str,
        run_id: &str,
        run: &RunRecord,
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), MlflowError> {
        fs::create_dir(dir).map_err(|e| io(dir, e))?;
        for sub in [METRICS, PARAMS, TAGS, ARTIFACTS] {
            let path = dir.join(sub);
            fs::create_dir(&path).map_err(|e| io(&path, e))?;
        }
        for (sub, values) in [(PARAMS, params), (TAGS, tags)] {
            for kv in values {
                let path = dir.join(sub).join(&kv.key);
                create_parent(&path)?;
                fs::write(&path, kv.value.as_bytes()).map_err(|e| io(&path, e))?;
            }
        }
        let mut keys: Vec<&str> = run.metrics.iter().map(|m| m.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let lines: String = run
                .metrics
                .iter()
                .filter(|m| m.key == key)
                .map(metric_line)
                .collect();
            let path = dir.join(METRICS).join(key);
            create_parent(&path)?;
            fs::write(&path, lines).map_err(|e| io(&path, e))?;
        }

        let status = match run.end_time {
            Some(_) => run.status,
            None => RunStatus::Running,
        };
        let end_time = run
            .end_time
            .map_or_else(|| "null".to_owned(), |t| t.to_string());
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        let final_dir = self.root.join(experiment_id).join(run_id);
        let meta = format!(
            "artifact_uri: {artifact_uri}\n\
             end_time: {end_time}\n\
             entry_point_name: ''\n\
             experiment_id: {experiment_id}\n\
             lifecycle_stage: active\n\
             run_id: {run_id}\n\
             run_name: {run_name}\n\
             run_uuid: {run_id}\n\
             source_name: ''\n\
             source_type: {SOURCE_TYPE_LOCAL}\n\
             source_version: ''\n\
             start_time: {start_time}\n\
             status: {status}\n\
             tags: []\n\
             user_id: {user}\n",
            artifact_uri = yaml_str(&file_uri(&final_dir.join(ARTIFACTS))),
            experiment_id = yaml_str(experiment_id),
            run_id = yaml_str(run_id),
            run_name = yaml_str(&run.run_name),
            start_time = run.start_time,
            status = status.code(),
            user = yaml_str(&user),
        );
        // Not named meta.yaml yet: MLflow skips a run directory without one.
        let path = dir.join(META_TMP);
        fs::write(&path, meta).map_err(|e| io(&path, e))
    }
}

/// The name a `meta.yaml` has while it is written.
const META_TMP: &str = ".meta.yaml.tmp";

fn io(path: &Path, source: std::io::Error) -> MlflowError {
    MlflowError::Io {
        path: path.to_owned(),
        source,
    }
}

fn no_run(root: &Path, run_id: &str) -> MlflowError {
    MlflowError::Store {
        path: root.to_owned(),
        message: format!("no run {run_id} in this store"),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, MlflowError> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io(dir, e))
}

fn create_parent(path: &Path) -> Result<(), MlflowError> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(|e| io(parent, e)),
        None => Ok(()),
    }
}

/// Checks an experiment or run id the way MLflow does
/// (`^[a-zA-Z0-9][\w\-]{0,max-1}$`), so that it cannot name another path.
fn check_id(root: &Path, what: &str, id: &str, max: usize) -> Result<(), MlflowError> {
    let ok = id.chars().count() <= max
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(MlflowError::Store {
            path: root.to_owned(),
            message: format!("invalid {what} id {id:?}"),
        })
    }
}

fn truncated(kv: &KeyValue, max: usize, what: &str) -> KeyValue {
    let mut kv = kv.clone();
    if truncate_value(&mut kv.value, max) {
        warn_truncated(what, &kv.key, max);
    }
    kv
}

fn warn_truncated(what: &str, key: &str, max: usize) {
    tracing::warn!(
        key,
        max,
        "MLflow {what} value cut to {max} characters, as MLflow accepts no longer"
    );
}

/// `timestamp value step\n`, the value as Python's `float()` reads it.
fn metric_line(m: &Metric) -> String {
    format!("{} {} {}\n", m.timestamp, python_float(m.value), m.step)
}

/// `f64` as text Python's `float()` (and Rust's `parse`) read back exactly.
fn python_float(v: f64) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        // Debug is the shortest text that parses back to the same f64
        // (`3.0`, `1e20`, `1e-7`).
        format!("{v:?}")
    }
}

/// `file://` and the path, percent-encoded like Python's
/// `pathlib.Path.as_uri()`.
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// 32 lowercase hex digits, like `uuid.uuid4().hex`.
fn random_hex32() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests;
