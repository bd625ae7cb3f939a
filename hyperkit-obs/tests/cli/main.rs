//! The `hyperkit-obs` command, run as the built binary: `logs search` and
//! `logs tail` against stores written by the library, `mlflow push` and
//! `mlflow acceptance` against local file stores and real MLflow servers
//! (read back with MLflow's own Python client), and the command line
//! itself (help, one-line errors, exit status).
//!
//! These tests live in the `hyperkit-obs` package, not in the `tests`
//! crate, because only a package's own integration tests get
//! `CARGO_BIN_EXE_hyperkit-obs` and have Cargo build the binary (fresh)
//! before them; the MLflow harness is `test_support::mlflow`, shared with
//! the `tests` crate. The MLflow tests need its MLflow venvs (the failure
//! names the commands that create them); the tests with a server take
//! turns (`serial()`).

mod logs;
mod mlflow;
mod support;
mod usage;
