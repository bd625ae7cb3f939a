//! MLflow: the client and the exporter against a protocol fixture
//! (`client`), the local file store and real MLflow servers read back with
//! MLflow's own Python client (`file_store`, `server`), model calls' traces
//! in MLflow 3 (and MLflow 2 skipped) read back the same way (`traces`), a
//! streamed call's run (`streams`),
//! and the harness those rely on (`harness`); what model calls cost, in
//! both (`cost`).
//!
//! The exporter is process-wide and takes every tracked model call: the
//! tests that start one, start an `mlflow server` or run MLflow's Python
//! take turns (`test_support::mlflow::serial`); the fixture tests that
//! start neither run beside them.

mod client;
mod cost;
mod file_store;
mod harness;
mod server;
mod streams;
mod traces;
