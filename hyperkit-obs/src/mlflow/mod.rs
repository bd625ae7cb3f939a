//! MLflow experiment tracking: every `#[track_model]` call becomes an MLflow
//! run, delivered off the caller's path to a tracking server
//! (`MLFLOW_TRACKING_URI=http(s)://…`) or, by default, to a local file store
//! (`./mlruns`) that `mlflow ui` reads.

mod error;
pub mod file_store;
mod types;

pub use error::{ErrorCode, MlflowError};
pub use file_store::FileStore;
pub use types::{
    Experiment, KeyValue, MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, Metric,
    Run, RunData, RunInfo, RunRecord, RunStatus, truncate_value, validate_key,
};
