//! The store's background writer, a sink on the shared export runtime: the
//! logging caller only sends on a bounded queue and never waits on disk;
//! a full queue drops and counts. A disk that is full or failing keeps
//! the batch for a retry; a store that refuses it for good drops it,
//! counted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{LogStore, Retention, StoreEntry, StoreError};
use crate::export::Handle;
use crate::util::unix_ms as now_millis;

/// The sink name of the store's writer: its `sink` label and readiness check.
pub const SINK: &str = "logstore";

/// How long dropping a [`LogStoreGuard`] waits for queued events to be written.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// How the background writer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Events the queue holds before new ones are dropped.
    pub queue_capacity: usize,
    /// Events written per transaction at most.
    pub batch_size: usize,
    /// What the store keeps.
    pub retention: Retention,
    /// Memory the writer of a day's index may buffer before it writes a
    /// segment (at least 15 MB, tantivy's floor).
    pub cache_bytes: u64,
    /// How long an event may wait for others before the batch holding it
    /// is committed (and becomes searchable). Each commit writes a segment;
    /// fewer, larger ones cost less to write and to search.
    pub commit_interval: Duration,
}

impl WriterOptions {
    pub(super) fn cache_bytes_usize(&self) -> usize {
        writer_memory(self.cache_bytes)
    }
}

/// The writer's memory budget for `bytes`, within what tantivy accepts.
pub(super) fn writer_memory(bytes: u64) -> usize {
    const MIN: u64 = 15_000_000;
    const MAX: u64 = 4_000_000_000 - (1 << 20);
    usize::try_from(bytes.clamp(MIN, MAX)).unwrap_or(MIN as usize)
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue_capacity: 65_536,
            // Half the queue per commit: a commit writes a segment per
            // indexing thread and every segment is merged again later, so
            // fewer, larger commits index more events per second (and
            // cost searches fewer segments); a batch smaller than the
            // queue goes as soon as it is full, while the queue still
            // takes new events.
            batch_size: 32_768,
            retention: Retention {
                max_age_days: 7,
                max_bytes: 1 << 30,
            },
            // A full batch indexed without a segment written mid-way.
            cache_bytes: 64 << 20,
            // Searchable within a second, as Elasticsearch's default refresh:
            // under load a batch fills first; when quiet, one commit a
            // second at most.
            commit_interval: Duration::from_secs(1),
        }
    }
}

/// The sending side of the store's queue, held by the log layer. Cloning is
/// cheap; sending never blocks: a full queue drops the event and counts it
/// in `hyperkit_obs_dropped_total{sink="logstore"}`.
///
/// An entry is a time and a shared document, three words: the queue's
/// slots stay small, and the only memory of the caller's that the store's
/// thread frees is the document's.
#[derive(Clone, Debug)]
pub struct StoreSink(Handle<StoreEntry>);

impl StoreSink {
    /// Queues `entry`; `false` when it was dropped (and counted): the
    /// queue is full or the writer has stopped. Never blocks.
    #[inline]
    pub fn send(&self, entry: StoreEntry) -> bool {
        self.0.send(entry)
    }

    /// Waits until the entries queued before the call are written (or
    /// given up), for at most `deadline`; `true` when they were.
    pub fn flush(&self, deadline: Duration) -> bool {
        self.0.flush(deadline)
    }

    /// The writer's state now.
    pub fn status(&self) -> crate::export::SinkStatus {
        self.0.status()
    }
}

/// Owns the writer: dropping it writes what is queued within
/// [`FLUSH_DEADLINE`] and stops; what is left is dropped and counted.
pub type LogStoreGuard = crate::export::Guard<StoreEntry>;

/// Opens the store in `dir`, applies retention once, and starts its writer
/// on the shared export runtime (readiness check `logstore`). A store of the
/// previous version is migrated by the writer, off the caller's thread.
pub fn start(
    dir: impl AsRef<Path>,
    options: WriterOptions,
) -> Result<(StoreSink, LogStoreGuard), StoreError> {
    let mut store = LogStore::open(dir)?;
    store.set_cache_bytes(options.cache_bytes)?;
    store.apply_retention(options.retention, now_millis())?;
    let target = store.path().display().to_string();
    let writer = Writer {
        migrated: !store.has_legacy(),
        moved: 0,
        store,
        retention: options.retention,
        last_retention: Instant::now(),
    };
    let runtime = crate::export::Options::new(SINK, target)
        .capacity(options.queue_capacity)
        .batch(options.batch_size, 0)
        .linger(options.commit_interval)
        // A disk that is full or failing is tried again soon, and at most
        // every 5 s while it stays so.
        .retry(Duration::from_millis(100), Duration::from_secs(5))
        .shutdown_deadline(FLUSH_DEADLINE);
    let guard = crate::export::spawn(runtime, writer).map_err(|e| StoreError::Dir {
        path: PathBuf::from("(writer thread)"),
        source: e.source,
    })?;
    Ok((StoreSink(guard.handle()), guard))
}

struct Writer {
    /// Whether the previous version's store (if any) is in the index.
    migrated: bool,
    /// Events of it moved so far.
    moved: u64,
    store: LogStore,
    retention: Retention,
    last_retention: Instant,
}

impl crate::export::Exporter for Writer {
    type Item = StoreEntry;

    fn export(
        &mut self,
        batch: Vec<StoreEntry>,
        delivery: &mut crate::export::Delivery<'_, StoreEntry>,
    ) {
        if let Err(e) = self.store.insert(&batch) {
            // tantivy reports a full disk in several shapes (an I/O error,
            // an internal error naming it, a worker thread that stopped):
            // the disk itself says whether it is full.
            let full = e.is_disk_full() || self.store.disk_full();
            let why = if full { " (the disk is full)" } else { "" };
            delivery.fail(format!("cannot write to the log store{why}: {e}"));
            if full || e.is_transient() {
                // Kept, in order, until the disk takes them again (or the
                // queue fills and newer events are dropped, counted).
                delivery.retry_all(batch);
            } else {
                delivery.reject(batch.len());
            }
        }
    }

    fn tick(&mut self, house: &mut crate::export::Housekeeping<'_>) {
        if !self.migrated {
            // A day per tick: new events keep being written in between.
            match self.store.migrate_legacy_days(1) {
                Ok((n, done)) => {
                    self.moved += n;
                    if done {
                        self.migrated = true;
                        house.log(&format!(
                            "moved the {} events of the previous version's log store ({}) into the index",
                            self.moved,
                            super::LEGACY_FILE
                        ));
                    }
                }
                Err(e) => {
                    self.migrated = true;
                    house.fail(format!(
                        "cannot move the previous version's log store into the index (it stays in {}): {e}",
                        super::LEGACY_FILE
                    ));
                }
            }
        }
        const RETENTION_EVERY: Duration = Duration::from_secs(60);
        if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            if let Err(e) = self.store.apply_retention(self.retention, now_millis()) {
                house.fail(format!("cannot apply the log store's retention: {e}"));
            }
        }
    }
}
