//! Writing runs: a whole run at once, made visible by renames so that a
//! reader (this crate or MLflow) sees all of it or none; a metric value
//! appended in one `O_APPEND` write; a tag replaced atomically. Every key
//! is checked before anything is written, and values MLflow would refuse
//! as too long are cut with a warning, never an error or a panic.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::yaml::yaml_str;
use super::{
    ARTIFACTS, FileStore, META, META_TMP, METRICS, PARAMS, RUN_NAME_TAG, TAGS, check_id,
    create_parent, io,
};
use crate::mlflow::{
    KeyValue, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, Metric, MlflowError, RunRecord,
    RunStatus, truncate_value, validate_key,
};
use crate::util::random_u64;

/// MLflow's `SourceType.LOCAL`.
const SOURCE_TYPE_LOCAL: i64 = 4;

impl FileStore {
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
pub(super) fn python_float(v: f64) -> String {
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
pub(super) fn file_uri(path: &Path) -> String {
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
pub(super) fn random_hex32() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}
