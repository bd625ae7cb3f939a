//! `#[track_model]` on a function returning a stream: the call lasts until
//! the stream ends. Time to first item and total latency are bracketed by
//! what the test itself observes around a channel-driven stream whose items
//! it releases (no sleeps-and-hope: each delay is a lower bound the test
//! waits out, each upper bound the test's own clock); status, tokens and the
//! in-flight gauge are checked for a stream that ends, fails midway, is
//! dropped after two items and is dropped before its first poll; and the
//! items pass through unchanged, in order.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_util::StreamExt;
use hyperkit_obs::calls::{self, CallSink, FinishedCall};
use hyperkit_obs::model::Usage;
use hyperkit_obs::{ModelChunk, Status, track_model};
use proptest::prelude::*;
use test_support::metrics::{counter, gauge, histogram_count, histogram_sum};
use tokio::sync::mpsc;

/// One streamed piece of an answer; the last may carry the provider's
/// usage.
#[derive(Clone, Debug, PartialEq)]
enum Chunk {
    Text(String),
    Done { input: u64, output: u64 },
}

impl ModelChunk for Chunk {
    fn output_tokens(&self) -> Option<u64> {
        match self {
            Chunk::Text(t) => Some(t.split_whitespace().count() as u64),
            Chunk::Done { .. } => None,
        }
    }
    fn final_usage(&self) -> Option<Usage> {
        match self {
            Chunk::Done { input, output } => Some(Usage {
                input_tokens: Some(*input),
                output_tokens: Some(*output),
                ..Usage::default()
            }),
            Chunk::Text(_) => None,
        }
    }
}

type Item = Result<Chunk, String>;

/// A stream the test drives: each item arrives when the test sends it, and
/// the stream ends when the sender is dropped.
struct Channel(mpsc::UnboundedReceiver<Item>);

impl Stream for Channel {
    type Item = Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.0.poll_recv(cx)
    }
}

fn channel() -> (mpsc::UnboundedSender<Item>, Channel) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Channel(rx))
}

#[track_model(model, task)]
fn stream_chat(model: &str, task: &str, answer: Channel) -> impl Stream<Item = Item> + Send {
    answer
}

#[track_model(model, task)]
async fn stream_connect(
    model: &str,
    task: &str,
    answer: Result<Channel, String>,
) -> Result<impl Stream<Item = Item> + Send, String> {
    answer
}

/// What the sink kept of one streamed call.
#[derive(Clone, Debug)]
struct Seen {
    task: String,
    status: Status,
    duration: Duration,
    time_to_first_token: Option<Duration>,
    usage: Option<Usage>,
    error: Option<String>,
    rate: Option<f64>,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl CallSink for Recorder {
    fn on_call(&self, call: &FinishedCall<'_>) {
        if !call.function.starts_with("stream_") {
            return;
        }
        self.0.lock().unwrap().push(Seen {
            task: call.label("task").unwrap_or_default().to_owned(),
            status: call.status,
            duration: call.duration,
            time_to_first_token: call.time_to_first_token,
            usage: call.usage,
            error: call.error.map(ToString::to_string),
            rate: call.output_tokens_per_second(),
        });
    }
}

impl Recorder {
    /// The one call recorded for `task`.
    fn only(&self, task: &str) -> Seen {
        let seen: Vec<Seen> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.task == task)
            .cloned()
            .collect();
        assert_eq!(seen.len(), 1, "one call recorded for {task}: {seen:?}");
        seen.into_iter().next().unwrap()
    }

    fn none(&self, task: &str) -> bool {
        !self.0.lock().unwrap().iter().any(|s| s.task == task)
    }
}

/// One recorder for the whole binary, registered once; each test reads
/// only its own task's calls.
fn recorder() -> &'static Recorder {
    static RECORDER: std::sync::OnceLock<(Arc<Recorder>, calls::Registration)> =
        std::sync::OnceLock::new();
    &RECORDER
        .get_or_init(|| {
            let r = Arc::new(Recorder::default());
            let registration = calls::register(Arc::clone(&r));
            (r, registration)
        })
        .0
}

/// The tests that read the recorder's calls while others run: the
/// recorder is shared, so each holds this while it acts.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn calls_of(task: &str, status: &str) -> u64 {
    counter(
        "hyperkit_model_calls_total",
        &[("model", "stream-1"), ("task", task), ("status", status)],
    )
}

fn in_flight(task: &str) -> i64 {
    gauge(
        "hyperkit_model_calls_in_flight",
        &[("model", "stream-1"), ("task", task)],
    )
}

fn tokens(task: &str, kind: &str) -> u64 {
    counter(
        "hyperkit_model_tokens_total",
        &[("model", "stream-1"), ("task", task), ("type", kind)],
    )
}

fn text(t: &str) -> Item {
    Ok(Chunk::Text(t.to_owned()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Waits until `since` is at least `delay` old (a lower bound the test
/// needs, not a guess at how long something takes).
fn wait_out(since: Instant, delay: Duration) {
    while since.elapsed() < delay {
        std::thread::sleep(delay.saturating_sub(since.elapsed()));
    }
}

#[test]
fn time_to_first_item_and_latency_run_from_the_call_to_the_first_item_and_the_end() {
    let _one = serial();
    let recorder = recorder();
    let task = "timed";
    let rt = runtime();
    let (tx, answer) = channel();
    let delay = Duration::from_millis(60);

    let called = Instant::now();
    let mut s = Box::pin(stream_chat("stream-1", task, answer));
    assert_eq!(in_flight(task), 1, "in flight from the call on");
    wait_out(called, delay);
    tx.send(text("hello there")).unwrap();
    assert_eq!(rt.block_on(s.next()), Some(text("hello there")));
    let first_seen = called.elapsed();
    assert_eq!(
        histogram_count(
            "hyperkit_model_time_to_first_token_seconds",
            &[("model", "stream-1"), ("task", task)]
        ),
        1,
        "recorded at the first item, before the end"
    );
    assert_eq!(in_flight(task), 1, "in flight until the stream ends");

    let second_sent = Instant::now();
    wait_out(second_sent, delay);
    tx.send(text("world")).unwrap();
    drop(tx);
    assert_eq!(rt.block_on(s.next()), Some(text("world")));
    assert_eq!(calls_of(task, "success"), 0, "not finished before the end");
    assert_eq!(rt.block_on(s.next()), None);
    let ended = called.elapsed();

    let seen = recorder.only(task);
    assert_eq!(seen.status, Status::Success);
    let first = seen.time_to_first_token.expect("a first item");
    // Bracketed: at least the delay before the first item was sent, at most
    // what the test measured around the whole exchange. The calls are timed
    // by the calibrated TSC (quanta), the test by the OS clock: the two
    // may differ by a fraction of a percent, so each bound has 1%.
    let within =
        |d: Duration, lo: Duration, hi: Duration| lo.mul_f64(0.99) <= d && d <= hi.mul_f64(1.01);
    assert!(
        within(first, delay, first_seen),
        "time to first item {first:?} within [{delay:?}, {first_seen:?}] ±1%"
    );
    assert!(
        within(seen.duration, first + delay, ended),
        "latency {:?} within [{:?}, {ended:?}] ±1%",
        seen.duration,
        first + delay
    );
    let ttft_sum = histogram_sum(
        "hyperkit_model_time_to_first_token_seconds",
        &[("model", "stream-1"), ("task", task)],
    );
    assert!(
        (ttft_sum - first.as_secs_f64()).abs() < 1e-6,
        "the histogram holds the same time: {ttft_sum} s against {first:?}"
    );
    assert_eq!(calls_of(task, "success"), 1);
    assert_eq!(in_flight(task), 0);
    assert_eq!(tokens(task, "output"), 3, "summed over the items");
    let rate = seen.rate.expect("output tokens per second");
    let after_first = (seen.duration - first).as_secs_f64();
    assert!((rate - 3.0 / after_first).abs() < 1e-6, "rate {rate}");
}

#[test]
fn a_stream_that_ends_succeeds_with_the_providers_final_usage() {
    let _one = serial();
    let recorder = recorder();
    let task = "ends";
    let rt = runtime();
    let (tx, answer) = channel();
    for item in [
        text("one two"),
        text("three"),
        Ok(Chunk::Done {
            input: 12,
            output: 4,
        }),
    ] {
        tx.send(item).unwrap();
    }
    drop(tx);
    let got: Vec<Item> = rt.block_on(stream_chat("stream-1", task, answer).collect());
    assert_eq!(got.len(), 3);
    let seen = recorder.only(task);
    assert_eq!(seen.status, Status::Success);
    assert_eq!(
        seen.usage,
        Some(Usage {
            input_tokens: Some(12),
            output_tokens: Some(4),
            ..Usage::default()
        }),
        "the provider's count wins over the 3 summed"
    );
    assert_eq!(tokens(task, "input"), 12);
    assert_eq!(tokens(task, "output"), 4);
    assert_eq!(calls_of(task, "success"), 1);
    assert_eq!(in_flight(task), 0);
}

#[test]
fn the_first_err_item_is_a_failure_and_the_stream_goes_on_unchanged() {
    let _one = serial();
    let recorder = recorder();
    let task = "fails";
    let rt = runtime();
    let (tx, answer) = channel();
    for item in [
        text("a b"),
        Err("rate limited".to_owned()),
        text("c"),
        Err("again".to_owned()),
    ] {
        tx.send(item).unwrap();
    }
    drop(tx);
    let mut s = Box::pin(stream_chat("stream-1", task, answer));
    assert_eq!(rt.block_on(s.next()), Some(text("a b")));
    assert_eq!(rt.block_on(s.next()), Some(Err("rate limited".to_owned())));
    assert_eq!(calls_of(task, "failure"), 1, "recorded at the first Err");
    assert_eq!(in_flight(task), 0, "the call ended with its failure");
    let rest: Vec<Item> = rt.block_on(s.collect());
    assert_eq!(rest, [text("c"), Err("again".to_owned())], "items go on");

    let seen = recorder.only(task);
    assert_eq!(seen.status, Status::Failure);
    assert_eq!(seen.error.as_deref(), Some("rate limited"));
    assert_eq!(
        seen.usage.and_then(|u| u.output_tokens),
        Some(2),
        "tokens streamed before the failure"
    );
    assert_eq!(calls_of(task, "failure"), 1, "once");
    assert_eq!(calls_of(task, "success"), 0);
    assert_eq!(in_flight(task), 0);
}

#[test]
fn a_stream_dropped_after_two_items_is_cancelled_with_their_tokens() {
    let _one = serial();
    let recorder = recorder();
    let task = "dropped-after-two";
    let rt = runtime();
    let (tx, answer) = channel();
    for item in [text("a"), text("b c"), text("never read")] {
        tx.send(item).unwrap();
    }
    let mut s = Box::pin(stream_chat("stream-1", task, answer));
    assert_eq!(rt.block_on(s.next()), Some(text("a")));
    assert_eq!(rt.block_on(s.next()), Some(text("b c")));
    assert_eq!(in_flight(task), 1);
    drop(s);

    let seen = recorder.only(task);
    assert_eq!(seen.status, Status::Cancelled);
    assert!(seen.time_to_first_token.is_some());
    assert_eq!(seen.usage.and_then(|u| u.output_tokens), Some(3));
    assert_eq!(tokens(task, "output"), 3);
    assert_eq!(calls_of(task, "cancelled"), 1);
    assert_eq!(in_flight(task), 0);
    drop(tx);
}

#[test]
fn a_stream_dropped_before_its_first_poll_is_cancelled() {
    let _one = serial();
    let recorder = recorder();
    let task = "dropped-unpolled";
    let (_tx, answer) = channel();
    let s = stream_chat("stream-1", task, answer);
    assert_eq!(in_flight(task), 1);
    assert!(recorder.none(task), "nothing finished at creation");
    drop(s);

    let seen = recorder.only(task);
    assert_eq!(seen.status, Status::Cancelled);
    assert_eq!(seen.time_to_first_token, None);
    assert_eq!(seen.usage, None);
    assert_eq!(calls_of(task, "cancelled"), 1);
    assert_eq!(in_flight(task), 0);
}

#[test]
fn an_async_fn_returning_a_stream_lasts_until_the_stream_ends_or_fails_with_its_err() {
    let _one = serial();
    let recorder = recorder();
    let rt = runtime();

    let task = "async-ok";
    let (tx, answer) = channel();
    tx.send(text("x y")).unwrap();
    drop(tx);
    let s = rt
        .block_on(stream_connect("stream-1", task, Ok(answer)))
        .unwrap();
    assert!(recorder.none(task), "the call goes on with the stream");
    assert_eq!(in_flight(task), 1);
    assert_eq!(rt.block_on(s.collect::<Vec<_>>()), [text("x y")]);
    let seen = recorder.only(task);
    assert_eq!(seen.status, Status::Success);
    assert_eq!(seen.usage.and_then(|u| u.output_tokens), Some(2));
    assert_eq!(in_flight(task), 0);

    let task = "async-err";
    let err = rt.block_on(stream_connect("stream-1", task, Err("no capacity".into())));
    assert!(err.is_err());
    let seen = recorder.only(task);
    assert_eq!(seen.status, Status::Failure);
    assert_eq!(seen.error.as_deref(), Some("no capacity"));
    assert_eq!(seen.time_to_first_token, None);
    assert_eq!(in_flight(task), 0);
}

#[track_model(model, task = "property")]
fn stream_items(model: &str, items: Vec<Item>) -> impl Stream<Item = Item> + Send {
    futures_util::stream::iter(items)
}

#[test]
fn a_streamed_calls_cost_is_priced_from_its_summed_usage_at_the_end_or_drop() {
    use hyperkit_obs::model::{ModelPrice, PriceTable, install_prices};
    let _one = serial();
    let recorder = recorder();
    // 2.5 USD per million input tokens, 10 per million output tokens.
    let table = PriceTable::new().with(
        "stream-1",
        ModelPrice::usd_per_million(2.5, 10.0).expect("a valid price"),
    );
    install_prices(Some(&table));
    let cost = |task| {
        test_support::metrics::total(
            "hyperkit_model_cost_usd_total",
            &[("model", "stream-1"), ("task", task)],
        )
    };
    let rt = runtime();

    // Ends: 1,000 input and 2,000 output tokens, the provider's final usage
    // (the items' words sum to the same 2,000).
    let task = "priced-ends";
    let (tx, answer) = channel();
    let words = |n: usize| vec!["w"; n].join(" ");
    tx.send(text(&words(1500))).unwrap();
    tx.send(text(&words(500))).unwrap();
    tx.send(Ok(Chunk::Done {
        input: 1000,
        output: 2000,
    }))
    .unwrap();
    drop(tx);
    assert_eq!(
        rt.block_on(stream_chat("stream-1", task, answer).count()),
        3
    );
    // 1,000 × 2.5 / 1e6 + 2,000 × 10 / 1e6 = 0.0025 + 0.02
    assert_eq!(cost(task), 0.0225);

    // Dropped after one item of 400 tokens: those are paid for.
    let task = "priced-dropped";
    let (tx, answer) = channel();
    tx.send(text(&words(400))).unwrap();
    let mut s = Box::pin(stream_chat("stream-1", task, answer));
    assert!(rt.block_on(s.next()).is_some());
    drop(s);
    install_prices(None);
    assert_eq!(recorder.only(task).status, Status::Cancelled);
    // 400 × 10 / 1e6
    assert_eq!(cost(task), 0.004);
}

/// The same stream, unannotated.
fn plain(items: Vec<Item>) -> impl Stream<Item = Item> + Send {
    futures_util::stream::iter(items)
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        "[a-z ]{0,12}".prop_map(|t| Ok(Chunk::Text(t))),
        (0u64..100, 0u64..100).prop_map(|(input, output)| Ok(Chunk::Done { input, output })),
        "[a-z]{1,6}".prop_map(Err),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn items_their_order_and_the_size_hint_are_the_unannotated_streams(
        items in proptest::collection::vec(item(), 0..20)
    ) {
        let rt = runtime();
        let mut tracked = Box::pin(stream_items("stream-1", items.clone()));
        let mut bare = Box::pin(plain(items.clone()));
        let (mut got, mut want) = (Vec::new(), Vec::new());
        loop {
            prop_assert_eq!(tracked.size_hint(), bare.size_hint());
            let (a, b) = rt.block_on(async { (tracked.next().await, bare.next().await) });
            if a.is_none() && b.is_none() {
                break;
            }
            got.extend(a);
            want.extend(b);
        }
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(got, items);
    }
}
