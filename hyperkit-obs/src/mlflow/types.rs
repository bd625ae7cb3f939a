//! The data of MLflow's tracking API, in the JSON shapes of its REST API.

use serde::{Deserialize, Serialize};

/// One value of a metric (MLflow's `Metric`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The metric's name.
    pub key: String,
    /// The value. NaN and ±infinity travel as MLflow's JSON spells them
    /// (`"NaN"`, `"Infinity"`, `"-Infinity"`), not as `null`.
    #[serde(with = "json_double")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The step (0 for a single value).
    #[serde(default)]
    pub step: i64,
}

impl Metric {
    /// A metric at step 0.
    pub fn new(key: impl Into<String>, value: f64, timestamp: i64) -> Self {
        Metric {
            key: key.into(),
            value,
            timestamp,
            step: 0,
        }
    }
}

/// A `double` in the JSON of MLflow's REST API (protobuf's JSON mapping): a
/// number, or the string `"NaN"`, `"Infinity"` or `"-Infinity"` for what
/// JSON has no number for (serde_json would write `null`, which MLflow
/// refuses as a missing value).
mod json_double {
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v.is_infinite() {
            s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            s.serialize_f64(*v)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        struct Double;
        impl Visitor<'_> for Double {
            type Value = f64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            #[allow(clippy::cast_precision_loss)] // as MLflow's double holds it
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                match v {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    // protobuf's JSON mapping also accepts a number in a string.
                    other => other
                        .parse()
                        .map_err(|_| E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(Double)
    }
}

/// A parameter or a tag (MLflow's `Param` and `RunTag`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

impl KeyValue {
    /// A key and its value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// The state of a run (MLflow's `RunStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Started, not ended.
    Running,
    /// Waiting to start.
    Scheduled,
    /// Ended normally.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped from outside.
    Killed,
}

impl RunStatus {
    /// The name in the REST API (`FINISHED`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    /// The number the file store writes in `meta.yaml` (`status: 3`).
    pub const fn code(self) -> u8 {
        match self {
            RunStatus::Running => 1,
            RunStatus::Scheduled => 2,
            RunStatus::Finished => 3,
            RunStatus::Failed => 4,
            RunStatus::Killed => 5,
        }
    }

    /// The status of a file store code.
    pub const fn from_code(code: u8) -> Option<RunStatus> {
        Some(match code {
            1 => RunStatus::Running,
            2 => RunStatus::Scheduled,
            3 => RunStatus::Finished,
            4 => RunStatus::Failed,
            5 => RunStatus::Killed,
            _ => return None,
        })
    }
}

/// Everything about one run, delivered in one go: what `#[track_model]`
/// and [`ExperimentTracker::log_model_run`](super::ExperimentTracker::log_model_run)
/// produce and what `hyperkit-obs mlflow push` replays.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// The run's name (`mlflow.runName`).
    pub run_name: String,
    /// Milliseconds since the Unix epoch.
    pub start_time: i64,
    /// Milliseconds since the Unix epoch; `None` leaves the run `RUNNING`.
    pub end_time: Option<i64>,
    /// The final status.
    pub status: RunStatus,
    /// Parameters: each key at most once.
    pub params: Vec<KeyValue>,
    /// Metric values, possibly several per key.
    pub metrics: Vec<Metric>,
    /// Tags: each key at most once.
    pub tags: Vec<KeyValue>,
}

impl RunRecord {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        find(&self.tags, key)
    }
}

/// Which runs a search sees (MLflow's `ViewType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ViewType {
    /// Runs not deleted: what MLflow's UI and `search_runs` show by default.
    #[default]
    ActiveOnly,
    /// Deleted runs too.
    All,
}

impl ViewType {
    /// MLflow's name for it, as `runs/search` takes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ViewType::ActiveOnly => "ACTIVE_ONLY",
            ViewType::All => "ALL",
        }
    }
}

/// An experiment (MLflow's `Experiment`, the fields tracking needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Experiment {
    /// The id, a decimal string.
    pub experiment_id: String,
    /// The unique name.
    pub name: String,
    /// `active` or `deleted`.
    #[serde(default = "active")]
    pub lifecycle_stage: String,
}

fn active() -> String {
    "active".to_owned()
}

/// A stored run (MLflow's `Run`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Identity, timing and status.
    pub info: RunInfo,
    /// Latest metric values, params and tags.
    #[serde(default)]
    pub data: RunData,
}

/// A run's identity, timing and status (MLflow's `RunInfo`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run id (32 hex digits).
    pub run_id: String,
    /// The experiment it belongs to.
    pub experiment_id: String,
    /// The run's name.
    #[serde(default)]
    pub run_name: String,
    /// Its status.
    pub status: RunStatus,
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub start_time: i64,
    /// Milliseconds since the Unix epoch, once ended.
    #[serde(default)]
    pub end_time: Option<i64>,
    /// `active` or `deleted`.
    #[serde(default = "active")]
    pub lifecycle_stage: String,
}

/// A run's data (MLflow's `RunData`): the latest value of each metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// The latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Parameters.
    #[serde(default)]
    pub params: Vec<KeyValue>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

impl RunData {
    /// The value of param `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        find(&self.params, key)
    }

    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        find(&self.tags, key)
    }

    /// The latest value of metric `key`.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }
}

fn find<'a>(list: &'a [KeyValue], key: &str) -> Option<&'a str> {
    list.iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

/// The longest key MLflow accepts (`MAX_ENTITY_KEY_LENGTH`).
pub const MAX_KEY_LENGTH: usize = 250;
/// The longest param value MLflow accepts (`MAX_PARAM_VAL_LENGTH`).
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
/// The longest tag value MLflow accepts (`MAX_TAG_VAL_LENGTH`).
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;

/// Checks a param, metric or tag key the way MLflow's server does
/// (`_validate_param_name` and friends): not empty, at most 250 characters,
/// only alphanumerics, `_ - . /` and spaces (MLflow 2's rule, which MLflow 3
/// also accepts), and no path that would name another key (`a//b`, `./a`,
/// `../a`, `/a`, `a/`).
pub fn validate_key(key: &str) -> Result<(), super::MlflowError> {
    let problem = crate::util::mlflow_key_problem(key);
    match problem {
        None => Ok(()),
        Some(problem) => Err(super::MlflowError::InvalidKey {
            key: key.chars().take(300).collect(),
            problem,
        }),
    }
}

/// Cuts `value` to `max` characters the way MLflow's Python client does
/// (`_truncate_and_ellipsize`: the first `max - 3` characters and `...`).
/// Returns whether it cut.
pub fn truncate_value(value: &mut String, max: usize) -> bool {
    if value.chars().count() <= max {
        return false;
    }
    let keep = value
        .char_indices()
        .nth(max.saturating_sub(3))
        .map_or(value.len(), |(i, _)| i);
    value.truncate(keep);
    value.push_str("...");
    true
}

#[cfg(test)]
mod tests {
    use super::Metric;

    #[test]
    fn non_finite_metric_values_use_mlflow_json_spelling() {
        for (v, text) in [
            (f64::NAN, r#""NaN""#),
            (f64::INFINITY, r#""Infinity""#),
            (f64::NEG_INFINITY, r#""-Infinity""#),
            (1.5, "1.5"),
        ] {
            let json = serde_json::to_string(&Metric::new("m", v, 1)).unwrap();
            assert!(json.contains(&format!(r#""value":{text}"#)), "{json}");
            let back: Metric = serde_json::from_str(&json).unwrap();
            assert!(
                back.value == v || (v.is_nan() && back.value.is_nan()),
                "{json}"
            );
        }
        let m: Metric = serde_json::from_str(r#"{"key":"m","value":3,"timestamp":1}"#).unwrap();
        assert_eq!(m.value, 3.0);
    }
}
