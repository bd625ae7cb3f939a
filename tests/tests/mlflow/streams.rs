//! A streamed model call's MLflow run, written by the exporter to the local
//! file store and read back by MLflow 3's own Python client: besides the
//! latency to the stream's end, metrics `time_to_first_token_seconds` and
//! `output_tokens_per_second` (output tokens over the time after the first
//! item). The stream's items come at known intervals; the times are
//! bracketed by the test's own clock around the stream.

use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use hyperkit_obs::mlflow::{self, MlflowConfig, TrackingTarget};
use hyperkit_obs::{ModelChunk, track_model};
use serde_json::Value;
use test_support::TempDir;
use test_support::mlflow::{Version, read_runs, serial};

struct Word;

impl ModelChunk for Word {
    fn output_tokens(&self) -> Option<u64> {
        Some(1)
    }
}

/// `left` words, each ready `gap` after the previous poll returned one.
struct Paced {
    left: u32,
    gap: Duration,
}

impl Stream for Paced {
    type Item = Word;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Word>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        let since = Instant::now();
        while since.elapsed() < self.gap {
            std::thread::sleep(self.gap.saturating_sub(since.elapsed()));
        }
        Poll::Ready(Some(Word))
    }
}

#[track_model(model = "stream-mlflow", task = "chat")]
fn mlflow_stream(words: u32, gap: Duration) -> impl Stream<Item = Word> {
    Paced { left: words, gap }
}

#[test]
fn a_streamed_calls_run_has_its_time_to_first_token_and_output_rate() {
    let _serial = serial();
    let dir = TempDir::new("mlflow-stream");
    let root = dir.path().join("mlruns");
    let experiment = "hyperkit streamed calls";
    let mut config = MlflowConfig::default();
    config.target = TrackingTarget::FileStore(root.clone());
    config.experiment_name = experiment.to_owned();
    let guard = mlflow::start(&config).expect("exporter starts");

    let gap = Duration::from_millis(20);
    let called = Instant::now();
    let mut s = pin!(mlflow_stream(4, gap));
    let mut cx = Context::from_waker(Waker::noop());
    let mut first_seen = None;
    while let Poll::Ready(Some(_)) = s.as_mut().poll_next(&mut cx) {
        first_seen.get_or_insert_with(|| called.elapsed());
    }
    let ended = called.elapsed();
    let first_seen = first_seen.expect("four words");
    assert!(
        mlflow::flush(Duration::from_secs(30)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(10));

    let runs: Vec<Value> = read_runs(
        Version::V3,
        &format!("file://{}", root.display()),
        experiment,
    )
    .into_iter()
    .filter(|r| r["params"]["model"] == "stream-mlflow")
    .collect();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let metric = |key: &str| {
        runs[0]["metrics"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("metric {key} in {:#?}", runs[0]))
    };
    let (first, latency) = (
        metric("time_to_first_token_seconds"),
        metric("latency_seconds"),
    );
    // The call is timed by the calibrated TSC, the test by the OS clock:
    // 1% on each bound.
    let secs = Duration::as_secs_f64;
    assert!(
        secs(&gap) * 0.99 <= first && first <= secs(&first_seen) * 1.01,
        "first token after {first} s, within [{gap:?}, {first_seen:?}]"
    );
    assert!(
        first + 3.0 * secs(&gap) * 0.99 <= latency && latency <= secs(&ended) * 1.01,
        "latency {latency} s, within [{first} s + 3 × {gap:?}, {ended:?}]"
    );
    assert_eq!(metric("output_tokens"), 4.0);
    let rate = metric("output_tokens_per_second");
    let expected = 4.0 / (latency - first);
    assert!(
        (rate - expected).abs() <= expected * 1e-6,
        "{rate} tokens/s against 4 tokens in {} s",
        latency - first
    );
}
