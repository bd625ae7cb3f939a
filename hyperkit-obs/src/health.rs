//! Readiness checks: named probes that `/health/ready` (and later
//! `hyperkit-obs check`) run.
//!
//! Each check runs with a timeout, and its result is cached for a short
//! interval; concurrent requests for the same check share one run, so a
//! scrape storm cannot stampede the dependency it probes. A check that
//! panics or times out fails; it never takes the endpoint down.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

type CheckFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
type CheckFn = Box<dyn Fn() -> CheckFuture + Send + Sync>;

/// Default for how long a check may take before it counts as failed
/// (`HYPERKIT_HEALTH_TIMEOUT_MS`).
pub const DEFAULT_TIMEOUT: Duration = crate::init::DEFAULT_HEALTH_TIMEOUT;
/// Default for how long a check's result is reused
/// (`HYPERKIT_HEALTH_CACHE_MS`).
pub const DEFAULT_CACHE: Duration = crate::init::DEFAULT_HEALTH_CACHE;

struct Check {
    name: String,
    required: bool,
    run: CheckFn,
    last: tokio::sync::Mutex<Option<(Instant, CheckStatus)>>,
}

static CHECKS: LazyLock<RwLock<Vec<Arc<Check>>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckStatus {
    /// `pass` or `fail`.
    pub status: &'static str,
    /// What the check said (its `Ok` or `Err` text, or why it failed).
    pub detail: String,
    /// How long the check took, in milliseconds.
    pub latency_ms: u64,
    /// Whether readiness depends on it.
    pub required: bool,
}

impl CheckStatus {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.status == "pass"
    }
}

/// The answer of `/health/ready`.
#[derive(Clone, Debug, Serialize)]
pub struct Readiness {
    /// `ready` when every required check passes, else `not_ready`.
    pub status: &'static str,
    /// Every check by name.
    pub checks: BTreeMap<String, CheckStatus>,
}

impl Readiness {
    /// Whether every required check passed.
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

fn add(name: String, required: bool, run: CheckFn) {
    let mut checks = CHECKS.write().unwrap_or_else(PoisonError::into_inner);
    checks.retain(|c| c.name != name);
    checks.push(Arc::new(Check {
        name,
        required,
        run,
        last: tokio::sync::Mutex::new(None),
    }));
}

/// Registers (or replaces) a required readiness check: an async function
/// returning `Ok(detail)` when healthy and `Err(detail)` when not.
///
/// ```
/// hyperkit_obs::health::register("database", || async {
///     // e.g. `pool.execute("SELECT 1").await`
///     Ok::<_, String>("SELECT 1 answered".to_owned())
/// });
/// ```
pub fn register<F, Fut>(name: impl Into<String>, check: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    add(name.into(), true, Box::new(move || Box::pin(check())));
}

/// Registers an optional check: reported, but readiness does not depend on
/// it.
pub fn register_optional<F, Fut>(name: impl Into<String>, check: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    add(name.into(), false, Box::new(move || Box::pin(check())));
}

/// Registers a required check from a plain closure. It must not block for
/// long: it runs on the server's async runtime.
pub fn register_fn<F>(name: impl Into<String>, check: F)
where
    F: Fn() -> Result<String, String> + Send + Sync + 'static,
{
    let check = Arc::new(check);
    add(
        name.into(),
        true,
        Box::new(move || {
            let check = check.clone();
            Box::pin(async move { check() })
        }),
    );
}

/// Removes the check named `name`, if any.
pub fn deregister(name: &str) {
    CHECKS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|c| c.name != name);
}

/// Runs every check (or reuses a result younger than `cache`), each bounded
/// by `timeout`, concurrently.
pub async fn readiness(timeout: Duration, cache: Duration) -> Readiness {
    let checks: Vec<Arc<Check>> = CHECKS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut set = tokio::task::JoinSet::new();
    for check in checks {
        set.spawn(async move {
            let status = run(&check, timeout, cache).await;
            (check.name.clone(), status)
        });
    }
    let mut results = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((name, status)) = joined {
            results.insert(name, status);
        }
    }
    let ready = results.values().all(|c| c.passed() || !c.required);
    Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: results,
    }
}

async fn run(check: &Check, timeout: Duration, cache: Duration) -> CheckStatus {
    // Holding the lock across the run makes concurrent callers wait for one
    // run and reuse its result.
    let mut last = check.last.lock().await;
    if let Some((at, status)) = last.as_ref()
        && at.elapsed() < cache
    {
        return status.clone();
    }
    let started = Instant::now();
    // Spawned, so a panicking check is reported as a failure.
    let outcome = tokio::time::timeout(timeout, tokio::spawn((check.run)())).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (passed, detail) = match outcome {
        Ok(Ok(Ok(detail))) => (true, detail),
        Ok(Ok(Err(detail))) => (false, detail),
        Ok(Err(join)) => (false, format!("check panicked: {join}")),
        Err(_) => (false, format!("timed out after {} ms", timeout.as_millis())),
    };
    let status = CheckStatus {
        status: if passed { "pass" } else { "fail" },
        detail,
        latency_ms,
        required: check.required,
    };
    *last = Some((Instant::now(), status.clone()));
    status
}
