//! `hyperkit-obs mlflow push` and `hyperkit-obs mlflow acceptance`, run as
//! the built binary against local file stores and real MLflow servers, read
//! back with MLflow's own Python client.

mod acceptance;
mod compare;
mod push;

/// Environment bounding every request to a server: 2 retries, 20 s each.
pub(crate) const FAST_FAIL: [(&str, &str); 4] = [
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
    ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.2"),
    ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.1"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20"),
];

pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}
