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
//!
//! This module holds the layout (directory and file names), opening and
//! tidying a store, and finding a run's directory; `experiments` creates
//! and lists experiments, `write` writes runs, `read` reads them back and
//! `yaml` is the `meta.yaml` format.

use std::fs;
use std::path::{Path, PathBuf};

use super::MlflowError;

mod experiments;
mod read;
mod write;
mod yaml;

use read::read_run_info;

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

/// The name a `meta.yaml` has while it is written.
const META_TMP: &str = ".meta.yaml.tmp";

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
}

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

#[cfg(test)]
mod tests;
