//! Errors and panics in Sentry, end to end.
//!
//! No Sentry server can run here, so the real `sentry` client, started by
//! `hyperkit_obs::Builder` from a `SENTRY_DSN`, sends to a CAPTURE SERVER on
//! 127.0.0.1: a small HTTP server that accepts envelopes the way Sentry's
//! envelope endpoint is documented to (`POST /api/<project>/envelope/`,
//! authenticated by the `X-Sentry-Auth` header carrying the DSN's public
//! key, answered `200 {}`), and can be told to answer `429` with
//! `Retry-After` and `X-Sentry-Rate-Limits` instead. Everything it received
//! is parsed with Sentry's own envelope parser (`sentry-types`).
//!
//! Its own test binary: `init()` installs the process-wide subscriber and
//! Sentry client once, so every test shares one start-up and runs alone
//! (`serial()`), looking only at what arrived after it started. The capture
//! server is `test_support::fixture::sentry`; what a failure or a panic
//! becomes is `reports`, what never leaves the process `secrets`, Sentry's
//! rate limits `rate_limits`; the transport against the background sinks'
//! common specification, with a client of its own, is `sink`.

mod rate_limits;
mod reports;
mod secrets;
mod sink;

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use hyperkit_obs::{Builder, MonitoringConfig, ObsGuard};
use sentry_types::protocol::v7::Event;
use test_support::fixture::sentry as capture;

use capture::Capture;

const PROJECT: u64 = 42;
const PUBLIC_KEY: &str = "publickey";
/// The configured `/metrics` token: a secret the process knows.
const TOKEN: &str = "tok-5e6f7a8b9c0d1e2f";
/// A password that only ever appears in what the program logs.
const PASSWORD: &str = "pa55-hunter2-wd";
/// A bearer token in a logged header value.
const BEARER: &str = "xyz-bearer-0451";
/// A model prompt, logged as a field.
const PROMPT: &str = "write a limerick about gas fees";

/// The error of every function under test.
#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------
// One start-up for the whole binary.

struct Harness {
    capture: Capture,
    dsn: String,
    _obs: ObsGuard,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let capture = Capture::start(PROJECT, PUBLIC_KEY);
        let dsn = format!("http://{PUBLIC_KEY}@{}/{PROJECT}", capture.addr());
        let vars = [
            ("SENTRY_DSN", dsn.as_str()),
            ("SENTRY_ENVIRONMENT", "ci"),
            ("HYPERKIT_METRICS_TOKEN", TOKEN),
            ("RUST_LOG", "info"),
            // Only Sentry is under test: no MLflow runs or log store in the
            // crate's directory.
            ("HYPERKIT_MLFLOW_ENABLED", "false"),
            ("HYPERKIT_LOG_STORE", "false"),
        ];
        let config = MonitoringConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        let obs = Builder::from_config(config)
            .release("tests@0.0.0")
            .init()
            .unwrap();
        assert!(obs.sentry_enabled());
        Harness {
            capture,
            dsn,
            _obs: obs,
        }
    })
}

/// Runs one test at a time: they share the client, its rate limits and the
/// capture server.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn flush() {
    assert!(
        hyperkit_obs::sentry::flush(Duration::from_secs(5)),
        "the client sends what it holds within its deadline"
    );
}

/// `hyperkit_obs_dropped_total{sink="sentry"}`.
fn dropped() -> u64 {
    test_support::metrics::dropped("sentry")
}

fn tag<'a>(event: &'a Event<'static>, name: &str) -> Option<&'a str> {
    event.tags.get(name).map(String::as_str)
}
