//! The call metrics of one label set, written without contention.
//!
//! A tracked call updates a calls counter, a histogram bucket, the
//! histogram's sum and (at its start) a started counter. Shared atomics
//! would put those on one cache line that every thread calling the function
//! fights over, and a locked read-modify-write costs more than the rest of
//! the call. Instead each thread that records holds a *slot* (one of a fixed
//! number, given out when the thread first records and handed back when it
//! exits), and each label set keeps one shard of counters per slot, made on
//! the slot's first use. A shard is written only by the thread holding its
//! slot, with a plain load and store; the collector sums the shards.
//! Threads beyond the number of slots (and a thread's last calls while its
//! thread-locals are being destroyed) share one more shard, updated with
//! atomic additions. Every count stays exact.
//!
//! The in-flight gauge is not stored: it is the started counter minus the
//! finished ones, read finished first, so it never reads below zero.
//!
//! Nothing here locks on the path of a call (a slot is claimed with one
//! compare-and-swap per thread), allocates after a slot's first use, or
//! panics.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets kept in a shard's first two cache lines; a histogram with more
/// keeps the rest beside it.
const INLINE_BUCKETS: usize = 8;

/// One thread's (or the shared) counters of one label set: 128 bytes,
/// aligned so that no two threads' shards share a cache line, nor a pair of
/// lines the adjacent-line prefetcher fetches together.
#[repr(align(128))]
pub(crate) struct Shard {
    started: AtomicU64,
    /// Calls finished: success, failure, panic, cancelled.
    finished: [AtomicU64; 4],
    /// Sum of the finished calls' durations, in nanoseconds.
    sum_ns: AtomicU64,
    /// The first buckets (not cumulative).
    buckets: [AtomicU64; INLINE_BUCKETS],
    /// The buckets past the inline ones (the last is `+Inf`).
    more: Box<[AtomicU64]>,
}

impl Shard {
    /// A shard for `buckets` buckets (bounds and `+Inf`).
    fn new(buckets: usize) -> Self {
        Shard {
            started: AtomicU64::new(0),
            finished: Default::default(),
            sum_ns: AtomicU64::new(0),
            buckets: Default::default(),
            more: (INLINE_BUCKETS..buckets)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    #[inline(always)]
    fn bucket(&self, i: usize) -> Option<&AtomicU64> {
        match self.buckets.get(i) {
            Some(c) => Some(c),
            None => self.more.get(i - INLINE_BUCKETS),
        }
    }
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Acquire)
}

/// How a shard is written: by its owner alone, or by anyone. An owned
/// writer is only ever used on the thread that got it.
#[derive(Clone, Copy)]
pub(crate) enum Writer<'a> {
    Owned(&'a Shard),
    Shared(&'a Shard),
}

impl<'a> Writer<'a> {
    #[inline(always)]
    fn shard(self) -> &'a Shard {
        match self {
            Writer::Owned(s) | Writer::Shared(s) => s,
        }
    }

    #[inline(always)]
    fn add(self, c: &AtomicU64, n: u64) {
        match self {
            // Only this thread writes an owned shard: no other write can
            // come between the load and the store. Release pairs with the
            // collector's acquire (see `snapshot`).
            Writer::Owned(_) => {
                c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release)
            }
            Writer::Shared(_) => {
                c.fetch_add(n, Ordering::Release);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Thread slots
// ---------------------------------------------------------------------------

/// The most slots there can be (bits of `CLAIMED`).
const MAX_SLOTS: usize = 64;

/// Bit `i` set: slot `i` is held by a live thread.
static CLAIMED: AtomicU64 = AtomicU64::new(0);

/// How many slots this process uses: four per CPU, at least 8 and at most
/// 64. A label set allocates shards only for the slots that recorded in it.
fn slot_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        (cpus * 4).clamp(8, MAX_SLOTS)
    })
}

/// This thread's slot, handed back when the thread exits.
struct Slot(Option<usize>);

impl Slot {
    fn claim() -> Slot {
        let count = slot_count();
        let mut claimed = CLAIMED.load(Ordering::Relaxed);
        loop {
            let free = (!claimed).trailing_zeros() as usize;
            if free >= count {
                return Slot(None);
            }
            // Acquire: the previous holder's writes to its shards happen
            // before this thread's first load of them.
            match CLAIMED.compare_exchange_weak(
                claimed,
                claimed | (1 << free),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Slot(Some(free)),
                Err(now) => claimed = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            // A call made later in this thread's exit (from another
            // thread-local's destructor) must not write the slot once it may
            // belong to another thread: forget it first, then hand it back.
            let _ = CACHED.try_with(|c| c.set(None));
            // Release: this thread's last writes happen before the next
            // holder's first read.
            CLAIMED.fetch_and(!(1 << i), Ordering::Release);
        }
    }
}

thread_local! {
    static SLOT: Slot = Slot::claim();
    /// `SLOT`'s value once claimed, so the hot path reads one `Cell` (no
    /// lazy-initialisation check); cleared by `SLOT`'s destructor.
    static CACHED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// This thread's slot, or `None` when it has none (all taken, or its
/// thread-locals are being destroyed).
#[inline(always)]
fn slot() -> Option<usize> {
    match CACHED.try_with(Cell::get) {
        Ok(Some(slot)) => Some(slot),
        _ => claim_slot(),
    }
}

#[cold]
#[inline(never)]
fn claim_slot() -> Option<usize> {
    // Fails once `SLOT` is destroyed: the thread is exiting.
    let slot = SLOT.try_with(|s| s.0).ok().flatten();
    if slot.is_some() {
        let _ = CACHED.try_with(|c| c.set(slot));
    }
    slot
}

// ---------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------

/// The counters of one label set: calls by status, a duration histogram
/// and, through the started counter, the calls in flight.
pub(crate) struct Cells {
    /// Upper bounds of the histogram's buckets, in nanoseconds.
    bounds_ns: &'static [u64],
    /// One shard per slot, boxed: an unused slot costs 16 bytes, and a
    /// scrape reads one word for it.
    slots: Box<[OnceLock<Box<Shard>>]>,
    shared: OnceLock<Box<Shard>>,
}

/// What the collector reads of one label set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Calls finished: success, failure, panic, cancelled.
    pub(crate) finished: [u64; 4],
    /// Calls running.
    pub(crate) in_flight: u64,
    /// Sum of the finished calls' durations, in nanoseconds.
    pub(crate) sum_ns: u64,
    /// Observations per bucket, not cumulative; the last is `+Inf`.
    pub(crate) buckets: Vec<u64>,
}

impl Snapshot {
    /// Observations in the histogram (the `+Inf` bucket's cumulative count).
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl Cells {
    /// Empty cells for a histogram with these bounds.
    pub(crate) fn new(bounds_ns: &'static [u64]) -> Self {
        Cells {
            bounds_ns,
            slots: (0..slot_count()).map(|_| OnceLock::new()).collect(),
            shared: OnceLock::new(),
        }
    }

    #[inline(always)]
    fn writer(&self) -> Writer<'_> {
        match slot().and_then(|i| self.slots.get(i)) {
            Some(cell) => match cell.get() {
                Some(shard) => Writer::Owned(shard),
                None => Writer::Owned(self.make(cell)),
            },
            None => Writer::Shared(self.make(&self.shared)),
        }
    }

    #[cold]
    #[inline(never)]
    fn make<'a>(&self, cell: &'a OnceLock<Box<Shard>>) -> &'a Shard {
        cell.get_or_init(|| Box::new(Shard::new(self.bounds_ns.len() + 1)))
    }

    /// Counts a call that started (for the in-flight gauge).
    #[inline(always)]
    pub(crate) fn start(&self) {
        let w = self.writer();
        w.add(&w.shard().started, 1);
    }

    /// This thread's writer, counting a start if `started`: for a call that
    /// will finish on this thread, which then passes it to
    /// [`finish_with`](Self::finish_with) instead of finding it again.
    #[inline(always)]
    pub(crate) fn start_here(&self, started: bool) -> Writer<'_> {
        let w = self.writer();
        if started {
            w.add(&w.shard().started, 1);
        }
        w
    }

    /// Counts a call that finished with status number `status` (in the
    /// order success, failure, panic, cancelled) after `ns` nanoseconds.
    #[inline(always)]
    pub(crate) fn finish(&self, status: usize, ns: u64) {
        self.finish_with(self.writer(), status, ns);
    }

    /// [`finish`](Self::finish) with the writer [`start_here`](Self::start_here)
    /// gave, on the same thread.
    #[inline(always)]
    pub(crate) fn finish_with(&self, w: Writer<'_>, status: usize, ns: u64) {
        let shard = w.shard();
        // A scan from the smallest bound: a fast call (the common case, and
        // the one where a few instructions show) stops at once; a call slow
        // enough to go far up the buckets does not notice the scan.
        let bucket = self
            .bounds_ns
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(self.bounds_ns.len());
        if let Some(c) = shard.bucket(bucket) {
            w.add(c, 1);
        }
        w.add(&shard.sum_ns, ns);
        if let Some(c) = shard.finished.get(status) {
            w.add(c, 1);
        }
    }

    fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.slots
            .iter()
            .chain(std::iter::once(&self.shared))
            .filter_map(|cell| cell.get().map(|shard| &**shard))
    }

    /// Calls finished, by status, summed over the shards.
    pub(crate) fn finished(&self) -> [u64; 4] {
        let mut finished = [0u64; 4];
        for shard in self.shards() {
            for (n, c) in finished.iter_mut().zip(&shard.finished) {
                *n = n.wrapping_add(read(c));
            }
        }
        finished
    }

    /// The histogram: observations per bucket (not cumulative, the last
    /// `+Inf`) into `buckets`, and the sum in nanoseconds.
    pub(crate) fn histogram(&self, buckets: &mut Vec<u64>) -> u64 {
        buckets.clear();
        buckets.resize(self.bounds_ns.len() + 1, 0);
        let mut sum = 0u64;
        for shard in self.shards() {
            for (i, n) in buckets.iter_mut().enumerate() {
                *n = n.wrapping_add(shard.bucket(i).map_or(0, read));
            }
            sum = sum.wrapping_add(read(&shard.sum_ns));
        }
        sum
    }

    /// Calls running: started minus finished (finished read first, see
    /// [`snapshot`](Self::snapshot)).
    pub(crate) fn in_flight(&self) -> u64 {
        let finished = self.finished().iter().fold(0u64, |a, n| a.wrapping_add(*n));
        let started = self
            .shards()
            .fold(0u64, |a, shard| a.wrapping_add(read(&shard.started)));
        started.saturating_sub(finished)
    }

    /// The sums over every shard.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            buckets: vec![0; self.bounds_ns.len() + 1],
            ..Snapshot::default()
        };
        // Finished counts first, started last: a call counted as finished
        // was counted as started before (its start happened before its
        // finish, and each store releases what came before it), so the
        // difference never goes below zero.
        for shard in self.shards() {
            for (n, c) in s.finished.iter_mut().zip(&shard.finished) {
                *n = n.wrapping_add(read(c));
            }
            for (i, n) in s.buckets.iter_mut().enumerate() {
                *n = n.wrapping_add(shard.bucket(i).map_or(0, read));
            }
            s.sum_ns = s.sum_ns.wrapping_add(read(&shard.sum_ns));
        }
        let finished: u64 = s.finished.iter().fold(0u64, |a, n| a.wrapping_add(*n));
        let started = self
            .shards()
            .fold(0u64, |a, shard| a.wrapping_add(read(&shard.started)));
        s.in_flight = started.saturating_sub(finished);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const BOUNDS: &[u64] = &[1_000, 1_000_000];

    #[test]
    fn a_call_is_counted_by_status_bucket_and_sum_and_leaves_nothing_in_flight() {
        let cells = Cells::new(BOUNDS);
        cells.start();
        cells.start();
        assert_eq!(cells.snapshot().in_flight, 2);
        cells.finish(0, 1_000);
        cells.finish(1, 5_000_000);
        let s = cells.snapshot();
        assert_eq!(s.finished, [1, 1, 0, 0]);
        assert_eq!(
            s.buckets,
            [1, 0, 1],
            "le is inclusive; past the last bound is +Inf"
        );
        assert_eq!(s.sum_ns, 5_001_000);
        assert_eq!(s.count(), 2);
        assert_eq!(s.in_flight, 0);
    }

    #[test]
    fn threads_beyond_the_slots_share_a_shard_and_every_count_is_exact() {
        let cells = Arc::new(Cells::new(BOUNDS));
        // Twice as many threads as there can be slots, all alive at once.
        let threads = slot_count() * 2 + 3;
        let per_thread = 2_000u64;
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let cells = Arc::clone(&cells);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..per_thread {
                        cells.start();
                        let status = (t + i as usize) % 4;
                        cells.finish(status, i);
                    }
                    barrier.wait();
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
        let s = cells.snapshot();
        let total = threads as u64 * per_thread;
        assert_eq!(s.finished.iter().sum::<u64>(), total);
        assert_eq!(s.count(), total);
        assert_eq!(s.in_flight, 0);
        assert_eq!(
            s.sum_ns,
            threads as u64 * (per_thread * (per_thread - 1) / 2)
        );
        assert!(cells.shared.get().is_some(), "some thread had no slot");
    }

    #[test]
    fn a_slot_is_handed_to_the_next_thread_and_its_counts_are_kept() {
        let cells = Arc::new(Cells::new(BOUNDS));
        for _ in 0..(slot_count() * 3) {
            let cells = Arc::clone(&cells);
            std::thread::spawn(move || cells.finish(0, 1))
                .join()
                .expect("no panic");
        }
        // Each thread's counts stay after it exits and its slot passes on
        // (whether a thread found a free slot depends on the other tests
        // running beside this one, so that is not asserted).
        let s = cells.snapshot();
        assert_eq!(s.finished[0], slot_count() as u64 * 3);
    }

    #[test]
    fn the_gauge_reads_calls_started_on_one_thread_and_finished_on_another() {
        let cells = Arc::new(Cells::new(BOUNDS));
        cells.start();
        let other = Arc::clone(&cells);
        std::thread::spawn(move || other.finish(3, 10))
            .join()
            .expect("no panic");
        let s = cells.snapshot();
        assert_eq!((s.in_flight, s.finished[3]), (0, 1));
    }
}
