//! The harness the workspace's tests share, so that each test file holds
//! only what it tests.
//!
//! - [`scratch`]: a fresh temporary directory and a free port on 127.0.0.1;
//! - [`wait`]: waiting on a condition, sync or async, always against a
//!   deadline (never a sleep that hopes);
//! - [`metrics`]: reading the process-wide registry as a user would, and
//!   futures that hold a call open;
//! - [`fixture`]: protocol fixture servers on 127.0.0.1, TCP and HTTP/1.1,
//!   that the Elasticsearch, Logstash, Sentry and MLflow fixtures are built
//!   on;
//! - [`process`]: server processes (the demo, Prometheus, MLflow) started on
//!   a free port, ready when their start returns, stopped by PID;
//! - [`prometheus`]: Prometheus, the Pushgateway and Alertmanager as such
//!   processes, and their HTTP APIs;
//! - [`mlflow`]: MLflow tracking servers and MLflow's Python client, from
//!   the pinned virtual environments;
//! - [`sink`]: the specification every background sink meets (a server
//!   down and back, a full queue, a caller that never waits, a guard that
//!   delivers at drop);
//! - [`bench`]: what the benchmarks share.
//!
//! Nothing here passes silently: a missing server or venv fails the test
//! with the command that installs it, and every wait is bounded.

pub mod bench;
pub mod fixture;
pub mod metrics;
pub mod mlflow;
pub mod process;
pub mod prometheus;
pub mod scratch;
pub mod sink;
pub mod wait;

pub use scratch::{TempDir, free_port};
