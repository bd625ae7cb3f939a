//! Traces: trace context on tracked calls and in their log lines
//! (`context`), W3C propagation across HTTP services (`propagation`) and
//! across processes (`processes`), the
//! OTLP span exporter against an OTLP protocol fixture (`otlp`) and
//! against the background sinks' common specification (`sink`), and
//! exemplars on `/metrics` read back by a real Prometheus (`exemplars`).
//! MLflow traces are tested with the other MLflow servers, in the `mlflow`
//! binary.
//!
//! Apart from the other binaries: trace context, the sampler and the span
//! sinks are process-wide, and `exemplars` installs the global subscriber.
//! Tests that make sampled calls hold [`sampling`]'s lock for reading; a
//! test that changes the sampler or whose span sink counts every span of
//! the process (`otlp`'s) holds it for writing, so it runs alone.

mod context;
mod exemplars;
mod otlp;
mod processes;
mod propagation;
mod sink;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static SAMPLING: RwLock<()> = RwLock::const_new(());

/// The process's default sampler and span sinks, shared with the other
/// tests that only add calls of their own traces.
async fn sampling() -> RwLockReadGuard<'static, ()> {
    SAMPLING.read().await
}

/// [`sampling`] for a test that runs on no runtime.
fn sampling_blocking() -> RwLockReadGuard<'static, ()> {
    SAMPLING.blocking_read()
}

/// The process's sampler and span sinks, for this test alone (on no
/// runtime).
fn sampling_alone() -> RwLockWriteGuard<'static, ()> {
    SAMPLING.blocking_write()
}
