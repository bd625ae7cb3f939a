//! [`MlflowError`]: what can go wrong talking to MLflow or its file store.

use std::fmt;
use std::path::PathBuf;

/// MLflow's `error_code`, as its REST API names it in an error body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `RESOURCE_ALREADY_EXISTS` (HTTP 400), e.g. an experiment name taken.
    ResourceAlreadyExists,
    /// `RESOURCE_DOES_NOT_EXIST` (HTTP 404).
    ResourceDoesNotExist,
    /// `INVALID_PARAMETER_VALUE` (HTTP 400): the request is wrong.
    InvalidParameterValue,
    /// `INVALID_STATE`, e.g. logging to a deleted run.
    InvalidState,
    /// `BAD_REQUEST`.
    BadRequest,
    /// `PERMISSION_DENIED` (HTTP 403).
    PermissionDenied,
    /// `UNAUTHENTICATED` (HTTP 401).
    Unauthenticated,
    /// `REQUEST_LIMIT_EXCEEDED` (HTTP 429).
    RequestLimitExceeded,
    /// `TEMPORARILY_UNAVAILABLE` (HTTP 503).
    TemporarilyUnavailable,
    /// `INTERNAL_ERROR` (HTTP 500).
    InternalError,
    /// Any other code, as sent.
    Other(String),
}

impl ErrorCode {
    /// Reads MLflow's name of a code.
    pub fn from_name(name: &str) -> ErrorCode {
        match name {
            "RESOURCE_ALREADY_EXISTS" => ErrorCode::ResourceAlreadyExists,
            "RESOURCE_DOES_NOT_EXIST" => ErrorCode::ResourceDoesNotExist,
            "INVALID_PARAMETER_VALUE" => ErrorCode::InvalidParameterValue,
            "INVALID_STATE" => ErrorCode::InvalidState,
            "BAD_REQUEST" => ErrorCode::BadRequest,
            "PERMISSION_DENIED" => ErrorCode::PermissionDenied,
            "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
            "REQUEST_LIMIT_EXCEEDED" => ErrorCode::RequestLimitExceeded,
            "TEMPORARILY_UNAVAILABLE" => ErrorCode::TemporarilyUnavailable,
            "INTERNAL_ERROR" => ErrorCode::InternalError,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// MLflow's name of the code.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            ErrorCode::ResourceDoesNotExist => "RESOURCE_DOES_NOT_EXIST",
            ErrorCode::InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::RequestLimitExceeded => "REQUEST_LIMIT_EXCEEDED",
            ErrorCode::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::Other(name) => name,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an MLflow operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlflowError {
    /// MLflow answered with its error body `{error_code, message}`.
    #[error("MLflow refused {endpoint}: {code}: {message} (HTTP {status})")]
    Api {
        /// The REST endpoint, e.g. `runs/log-batch`.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// MLflow's error code.
        code: ErrorCode,
        /// MLflow's message.
        message: String,
    },
    /// An HTTP error whose body is not MLflow's (a proxy, a load balancer).
    #[error("{endpoint} answered HTTP {status} without an MLflow error body: {body}")]
    Http {
        /// The REST endpoint.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the body, for the log.
        body: String,
    },
    /// The request did not complete: connection refused or reset, timeout.
    #[error("{endpoint} could not be reached: {message}")]
    Transport {
        /// The REST endpoint.
        endpoint: &'static str,
        /// What failed.
        message: String,
        /// Whether the request may have reached the server (a timeout or a
        /// reset after sending), so that a non-idempotent call may have taken
        /// effect.
        maybe_sent: bool,
    },
    /// A 2xx answer whose body is not the JSON MLflow documents.
    #[error("{endpoint} answered with a body that is not MLflow's: {message}")]
    Decode {
        /// The REST endpoint.
        endpoint: &'static str,
        /// What the JSON parser said.
        message: String,
    },
    /// A key MLflow would refuse, caught before sending.
    #[error("invalid MLflow key {key:?}: {problem}")]
    InvalidKey {
        /// The key (cut to 300 characters).
        key: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A file of the local store cannot be read or written.
    #[error("MLflow file store: {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file of the local store holds something MLflow would not have
    /// written.
    #[error("MLflow file store: {path}: {message}")]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The experiment is deleted (in MLflow's trash): runs cannot be
    /// logged to it, and its name cannot be used again until it is restored
    /// or purged. MLflow's Python client refuses it the same way.
    #[error(
        "MLflow experiment {name:?} (id {experiment_id}) is deleted; restore it, or purge it \
         (`mlflow gc`) to use the name again"
    )]
    ExperimentDeleted {
        /// The experiment's name.
        name: String,
        /// Its id.
        experiment_id: String,
    },
    /// No experiment has this id (it was never created, or it was purged).
    #[error("no MLflow experiment has id {experiment_id}")]
    ExperimentNotFound {
        /// The id asked for.
        experiment_id: String,
    },
    /// The client cannot be built from its configuration.
    #[error("MLflow client: {0}")]
    Setup(String),
}

impl MlflowError {
    /// MLflow's error code, when MLflow sent one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            MlflowError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether this error, answering the creation of a run, says that the
    /// experiment is no longer there to hold it: deleted, or purged. The
    /// name resolved again may then find it restored, or create it anew.
    pub(crate) fn is_experiment_gone(&self) -> bool {
        match self {
            MlflowError::ExperimentDeleted { .. } | MlflowError::ExperimentNotFound { .. } => true,
            // MLflow's `_check_experiment_is_active` and `_get_experiment`.
            MlflowError::Api {
                endpoint: "runs/create",
                code,
                message,
                ..
            } => match code {
                ErrorCode::ResourceDoesNotExist => true,
                ErrorCode::InvalidParameterValue => {
                    message.contains("must be in the 'active' state")
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether trying again later may succeed: the file store's disk is full
    /// or busy, or the server could not be
    /// reached, or answered with one of the statuses MLflow's own client
    /// retries (408, 429, 500, 502, 503, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            MlflowError::Transport { .. } => true,
            MlflowError::Api { status, .. } | MlflowError::Http { status, .. } => {
                is_retryable_status(*status)
            }
            // The file store's disk is full or busy: space may come back.
            MlflowError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::QuotaExceeded
                    | std::io::ErrorKind::ResourceBusy
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ),
            _ => false,
        }
    }
}

/// The statuses MLflow's Python client retries
/// (`mlflow.utils.request_utils._TRANSIENT_FAILURE_RESPONSE_CODES`).
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}
