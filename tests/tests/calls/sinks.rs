//! A sink of the user's own, registered through `hyperkit_obs::calls`,
//! receives exactly the calls that finish: their domain, function, labels,
//! status and duration, whatever way they end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperkit_obs::calls::{self, CallSink, Feedback, FinishedCall};
use hyperkit_obs::{Status, track_build, track_model, track_query};

/// What the sink kept of one call.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    domain: &'static str,
    function: &'static str,
    status: Status,
    labels: Vec<(String, String)>,
    duration: Duration,
    error: Option<String>,
    error_type: Option<&'static str>,
    has_id: bool,
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Seen>>,
    accepted: Mutex<Vec<bool>>,
}

impl CallSink for Recorder {
    fn on_call(&self, call: &FinishedCall<'_>) {
        // Only this test's functions: other tests of this binary may run
        // tracked calls meanwhile.
        if !call.function.starts_with("sink_") {
            return;
        }
        self.calls.lock().unwrap().push(Seen {
            domain: call.domain,
            function: call.function,
            status: call.status,
            labels: call
                .labels()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            duration: call.duration,
            error: call.error.map(ToString::to_string),
            error_type: call.error_type,
            has_id: call.call_id.is_some(),
        });
    }

    fn on_feedback(&self, feedback: &Feedback) {
        let Feedback::Acceptance { call, accepted, .. } = feedback else {
            return;
        };
        if call.task() == "sink-test" {
            self.accepted.lock().unwrap().push(*accepted);
        }
    }
}

#[track_build(chain)]
fn sink_build(chain: &str, fail: bool) -> Result<u32, String> {
    std::thread::sleep(Duration::from_millis(20));
    if fail {
        Err(format!("{chain} ran out of gas"))
    } else {
        Ok(1)
    }
}

#[track_build(chain = "solana")]
fn sink_panicking_build() {
    panic!("the linker crashed");
}

#[track_model(model, task = "sink-test")]
async fn sink_complete(model: &str) -> String {
    if let Some(id) = hyperkit_obs::model::current_call_id() {
        hyperkit_obs::model::record_acceptance(id, true);
    }
    format!("{model} answered")
}

#[track_query(operation = "sink_select")]
async fn sink_query() {
    test_support::metrics::Never.await;
}

/// The tests of this file one at a time: each sink sees every call.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_registered_sink_receives_exactly_the_finished_calls_of_every_outcome() {
    let _one = serial();
    let recorder = Arc::new(Recorder::default());
    let registration = calls::register(Arc::clone(&recorder));

    assert_eq!(sink_build("ethereum", false), Ok(1));
    assert!(sink_build("base", true).is_err());
    assert!(std::panic::catch_unwind(sink_panicking_build).is_err());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(sink_complete("small-1")), "small-1 answered");
    // Polled once, then dropped before it finishes.
    let pending = test_support::metrics::poll_once(Box::pin(sink_query()));
    assert!(pending.is_some());
    drop(pending);

    drop(registration);
    // After the registration is dropped nothing more arrives.
    let _ = sink_build("ethereum", false);

    let seen = recorder.calls.lock().unwrap().clone();
    let summary: Vec<_> = seen
        .iter()
        .map(|s| (s.domain, s.function, s.status, s.labels.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "build",
                "sink_build",
                Status::Success,
                labels(&[("chain", "ethereum")])
            ),
            (
                "build",
                "sink_build",
                Status::Failure,
                labels(&[("chain", "base")])
            ),
            (
                "build",
                "sink_panicking_build",
                Status::Panic,
                labels(&[("chain", "solana")])
            ),
            (
                "model",
                "sink_complete",
                Status::Success,
                labels(&[("model", "small-1"), ("task", "sink-test")])
            ),
            (
                "query",
                "sink_query",
                Status::Cancelled,
                labels(&[("operation", "sink_select")])
            ),
        ]
    );
    // The durations are the calls' own: the builds slept 20 ms.
    assert!(
        seen[0].duration >= Duration::from_millis(20),
        "{:?}",
        seen[0]
    );
    assert!(
        seen[1].duration >= Duration::from_millis(20),
        "{:?}",
        seen[1]
    );
    assert_eq!(seen[1].error.as_deref(), Some("base ran out of gas"));
    assert_eq!(seen[1].error_type, Some("alloc::string::String"));
    assert_eq!(seen[0].error, None);
    assert!(
        seen[3].has_id && !seen[0].has_id,
        "only model calls have ids"
    );
    assert_eq!(*recorder.accepted.lock().unwrap(), [true]);
}

/// A sink that panics on every call of this file's functions (the other
/// tests of this binary make tracked calls too: they must not pay for a
/// panic, nor print one).
struct Broken;

impl CallSink for Broken {
    fn on_call(&self, call: &FinishedCall<'_>) {
        if call.function.starts_with("sink_") {
            panic!("a broken sink");
        }
    }
}

#[test]
fn a_panicking_sink_never_reaches_the_caller_nor_the_other_sinks() {
    let _one = serial();
    let recorder = Arc::new(Recorder::default());
    let _broken = calls::register(Broken);
    let _kept = calls::register(Arc::clone(&recorder));
    assert_eq!(sink_build("polygon", false), Ok(1));
    let seen = recorder.calls.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| s.labels == labels(&[("chain", "polygon")])),
        "{seen:?}"
    );
}
