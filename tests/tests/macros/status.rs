//! Every status path of every macro, sync and async: the counter, the
//! histogram count and the in-flight gauge move exactly as specified. Each
//! test uses its own label values, so tests running in parallel in this
//! process never read each other's series.

use std::panic::{AssertUnwindSafe, catch_unwind};

use hyperkit_obs::{ModelOutput, track_build, track_model, track_query};
use test_support::metrics::*;

#[derive(Debug)]
struct BuildError(&'static str);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[track_build(chain)]
fn build(chain: &str, outcome: u8) -> Result<u32, BuildError> {
    // The gauge is up while the body runs.
    assert_eq!(active(chain), 1, "in-flight gauge inside the body");
    match outcome {
        0 => Ok(7),
        1 => Err(BuildError("out of gas")),
        _ => panic!("compiler crashed"),
    }
}

#[track_build(chain)]
async fn build_async(chain: &str, outcome: u8) -> Result<u32, BuildError> {
    assert_eq!(active(chain), 1, "in-flight gauge inside the body");
    tokio::task::yield_now().await;
    match outcome {
        0 => Ok(7),
        1 => Err(BuildError("out of gas")),
        2 => panic!("compiler crashed"),
        _ => {
            Never.await;
            Ok(0)
        }
    }
}

fn assert_build(chain: &str, success: u64, failure: u64, panic: u64, cancelled: u64) {
    assert_eq!(
        [
            builds(chain, "success"),
            builds(chain, "failure"),
            builds(chain, "panic"),
            builds(chain, "cancelled")
        ],
        [success, failure, panic, cancelled],
        "hyperkit_builds_total{{chain={chain:?}}} by status success, failure, panic, cancelled"
    );
    assert_eq!(
        build_durations(chain),
        success + failure + panic + cancelled,
        "one duration sample per finished call"
    );
    assert_eq!(active(chain), 0, "the in-flight gauge returns to zero");
}

#[test]
fn sync_success_counts_success() {
    assert_eq!(build("s-ok", 0).unwrap(), 7);
    assert_build("s-ok", 1, 0, 0, 0);
}

#[test]
fn sync_err_counts_failure() {
    assert_eq!(build("s-err", 1).unwrap_err().0, "out of gas");
    assert_build("s-err", 0, 1, 0, 0);
}

#[test]
fn sync_panic_counts_panic_and_the_panic_continues() {
    let caught = catch_unwind(|| build("s-panic", 2)).unwrap_err();
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"compiler crashed"));
    assert_build("s-panic", 0, 0, 1, 0);
}

#[tokio::test]
async fn async_success_counts_success() {
    assert_eq!(build_async("a-ok", 0).await.unwrap(), 7);
    assert_build("a-ok", 1, 0, 0, 0);
}

#[tokio::test]
async fn async_err_counts_failure() {
    assert!(build_async("a-err", 1).await.is_err());
    assert_build("a-err", 0, 1, 0, 0);
}

#[tokio::test]
async fn async_panic_counts_panic_and_the_panic_continues() {
    let handle = tokio::spawn(build_async("a-panic", 2));
    let err = handle.await.unwrap_err();
    assert!(err.is_panic());
    assert_build("a-panic", 0, 0, 1, 0);
}

#[test]
fn async_dropped_before_finishing_counts_cancelled() {
    let fut = poll_once(Box::pin(build_async("a-cancel", 3))).expect("still pending");
    assert_eq!(active("a-cancel"), 1, "in flight while pending");
    drop(fut);
    assert_build("a-cancel", 0, 0, 0, 1);
}

#[test]
fn async_never_polled_records_nothing() {
    drop(build_async("a-unpolled", 0));
    assert_build("a-unpolled", 0, 0, 0, 0);
}

#[track_build(chain = "f-future")]
fn build_future(pending: bool) -> impl std::future::Future<Output = Result<u8, BuildError>> + Send {
    async move {
        if pending {
            Never.await;
        }
        Ok(1)
    }
}

#[test]
fn returned_future_counts_when_it_completes_or_is_dropped() {
    let fut = build_future(false);
    assert_eq!(
        active("f-future"),
        0,
        "nothing starts before the first poll"
    );
    assert!(poll_once(Box::pin(fut)).is_none());
    let pending = poll_once(Box::pin(build_future(true))).expect("pending");
    drop(pending);
    assert_build("f-future", 1, 0, 0, 1);
}

#[derive(Debug)]
struct Completion {
    input: u64,
    output: u64,
    accepted: Option<bool>,
}

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.input)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.output)
    }
    fn accepted(&self) -> Option<bool> {
        self.accepted
    }
}

#[track_model(model, task = "codegen")]
async fn complete(
    model: &str,
    fail: bool,
    accepted: Option<bool>,
) -> Result<Completion, BuildError> {
    tokio::task::yield_now().await;
    if fail {
        return Err(BuildError("rate limited"));
    }
    Ok(Completion {
        input: 100,
        output: 20,
        accepted,
    })
}

#[tokio::test]
async fn model_calls_count_status_latency_tokens_and_acceptance() {
    let m = "model-status";
    complete(m, false, Some(true)).await.unwrap();
    complete(m, false, Some(false)).await.unwrap();
    complete(m, false, None).await.unwrap();
    complete(m, true, None).await.unwrap_err();
    let labels = |extra: (&'static str, &'static str)| [("model", m), ("task", "codegen"), extra];
    assert_eq!(
        counter("hyperkit_model_calls_total", &labels(("status", "success"))),
        3
    );
    assert_eq!(
        counter("hyperkit_model_calls_total", &labels(("status", "failure"))),
        1
    );
    assert_eq!(
        histogram_count(
            "hyperkit_model_latency_seconds",
            &[("model", m), ("task", "codegen")]
        ),
        4
    );
    assert_eq!(
        counter("hyperkit_model_tokens_total", &labels(("type", "input"))),
        300
    );
    assert_eq!(
        counter("hyperkit_model_tokens_total", &labels(("type", "output"))),
        60
    );
    assert_eq!(
        counter(
            "hyperkit_model_acceptance_total",
            &labels(("accepted", "true"))
        ),
        1
    );
    assert_eq!(
        counter(
            "hyperkit_model_acceptance_total",
            &labels(("accepted", "false"))
        ),
        1
    );
}

#[track_model(model = "plain-model", task)]
fn complete_plain(task: &str) -> String {
    task.to_uppercase()
}

#[test]
fn model_output_without_model_output_still_gets_latency_and_status() {
    assert_eq!(complete_plain("plain-task"), "PLAIN-TASK");
    let l = [("model", "plain-model"), ("task", "plain-task")];
    assert_eq!(histogram_count("hyperkit_model_latency_seconds", &l), 1);
    assert_eq!(
        counter(
            "hyperkit_model_calls_total",
            &[l[0], l[1], ("status", "success")]
        ),
        1
    );
    assert_eq!(
        counter(
            "hyperkit_model_tokens_total",
            &[l[0], l[1], ("type", "input")]
        ),
        0
    );
}

#[track_query(operation = "select_status")]
fn query(fail: bool) -> Result<Vec<u32>, BuildError> {
    if fail {
        Err(BuildError("deadlock"))
    } else {
        Ok(vec![1, 2])
    }
}

#[test]
fn queries_count_status_and_duration() {
    query(false).unwrap();
    query(true).unwrap_err();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        #[track_query(operation = "select_status")]
        fn boom() -> u8 {
            panic!("lost connection")
        }
        boom()
    }));
    let q = |s| {
        counter(
            "hyperkit_db_queries_total",
            &[("operation", "select_status"), ("status", s)],
        )
    };
    assert_eq!((q("success"), q("failure"), q("panic")), (1, 1, 1));
    assert_eq!(
        histogram_count(
            "hyperkit_db_query_duration_seconds",
            &[("operation", "select_status")]
        ),
        3
    );
}

#[track_build(chain = "dur")]
fn slow_build() {
    std::thread::sleep(std::time::Duration::from_millis(30));
}

#[test]
fn the_duration_is_the_time_the_body_took() {
    slow_build();
    let sum = histogram_sum("hyperkit_build_duration_seconds", &[("chain", "dur")]);
    assert!(
        (0.03..1.0).contains(&sum),
        "observed {sum} s for a 30 ms body"
    );
}
