//! The runtime's behaviour, against exporters that succeed, fail, stall,
//! refuse and panic on command.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// What the test exporter saw, and what it is told to do.
#[derive(Default)]
struct Script {
    /// Every batch it was given, in order.
    batches: Mutex<Vec<Vec<u32>>>,
    /// Attempts to fail (retrying the whole batch) before succeeding.
    fail_next: AtomicUsize,
    /// While set, every attempt fails and retries its batch.
    down: AtomicBool,
    /// Items it refuses for good.
    refuse: Mutex<Vec<u32>>,
    /// Panics on the next batch.
    panic_next: AtomicBool,
    /// `Retry-After` to report with a failure.
    retry_after: Mutex<Option<Duration>>,
    /// When each attempt started.
    attempts: Mutex<Vec<Instant>>,
}

impl Script {
    fn delivered(&self) -> Vec<u32> {
        let refused = self.refuse.lock().unwrap().clone();
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .filter(|i| !refused.contains(i))
            .collect()
    }
}

struct Scripted(Arc<Script>);

impl Exporter for Scripted {
    type Item = u32;

    fn export(&mut self, batch: Vec<u32>, delivery: &mut Delivery<'_, u32>) {
        let s = &self.0;
        s.attempts.lock().unwrap().push(Instant::now());
        if s.panic_next.swap(false, Ordering::SeqCst) {
            panic!("scripted panic");
        }
        let failing = s.down.load(Ordering::SeqCst)
            || s.fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if failing {
            delivery.fail("backend down");
            if let Some(wait) = *s.retry_after.lock().unwrap() {
                delivery.retry_after(wait);
            }
            delivery.retry_all(batch);
            return;
        }
        let refused = s.refuse.lock().unwrap().clone();
        delivery.reject(batch.iter().filter(|i| refused.contains(i)).count());
        s.batches.lock().unwrap().push(batch);
    }

    fn weight(&self, _item: &u32) -> usize {
        10
    }
}

fn start(options: Options) -> (Guard<u32>, Arc<Script>) {
    let script = Arc::new(Script::default());
    let guard = spawn(options, Scripted(Arc::clone(&script))).unwrap();
    (guard, script)
}

fn options(sink: &'static str) -> Options {
    Options::new(sink, "test backend")
        .retry(Duration::from_millis(10), Duration::from_millis(50))
        .health_check(false)
}

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn items_are_delivered_in_order_and_flush_waits_for_them() {
    let (guard, script) = start(options("t-order"));
    let handle = guard.handle();
    for i in 0..500 {
        assert!(handle.send(i));
    }
    assert!(handle.flush(PATIENCE));
    assert_eq!(script.delivered(), (0..500).collect::<Vec<_>>());
    let status = handle.status();
    assert_eq!(
        (status.delivered, status.queued, status.dropped),
        (500, 0, 0)
    );
    assert!(status.healthy() && status.last_success_ms.is_some());
}

#[test]
fn batches_respect_the_count_and_byte_limits() {
    let (guard, script) = start(options("t-batch").batch(7, 50));
    let handle = guard.handle();
    for i in 0..40 {
        handle.send(i);
    }
    assert!(handle.flush(PATIENCE));
    let batches = script.batches.lock().unwrap().clone();
    // 10 bytes an item and 50 at most: never more than 5 at once.
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 5),
        "{batches:?}"
    );
    assert_eq!(batches.concat(), (0..40).collect::<Vec<_>>());
}

#[test]
fn a_batch_waits_for_linger_unless_it_is_full() {
    let (guard, script) = start(
        options("t-linger")
            .batch(3, 0)
            .linger(Duration::from_secs(3600)),
    );
    let handle = guard.handle();
    handle.send(1);
    handle.send(2);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        script.batches.lock().unwrap().is_empty(),
        "two items wait for a third"
    );
    handle.send(3);
    let deadline = Instant::now() + PATIENCE;
    while script.batches.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(script.batches.lock().unwrap().clone(), vec![vec![1, 2, 3]]);
    // A flush does not wait for the linger either.
    handle.send(4);
    assert!(handle.flush(PATIENCE));
    assert_eq!(script.delivered(), vec![1, 2, 3, 4]);
}

#[test]
fn failed_attempts_are_retried_with_backoff_and_nothing_is_lost() {
    let (guard, script) = start(options("t-retry"));
    script.fail_next.store(3, Ordering::SeqCst);
    let handle = guard.handle();
    for i in 0..20 {
        handle.send(i);
    }
    assert!(handle.flush(PATIENCE));
    assert_eq!(script.delivered(), (0..20).collect::<Vec<_>>());
    let attempts = script.attempts.lock().unwrap().clone();
    assert!(attempts.len() >= 4, "{} attempts", attempts.len());
    // Each wait at least the first backoff step (10 ms).
    for pair in attempts.windows(2).take(3) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(10));
    }
    let status = handle.status();
    assert!(!status.failing, "a success clears the failure");
    assert_eq!(status.last_error.as_deref(), Some("backend down"));
}

#[test]
fn retry_after_replaces_the_backoff() {
    let (guard, script) =
        start(options("t-retry-after").retry(Duration::from_millis(1), Duration::from_secs(10)));
    *script.retry_after.lock().unwrap() = Some(Duration::from_millis(400));
    script.fail_next.store(1, Ordering::SeqCst);
    let handle = guard.handle();
    handle.send(7);
    assert!(handle.flush(PATIENCE));
    let attempts = script.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1] - attempts[0] >= Duration::from_millis(400));
}

#[test]
fn a_sink_that_is_down_keeps_its_queue_and_counts_exactly_what_overflows() {
    let (guard, script) = start(options("t-down").capacity(100));
    script.down.store(true, Ordering::SeqCst);
    let handle = guard.handle();
    let dropped_before = crate::metrics::dropped_counter("t-down").get();
    let mut worst = Duration::ZERO;
    let mut accepted = 0;
    for i in 0..1_000 {
        let t = Instant::now();
        if handle.send(i) {
            accepted += 1;
        }
        worst = worst.max(t.elapsed());
    }
    assert_eq!(accepted, 100);
    assert!(
        worst < Duration::from_millis(5),
        "worst send took {worst:?}"
    );
    let status = handle.status();
    assert_eq!((status.queued, status.dropped), (100, 900));
    assert_eq!(
        crate::metrics::dropped_counter("t-down").get() - dropped_before,
        900
    );
    assert!(
        !handle.flush(Duration::from_millis(100)),
        "nothing is delivered while down"
    );
    // The backend comes back: the 100 kept items arrive, in order.
    script.down.store(false, Ordering::SeqCst);
    assert!(handle.flush(PATIENCE));
    assert_eq!(script.delivered(), (0..100).collect::<Vec<_>>());
    assert_eq!(handle.status().delivered, 100);
}

#[test]
fn refused_items_are_counted_and_not_retried() {
    let (guard, script) = start(options("t-refuse"));
    *script.refuse.lock().unwrap() = vec![3, 5];
    let handle = guard.handle();
    for i in 0..10 {
        handle.send(i);
    }
    assert!(handle.flush(PATIENCE));
    let status = handle.status();
    assert_eq!(
        (status.delivered, status.rejected, status.dropped),
        (8, 2, 0)
    );
    assert_eq!(
        script.attempts.lock().unwrap().len(),
        script.batches.lock().unwrap().len()
    );
}

#[test]
fn a_panicking_exporter_loses_its_batch_counted_and_the_sink_goes_on() {
    let (guard, script) = start(options("t-panic").batch(5, 0));
    let handle = guard.handle();
    script.panic_next.store(true, Ordering::SeqCst);
    for i in 0..5 {
        handle.send(i);
    }
    assert!(handle.flush(PATIENCE));
    for i in 5..10 {
        handle.send(i);
    }
    assert!(handle.flush(PATIENCE));
    let status = handle.status();
    assert_eq!((status.dropped, status.delivered), (5, 5));
    assert!(status.running);
    assert_eq!(script.delivered(), (5..10).collect::<Vec<_>>());
}

#[test]
fn dropping_the_guard_delivers_within_the_deadline_then_counts_the_rest() {
    let (guard, script) = start(options("t-stop").shutdown_deadline(Duration::from_secs(10)));
    let handle = guard.handle();
    for i in 0..50 {
        handle.send(i);
    }
    drop(guard);
    assert_eq!(
        script.delivered().len(),
        50,
        "delivered before the drop returned"
    );
    assert!(!handle.send(99), "a stopped sink accepts nothing");
    assert_eq!(handle.status().dropped, 1);

    let (guard, script) =
        start(options("t-stop-down").shutdown_deadline(Duration::from_millis(300)));
    script.down.store(true, Ordering::SeqCst);
    let handle = guard.handle();
    for i in 0..50 {
        handle.send(i);
    }
    let t = Instant::now();
    drop(guard);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the drop took {:?}",
        t.elapsed()
    );
    let status = handle.status();
    assert_eq!(
        (status.dropped, status.queued, status.running),
        (50, 0, false)
    );
}

#[test]
fn statuses_list_the_running_sinks() {
    let (guard, _script) = start(options("t-listed"));
    guard.handle().send(1);
    assert!(guard.handle().flush(PATIENCE));
    let mine = statuses()
        .into_iter()
        .find(|s| s.sink == "t-listed")
        .unwrap();
    assert_eq!(mine.target, "test backend");
    assert!(
        mine.summary()
            .starts_with("test backend: 0 queued, 1 delivered"),
        "{}",
        mine.summary()
    );
}
