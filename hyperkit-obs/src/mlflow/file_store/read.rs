//! Reading runs back from the directories of a store: `meta.yaml`, params,
//! tags and metric histories, and the [`FileStore`] methods that list runs
//! and read one. A store may have been written by another program (MLflow
//! itself, a copy, a disk that filled up), so every read is bounded (file
//! sizes, nesting, file counts) and a file MLflow would not have written is
//! a [`MlflowError::Store`] naming it, never a panic.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::yaml::Yaml;
use super::{
    FileStore, META, METRICS, PARAMS, RESERVED, RUN_NAME_TAG, TAGS, check_id, io, no_run, read_dir,
};
use crate::mlflow::{
    KeyValue, Metric, MlflowError, Run, RunData, RunInfo, RunStatus, validate_key,
};

/// The deepest a key's `/` may nest (`metrics/a/b/…`).
pub(super) const MAX_KEY_DEPTH: usize = 32;
/// The most params, tags or metrics of one kind a run may hold.
pub(super) const MAX_FILES: usize = 100_000;
/// The largest param or tag file read (MLflow's longest value is 8,000
/// characters).
pub(super) const MAX_VALUE_FILE: u64 = 1 << 20;
/// The largest metric history read (about two million values).
pub(super) const MAX_METRIC_FILE: u64 = 64 << 20;
/// The largest `meta.yaml` read.
pub(super) const MAX_META_FILE: u64 = 1 << 20;

impl FileStore {
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
}

/// The bytes of `path`, refusing a file larger than `cap` without reading
/// more than `cap + 1` bytes of it.
pub(super) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, MlflowError> {
    let file = fs::File::open(path).map_err(|e| io(path, e))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(MlflowError::Store {
            path: path.to_owned(),
            message: format!("larger than {cap} bytes: not a file MLflow writes"),
        });
    }
    Ok(bytes)
}

pub(super) fn read_run_info(dir: &Path) -> Result<Option<RunInfo>, MlflowError> {
    let path = dir.join(META);
    let Some(meta) = Yaml::read(&path)? else {
        return Ok(None);
    };
    let run_id = match meta.opt_string(&path, "run_id")? {
        Some(id) => id,
        None => meta.string(&path, "run_uuid")?,
    };
    let status = match meta.opt_int(&path, "status")? {
        None => RunStatus::Running,
        Some(code) => u8::try_from(code)
            .ok()
            .and_then(RunStatus::from_code)
            .ok_or_else(|| MlflowError::Store {
                path: path.clone(),
                message: format!("status: {code} is not a run status"),
            })?,
    };
    Ok(Some(RunInfo {
        run_id,
        experiment_id: meta.id(&path, "experiment_id")?,
        run_name: meta.opt_string(&path, "run_name")?.unwrap_or_default(),
        status,
        start_time: meta.opt_int(&path, "start_time")?.unwrap_or(0),
        end_time: meta.opt_int(&path, "end_time")?,
        lifecycle_stage: meta
            .opt_string(&path, "lifecycle_stage")?
            .unwrap_or_else(|| "active".to_owned()),
    }))
}

pub(super) fn read_run(dir: &Path, mut info: RunInfo) -> Result<Run, MlflowError> {
    let params = read_values(&dir.join(PARAMS))?;
    let tags = read_values(&dir.join(TAGS))?;
    let mut metrics = Vec::new();
    for (key, path) in files(&dir.join(METRICS))? {
        let history = read_metric_file(&path, &key)?;
        if let Some(latest) = latest(&history) {
            metrics.push(latest.clone());
        } else {
            return Err(MlflowError::Store {
                path,
                message: "a metric file without a value".to_owned(),
            });
        }
    }
    if info.run_name.is_empty()
        && let Some(name) = tags.iter().find(|t| t.key == RUN_NAME_TAG)
    {
        info.run_name = name.value.clone();
    }
    Ok(Run {
        info,
        data: RunData {
            metrics,
            params,
            tags,
        },
    })
}

/// MLflow's latest value: the greatest `(step, timestamp, value)`, the first
/// of equals (Python's `max`).
pub(super) fn latest(history: &[Metric]) -> Option<&Metric> {
    let mut best: Option<&Metric> = None;
    for m in history {
        best = match best {
            None => Some(m),
            Some(b) => {
                let greater = (m.step, m.timestamp) > (b.step, b.timestamp)
                    || ((m.step, m.timestamp) == (b.step, b.timestamp) && m.value > b.value);
                Some(if greater { m } else { b })
            }
        };
    }
    best
}

/// Every file under `dir` (recursively) as `(key, path)`, the key its
/// relative path with `/`, sorted by key; none when `dir` is missing.
///
/// The walk is iterative, and bounded: at most [`MAX_KEY_DEPTH`] levels and
/// [`MAX_FILES`] files, as a store another program wrote may hold anything.
fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>, MlflowError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut todo: Vec<(PathBuf, String, usize)> = vec![(dir.to_owned(), String::new(), 0)];
    while let Some((dir, prefix, depth)) = todo.pop() {
        for entry in read_dir(&dir)? {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(MlflowError::Store {
                    path,
                    message: "a file name that is not UTF-8".to_owned(),
                });
            };
            let key = format!("{prefix}{name}");
            let kind = entry.file_type().map_err(|e| io(&path, e))?;
            if kind.is_dir() {
                if depth + 1 >= MAX_KEY_DEPTH {
                    return Err(MlflowError::Store {
                        path,
                        message: format!(
                            "keys nested deeper than {MAX_KEY_DEPTH} levels: not a store MLflow writes"
                        ),
                    });
                }
                todo.push((path, format!("{key}/"), depth + 1));
            } else {
                if out.len() == MAX_FILES {
                    return Err(MlflowError::Store {
                        path: dir,
                        message: format!("more than {MAX_FILES} files under one run"),
                    });
                }
                out.push((key, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_values(dir: &Path) -> Result<Vec<KeyValue>, MlflowError> {
    files(dir)?
        .into_iter()
        .map(|(key, path)| {
            let bytes = read_capped(&path, MAX_VALUE_FILE)?;
            let value = String::from_utf8(bytes).map_err(|_| MlflowError::Store {
                path: path.clone(),
                message: "not UTF-8".to_owned(),
            })?;
            Ok(KeyValue { key, value })
        })
        .collect()
}

pub(super) fn read_metric_file(path: &Path, key: &str) -> Result<Vec<Metric>, MlflowError> {
    let bytes = read_capped(path, MAX_METRIC_FILE)?;
    let text = String::from_utf8(bytes).map_err(|_| MlflowError::Store {
        path: path.to_owned(),
        message: "not UTF-8".to_owned(),
    })?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            parse_metric_line(line, key).ok_or_else(|| MlflowError::Store {
                path: path.to_owned(),
                message: format!("line {}: {line:?} is not `timestamp value [step]`", i + 1),
            })
        })
        .collect()
}

/// One line as MLflow reads it: `timestamp value`, `timestamp value step`
/// or `timestamp value step dataset_name dataset_digest`.
pub(super) fn parse_metric_line(line: &str, key: &str) -> Option<Metric> {
    let parts: Vec<&str> = line.trim().split(' ').collect();
    if !matches!(parts.len(), 2 | 3 | 5) {
        return None;
    }
    let timestamp = parts[0].parse().ok()?;
    let value = parts[1].parse::<f64>().ok()?;
    let step = match parts.get(2) {
        Some(s) if parts.len() == 3 => s.parse().ok()?,
        _ => 0,
    };
    Some(Metric {
        key: key.to_owned(),
        value,
        timestamp,
        step,
    })
}
