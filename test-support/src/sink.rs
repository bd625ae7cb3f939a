//! The specification every background sink meets, written once and run
//! against each of them (Elasticsearch and Logstash in the `logs` binary,
//! MLflow in `mlflow`, Sentry in `sentry`, the OTLP span exporter in
//! `traces`), each through its own protocol
//! fixture and the shared export runtime:
//!
//! 1. while its server is up, what callers send arrives;
//! 2. while it is down, nothing sent within the queue's bound is lost: it
//!    arrives, once, after the server comes back on the same address;
//! 3. what is sent beyond the bound is dropped and counted exactly
//!    (`SinkStatus::dropped`, which `hyperkit_obs_dropped_total{sink}`
//!    reads);
//! 4. a caller never waits for the sink: no send, while the server is down,
//!    takes 5 ms or more of the caller's time, unless the scheduler took
//!    the CPU from it meanwhile (an involuntary context switch on a loaded
//!    machine is not the sink's doing, and is what this allows for);
//! 5. dropping the sink's guard delivers what is queued and returns within
//!    the guard's deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hyperkit_obs::export::SinkStatus;

use crate::wait::{wait_for, wait_until};

/// The slowest a send may take of the caller's time while the server is
/// down (point 4).
pub const WORST_SEND: Duration = Duration::from_millis(5);

/// A sink with its server, as the specification drives it.
pub trait SinkUnderTest {
    /// Sends item `id` the way a caller of the toolkit does (a log line, a
    /// tracked call, an event). Ids are unique and rising.
    fn send(&mut self, id: u64);

    /// How many times each id has arrived at the server, in full and
    /// accepted.
    fn arrived(&self) -> BTreeMap<u64, usize>;

    /// The sink's status.
    fn status(&self) -> SinkStatus;

    /// Takes the server down: its address refuses connections.
    fn take_down(&mut self);

    /// Brings the server back on the address the sink sends to.
    fn bring_back(&mut self);

    /// Drops the sink's guard, giving it the deadline [`check`] was given.
    fn drop_guard(&mut self);

    /// Whether an item may arrive twice: a sink that cannot know whether
    /// its last writes were read (Logstash's TCP input answers nothing)
    /// sends them again after reconnecting, and says so here.
    fn at_least_once(&self) -> bool {
        false
    }
}

/// The involuntary context switches of the calling thread so far.
fn preempted() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The slowest of a caller's calls that the scheduler let run: a call
/// during which the thread was preempted (an involuntary context switch, on
/// a loaded machine) is counted apart, not timed, so that a bound on the
/// rest measures the code, not the machine's load. A call that waits on a
/// lock, a pipe or the disk is a voluntary switch, and is timed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slowest {
    /// The slowest call not preempted.
    pub took: Duration,
    /// Calls preempted, not timed.
    pub preempted: usize,
    /// Calls timed.
    pub timed: usize,
}

impl Slowest {
    /// Runs `call`, timing it unless the scheduler preempted it.
    pub fn time<R>(&mut self, call: impl FnOnce() -> R) -> R {
        let before = preempted();
        let started = Instant::now();
        let out = call();
        let took = started.elapsed();
        if preempted() == before {
            self.took = self.took.max(took);
            self.timed += 1;
        } else {
            self.preempted += 1;
        }
        out
    }
}

/// Sends `ids`, timing each send (see [`Slowest`]).
fn timed_sends(sink: &mut dyn SinkUnderTest, ids: std::ops::Range<u64>) -> (Duration, usize) {
    let mut slowest = Slowest::default();
    for id in ids {
        slowest.time(|| sink.send(id));
    }
    (slowest.took, slowest.preempted)
}

/// Runs the specification against `sink`, whose server is up and which
/// has been sent nothing yet, started with a queue of `capacity` items and
/// a guard that delivers at drop within `deadline`. Panics, naming the
/// point, when it fails.
pub fn check(name: &str, capacity: usize, deadline: Duration, sink: &mut dyn SinkUnderTest) {
    let capacity = capacity as u64;
    let patience = Duration::from_secs(60);
    let arrived_exactly = |sink: &dyn SinkUnderTest, ids: &[std::ops::Range<u64>]| {
        let arrived = sink.arrived();
        let want: Vec<u64> = ids.iter().flat_map(|r| r.clone()).collect();
        want.iter().all(|id| arrived.contains_key(id))
    };

    // 1. Up: what is sent arrives.
    let warm = 0..10;
    for id in warm.clone() {
        sink.send(id);
    }
    wait_for(
        &format!("{name}: the first items to arrive while the server is up"),
        patience,
        || arrived_exactly(sink, std::slice::from_ref(&warm)),
    );
    let dropped_before = sink.status().dropped;

    // 2–4. Down: the queue fills, nothing blocks, the overflow is counted.
    sink.take_down();
    let held = 1_000..1_000 + capacity;
    let (worst_filling, interrupted_filling) = timed_sends(sink, held.clone());
    wait_for(
        &format!("{name}: the sink to notice its server is down"),
        patience,
        || sink.status().failing,
    );
    let overflow = 1_000_000..1_000_000 + capacity / 2 + 7;
    let (worst_full, interrupted_full) = timed_sends(sink, overflow.clone());
    let status = sink.status();
    assert_eq!(
        status.dropped - dropped_before,
        overflow.end - overflow.start,
        "{name}: every item sent beyond the bound of {capacity} is counted, no other: {status:?}"
    );
    assert_eq!(
        status.queued as u64, capacity,
        "{name}: the queue holds exactly its bound while the server is down: {status:?}"
    );
    let worst = worst_filling.max(worst_full);
    assert!(
        worst < WORST_SEND,
        "{name}: a send took {worst:?} of the caller's time while the server was down \
         ({} sends were interrupted by the scheduler and not counted)",
        interrupted_filling + interrupted_full
    );

    // 2. Back: everything held arrives, once; nothing dropped does.
    sink.bring_back();
    wait_for(
        &format!("{name}: the items held while the server was down to arrive after it came back"),
        patience,
        || arrived_exactly(sink, &[warm.clone(), held.clone()]),
    );
    // The server records a request before the sink reads the answer: wait
    // for the sink to know, so the queue has room again.
    wait_for(
        &format!("{name}: the sink to count what arrived as delivered"),
        patience,
        || sink.status().queued == 0,
    );

    // 5. Dropping the guard delivers what is queued, within its deadline.
    let last = 2_000_000..2_000_000 + capacity.min(20);
    for id in last.clone() {
        sink.send(id);
    }
    let before_drop = sink.status();
    let started = Instant::now();
    sink.drop_guard();
    let took = started.elapsed();
    // The guard waits for its worker a second past the deadline; the rest
    // is a margin for a descheduled thread.
    assert!(
        took <= deadline + Duration::from_secs(3),
        "{name}: dropping the guard took {took:?}, its deadline is {deadline:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || arrived_exactly(
            sink,
            std::slice::from_ref(&last)
        )),
        "{name}: what was queued at the guard's drop did not arrive within 10 s: \
         {} of {} arrived; the sink before the drop: {before_drop:?}",
        last.clone()
            .filter(|id| sink.arrived().contains_key(id))
            .count(),
        last.end - last.start,
    );

    let arrived = sink.arrived();
    for (id, times) in &arrived {
        assert!(
            !overflow.contains(id),
            "{name}: item {id} was counted as dropped, yet arrived"
        );
        if !sink.at_least_once() {
            assert_eq!(*times, 1, "{name}: item {id} arrived {times} times");
        }
    }
    assert_eq!(
        arrived.len() as u64,
        (warm.end - warm.start) + capacity + (last.end - last.start),
        "{name}: exactly the items sent and not dropped arrived"
    );
}
