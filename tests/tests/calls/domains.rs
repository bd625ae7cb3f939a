//! A team's own domain, declared with `#[derive(Domain)]` in one module and
//! tracked with `#[track]` in another, gets everything a built-in macro
//! gives: its three families, status from `Result`, panic and cancellation,
//! the in-flight gauge back at zero on every path, exact label sets, the
//! cardinality limit, and its calls in every sink under the domain's name.
//! Each test reads the registry back as a user would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperkit_obs::calls::{self, CallSink, FinishedCall};
use hyperkit_obs::{Domain, Status, track};
use test_support::metrics::*;

/// The domains, in a module of their own: the tracked functions name them
/// by path.
#[allow(unreachable_pub)]
mod declared {
    use hyperkit_obs::{Domain, LabelValue};

    #[derive(Clone, Copy, Debug, LabelValue)]
    pub enum Env {
        Staging,
        Production,
    }

    /// Deployments of a service.
    #[derive(Domain)]
    #[domain(prefix = "test_deploy", buckets = [0.001, 0.01, 0.1, 1.0])]
    pub struct Deploy {
        env: Env,
        region: String,
    }

    /// Heartbeats: a domain with no labels.
    #[derive(Domain)]
    #[domain(prefix = "test_heartbeat", in_flight = false)]
    pub struct Heartbeat;

    /// Retries of a job, by attempt and whether it was the last.
    #[derive(Domain)]
    #[domain(
        name = "job_retry",
        counter = "test_retries_total",
        histogram = "test_retry_seconds",
        gauge = "test_retries_running"
    )]
    pub struct Retry {
        attempt: u32,
        last: bool,
    }

    /// Requests by tenant: an open label to fill past the limit.
    #[derive(Domain)]
    #[domain(prefix = "test_tenant")]
    pub struct Tenant {
        tenant: String,
    }
}

use declared::{Deploy, Env, Heartbeat, Retry, Tenant};

#[derive(Debug)]
struct DeployError(&'static str);

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

struct Spec {
    region: String,
}

#[track(Deploy, env, region = spec.region.as_str())]
fn deploy(env: Env, spec: &Spec, fail: bool) -> Result<u32, DeployError> {
    if fail {
        return Err(DeployError("quota exceeded"));
    }
    Ok(7)
}

#[track(Deploy, region = "sync-panic", env = Env::Staging)]
fn deploy_panicking() {
    panic!("the deploy script crashed");
}

#[track(Deploy, env, region)]
async fn deploy_async(env: Env, region: String, fail: bool) -> Result<(), DeployError> {
    tokio::task::yield_now().await;
    if fail {
        Err(DeployError("rollout halted"))
    } else {
        Ok(())
    }
}

#[track(Deploy, env = Env::Production, region = "async-panic")]
async fn deploy_async_panicking() {
    tokio::task::yield_now().await;
    panic!("the async deploy crashed");
}

/// A second function under the same domain.
#[track(Deploy, env = Env::Production, region = "rollback")]
fn rollback(id: u64) -> Result<u64, DeployError> {
    Ok(id)
}

#[track(Heartbeat)]
fn beat() {}

#[track(Retry, attempt, last = attempt >= 3)]
fn retry(attempt: u32) -> Result<(), DeployError> {
    if attempt >= 3 {
        Ok(())
    } else {
        Err(DeployError("flaky"))
    }
}

#[track(Tenant, tenant)]
fn serve(tenant: &str) {}

fn deploys(env: &str, region: &str, status: &str) -> u64 {
    counter(
        "test_deploy_calls_total",
        &[("env", env), ("region", region), ("status", status)],
    )
}

fn in_flight(env: &str, region: &str) -> i64 {
    gauge("test_deploy_in_flight", &[("env", env), ("region", region)])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

#[test]
fn a_sync_call_is_counted_by_status_with_its_labels_and_duration() {
    let spec = Spec {
        region: "eu-west-1".into(),
    };
    assert_eq!(deploy(Env::Production, &spec, false).unwrap(), 7);
    assert_eq!(
        deploy(Env::Production, &spec, true).unwrap_err().0,
        "quota exceeded"
    );
    assert_eq!(deploys("production", "eu-west-1", "success"), 1);
    assert_eq!(deploys("production", "eu-west-1", "failure"), 1);
    assert_eq!(
        histogram_count(
            "test_deploy_duration_seconds",
            &[("env", "production"), ("region", "eu-west-1")]
        ),
        2
    );
    assert_eq!(in_flight("production", "eu-west-1"), 0);

    let caught = std::panic::catch_unwind(deploy_panicking);
    assert!(caught.is_err(), "the panic continues to the caller");
    assert_eq!(deploys("staging", "sync-panic", "panic"), 1);
    assert_eq!(in_flight("staging", "sync-panic"), 0);
}

#[test]
fn an_async_call_counts_success_failure_panic_and_cancellation() {
    let rt = runtime();
    rt.block_on(deploy_async(Env::Staging, "us-east-2".into(), false))
        .expect("deployed");
    rt.block_on(deploy_async(Env::Staging, "us-east-2".into(), true))
        .expect_err("halted");
    assert_eq!(deploys("staging", "us-east-2", "success"), 1);
    assert_eq!(deploys("staging", "us-east-2", "failure"), 1);

    // Cancelled: polled once (it is running: in flight), then dropped.
    let pending = poll_once(Box::pin(deploy_async(
        Env::Staging,
        "ap-south-1".into(),
        false,
    )))
    .expect("it yields once");
    assert_eq!(in_flight("staging", "ap-south-1"), 1);
    drop(pending);
    assert_eq!(deploys("staging", "ap-south-1", "cancelled"), 1);
    assert_eq!(in_flight("staging", "ap-south-1"), 0);

    // Dropped before its first poll: it never started, nothing is counted.
    drop(deploy_async(Env::Staging, "never-polled".into(), false));
    assert!(find("test_deploy_calls_total", &[("region", "never-polled")]).is_none());

    let panicked = rt.block_on(async {
        tokio::spawn(deploy_async_panicking())
            .await
            .expect_err("the panic continues")
    });
    assert!(panicked.is_panic());
    assert_eq!(deploys("production", "async-panic", "panic"), 1);
    assert_eq!(in_flight("production", "async-panic"), 0);
}

#[test]
fn two_functions_under_one_domain_share_its_families() {
    assert_eq!(rollback(41).unwrap(), 41);
    assert_eq!(rollback(42).unwrap(), 42);
    assert_eq!(deploys("production", "rollback", "success"), 2);
    let families = hyperkit_obs::registry().gather();
    let names: Vec<&str> = families
        .iter()
        .map(|f| f.name())
        .filter(|n| n.starts_with("test_deploy"))
        .collect();
    assert_eq!(
        names,
        [
            "test_deploy_calls_total",
            "test_deploy_duration_seconds",
            "test_deploy_in_flight"
        ]
    );
    let help = families
        .iter()
        .find(|f| f.name() == "test_deploy_calls_total")
        .map(|f| f.help().to_owned());
    assert_eq!(
        help.as_deref(),
        Some("Deployments of a service. (calls that finished, by status)")
    );
    let buckets: Vec<f64> = find(
        "test_deploy_duration_seconds",
        &[("env", "production"), ("region", "rollback")],
    )
    .expect("the histogram of the label set")
    .get_histogram()
    .get_bucket()
    .iter()
    .map(|b| b.upper_bound())
    .collect();
    assert_eq!(buckets, [0.001, 0.01, 0.1, 1.0]);
}

#[test]
fn a_domain_without_labels_has_only_the_status_label() {
    beat();
    beat();
    // `find` matches the exact label set: only `status`.
    assert_eq!(
        counter("test_heartbeat_calls_total", &[("status", "success")]),
        2
    );
    assert!(
        !hyperkit_obs::registry()
            .gather()
            .iter()
            .any(|f| f.name() == "test_heartbeat_in_flight"),
        "in_flight = false: no gauge"
    );
    assert_eq!(Heartbeat::spec().in_flight(), None);
}

#[test]
fn integer_and_bool_labels_and_renamed_families() {
    for attempt in 1..=3 {
        let _ = retry(attempt);
    }
    let retries = |attempt, last, status| {
        counter(
            "test_retries_total",
            &[("attempt", attempt), ("last", last), ("status", status)],
        )
    };
    assert_eq!(retries("1", "false", "failure"), 1);
    assert_eq!(retries("2", "false", "failure"), 1);
    assert_eq!(retries("3", "true", "success"), 1);
    let last = [("attempt", "3"), ("last", "true")];
    assert_eq!(histogram_count("test_retry_seconds", &last), 1);
    assert_eq!(gauge("test_retries_running", &last), 0);
    assert_eq!(Retry::spec().name(), "job_retry");
}

#[test]
fn an_open_label_past_its_limit_is_recorded_as_overflow_and_counted() {
    // More distinct tenants than any limit another test could have set.
    let limit = hyperkit_obs::metrics::max_label_values();
    let overflow_before = counter(
        "hyperkit_obs_label_overflow_total",
        &[("metric", "test_tenant_calls_total"), ("label", "tenant")],
    );
    for i in 0..limit + 25 {
        serve(&format!("tenant-{i}"));
    }
    assert_eq!(
        counter(
            "test_tenant_calls_total",
            &[("tenant", "__overflow__"), ("status", "success")]
        ),
        25
    );
    assert_eq!(
        counter(
            "hyperkit_obs_label_overflow_total",
            &[("metric", "test_tenant_calls_total"), ("label", "tenant")]
        ) - overflow_before,
        25
    );
    assert_eq!(
        counter(
            "test_tenant_calls_total",
            &[("tenant", "tenant-0"), ("status", "success")]
        ),
        1,
        "values within the limit keep their own series"
    );
}

/// What a sink saw of one call of a user domain.
#[derive(Debug, PartialEq)]
struct Seen {
    domain: &'static str,
    function: &'static str,
    status: Status,
    labels: Vec<(String, String)>,
    error: Option<String>,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl CallSink for Recorder {
    fn on_call(&self, call: &FinishedCall<'_>) {
        if call.domain != "deploy" || call.label("region") != Some("to-sinks") {
            return;
        }
        self.0.lock().unwrap().push(Seen {
            domain: call.domain,
            function: call.function,
            status: call.status,
            labels: call
                .labels()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            error: call.error.map(ToString::to_string),
        });
        assert!(call.duration < Duration::from_secs(60));
    }
}

#[test]
fn every_sink_receives_the_calls_under_the_domains_name() {
    let recorder = Arc::new(Recorder::default());
    let _registration = calls::register(Arc::clone(&recorder));
    let spec = Spec {
        region: "to-sinks".into(),
    };
    let _ = deploy(Env::Staging, &spec, false);
    let _ = deploy(Env::Staging, &spec, true);
    let labels = vec![
        ("env".to_owned(), "staging".to_owned()),
        ("region".to_owned(), "to-sinks".to_owned()),
    ];
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            Seen {
                domain: "deploy",
                function: "deploy",
                status: Status::Success,
                labels: labels.clone(),
                error: None,
            },
            Seen {
                domain: "deploy",
                function: "deploy",
                status: Status::Failure,
                labels,
                error: Some("quota exceeded".into()),
            },
        ]
    );
}

#[test]
fn a_domains_spec_says_its_names() {
    let spec = Deploy::spec();
    assert_eq!(spec.name(), "deploy");
    assert_eq!(spec.labels(), ["env", "region"]);
    assert_eq!(spec.calls_total(), "test_deploy_calls_total");
    assert_eq!(spec.duration_seconds(), "test_deploy_duration_seconds");
    assert_eq!(spec.in_flight(), Some("test_deploy_in_flight"));
    assert_eq!(Tenant::spec().buckets(), hyperkit_obs::DEFAULT_BUCKETS);
}

#[track(Deploy, env = Env::Production, region = "threads")]
fn hammered(i: u64) -> Result<u64, DeployError> {
    if i.is_multiple_of(7) {
        Err(DeployError("every seventh"))
    } else {
        Ok(i)
    }
}

#[test]
fn calls_from_many_threads_at_once_are_counted_exactly() {
    // More threads than this machine's slots, so some share a shard.
    let threads = 80u64;
    let per_thread = 5_000u64;
    let barrier = Arc::new(std::sync::Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let _ = hammered(i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("no panic");
    }
    let failures = threads * (0..per_thread).filter(|i| i % 7 == 0).count() as u64;
    assert_eq!(deploys("production", "threads", "failure"), failures);
    assert_eq!(
        deploys("production", "threads", "success"),
        threads * per_thread - failures
    );
    assert_eq!(
        histogram_count(
            "test_deploy_duration_seconds",
            &[("env", "production"), ("region", "threads")]
        ),
        threads * per_thread
    );
    assert_eq!(in_flight("production", "threads"), 0);
}
