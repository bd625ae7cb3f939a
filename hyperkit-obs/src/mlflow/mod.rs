//! MLflow experiment tracking: every `#[track_model]` call becomes an MLflow
//! run, delivered off the caller's path to a tracking server
//! (`MLFLOW_TRACKING_URI=http(s)://…`) or, by default, to a local file store
//! (`./mlruns`) that `mlflow ui` reads. With an MLflow 3 server, each
//! sampled model call is also a trace in its Traces view (see
//! [`start_traces`]).

pub mod client;
pub mod compare;
mod config;
mod error;
pub(crate) mod exporter;
pub mod file_store;
pub mod push;
mod run;
mod traces;
mod tracker;
mod types;

pub use client::MlflowClient;
pub use compare::{CompareFilter, Comparison, ModelRow, Verdict, compare};
pub use config::{DEFAULT_EXPERIMENT, MlflowAuth, MlflowConfig, RetryPolicy, TrackingTarget};
pub use error::{ErrorCode, MlflowError};
pub use exporter::{MlflowGuard, SHUTDOWN_DEADLINE, SINK, flush, start, start_discarding, status};
pub use file_store::FileStore;
pub use push::{ExperimentPush, PushError, PushReport, push_store, push_store_with};
pub use run::{CALL_ID_TAG, ModelRun, SOURCE_RUN_TAG, TRACE_ID_TAG};
pub use traces::{TRACES_SINK, start_traces};
pub use tracker::{AcceptanceRate, ExperimentTracker};
pub use types::{
    Experiment, KeyValue, MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, Metric,
    Run, RunData, RunInfo, RunRecord, RunStatus, truncate_value, validate_key,
};
