//! The local log store: every event in a tantivy index under
//! `<data dir>/logs`, so `hyperkit-obs logs search` finds a line among
//! millions in milliseconds.
//!
//! One index per UTC day (`<dir>/YYYYMMDD/`), so age- and size-based
//! retention removes a directory and a time range never opens the days
//! outside it. Each index is sorted by timestamp, newest first: within a
//! segment, `--since`/`--until` are a binary search on the timestamp
//! column and the newest matches are the first ones a query's posting
//! lists yield, so a search with `--limit N` reads about N matches per
//! segment, not every match. A term absent from a segment (or present in
//! every event of it) settles that part of the query from the term
//! dictionary alone ([`plan`]).
//!
//! [`start`] runs the writer on the shared export runtime behind a bounded
//! queue: the logging caller never waits on disk and never blocks — when
//! the queue is full the event is dropped, counted in
//! `hyperkit_obs_dropped_total{sink="logstore"}` and reported by one
//! warning on stderr at most every ten seconds. Each batch is one tantivy
//! commit: a writer killed mid-commit loses that batch and nothing before
//! it. Readers (another process's `logs search`) see each commit as it
//! lands.
//!
//! This module holds the store's types and its whole-store operations
//! (open, count, size, retention); `schema` owns the index layout and what
//! an event writes in it, `day` one day's index, `plan` and `search` the
//! query, `writer` the background writer, `legacy` the migration of a store
//! written by the SQLite version. Nothing here panics on what it reads or
//! stores: a damaged day is skipped and reported, never trusted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::time::{day_of, day_start};

mod day;
mod legacy;
mod plan;
mod schema;
mod search;
#[cfg(test)]
mod tests;
mod writer;

use day::Day;
pub use legacy::LEGACY_FILE;
pub use writer::{FLUSH_DEADLINE, LogStoreGuard, SINK, StoreSink, WriterOptions, start};

/// The file that marks a directory as a log store (it records the store's
/// format); `hyperkit-obs logs search` looks for it before opening one.
pub const DB_FILE: &str = "logstore.json";

/// The format this version writes, recorded in [`DB_FILE`].
const FORMAT: &str = r#"{"format":"tantivy-days","version":1}"#;

/// A log store that cannot be opened, written or searched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory could not be created, read or written.
    #[error("the log store directory {path} cannot be used: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A day's index failed.
    #[error("the log store's index {path} failed: {source}")]
    Index {
        /// The day's directory.
        path: PathBuf,
        /// What tantivy said.
        source: tantivy::TantivyError,
    },
    /// The store of the previous version (SQLite) failed while it was read
    /// for migration.
    #[error("the previous log store {path} cannot be read: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The directory holds something this version does not write.
    #[error("{path} is not a log store of this version: {reason}")]
    Format {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
}

impl StoreError {
    /// Whether the disk under the store is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Dir { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            StoreError::Index {
                source: tantivy::TantivyError::IoError(e),
                ..
            } => e.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    /// Whether writing may succeed later without anyone's help: the disk
    /// is full or failed, another writer holds the day, or its directory
    /// went away; not a damaged index or a bug.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Dir { .. } => true,
            StoreError::Index { source, .. } => matches!(
                source,
                tantivy::TantivyError::IoError(_)
                    | tantivy::TantivyError::LockFailure(..)
                    | tantivy::TantivyError::OpenWriteError(_)
                    | tantivy::TantivyError::OpenDirectoryError(_)
                    | tantivy::TantivyError::ErrorInThread(_)
            ),
            StoreError::Sqlite { .. } | StoreError::Format { .. } => false,
        }
    }
}

/// One event on its way into the store: its time and its ECS document, the
/// one line the store keeps and indexes (every key of it: the level, the
/// text fields as words, every other value as an exact term, numbers also
/// for ranges).
#[derive(Clone, Debug)]
pub struct StoreEntry {
    /// When it happened, in milliseconds since the Unix epoch (its
    /// document's `@timestamp`): the day it is stored in, and its place in
    /// newest-first order.
    pub timestamp_ms: i64,
    /// Its ECS document ([`ecs_document`](super::ecs_document)'s bytes),
    /// shared with the other sinks the log layer queued it for.
    pub document: std::sync::Arc<[u8]>,
}

impl StoreEntry {
    /// The entry of `record`, its document written for `service_name`.
    pub fn new(record: &crate::logs::LogRecord, service_name: &str) -> StoreEntry {
        let mut document = Vec::with_capacity(512);
        super::ecs_document(record, service_name, &mut document);
        StoreEntry {
            timestamp_ms: record.timestamp_ms,
            document: document.into(),
        }
    }
}

/// Where a stored event sits; events stored later have greater cursors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    seq: u64,
}

/// A stored event, as a search returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredLog {
    /// Its place in the store (for `tail`).
    pub cursor: Cursor,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The level, lower case.
    pub level: String,
    /// The ECS JSON document, one line.
    pub document: String,
}

/// What a search returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchOptions {
    /// Only events at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only events before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// At most this many events.
    pub limit: usize,
    /// Only events stored after this cursor, oldest first (for `tail`);
    /// without it, newest first.
    pub after: Option<Cursor>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            since_ms: None,
            until_ms: None,
            limit: 100,
            after: None,
        }
    }
}

/// Age- and size-based retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Days whose events are all older than this many days are dropped.
    pub max_age_days: u32,
    /// While the store holds more than this many bytes, the oldest day is
    /// dropped (today's is always kept).
    pub max_bytes: u64,
}

/// The local log store: one tantivy index per UTC day.
///
/// Searching needs no lock and never blocks a writer, in this process or
/// another; only one process writes a given day at a time (a second one
/// gets a transient [`StoreError::Index`] and its writer retries).
pub struct LogStore {
    dir: PathBuf,
    /// The days opened so far, for reading (and, once written, writing).
    days: Mutex<BTreeMap<u32, Arc<Day>>>,
    /// Days that could not be opened or read, with why.
    damaged: Mutex<BTreeMap<u32, String>>,
    /// The next event's sequence number, known after the first insert.
    next_seq: Option<u64>,
    /// Memory each day's writer may buffer before it writes a segment.
    writer_memory: usize,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

impl LogStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// A store written by the SQLite version ([`LEGACY_FILE`]) opens too:
    /// its events stay where they are until [`migrate_legacy`]
    /// (Self::migrate_legacy) moves them into the index (the background
    /// writer does that by itself when it starts).
    pub fn open(dir: impl AsRef<Path>) -> Result<LogStore, StoreError> {
        let dir = dir.as_ref().to_owned();
        let io = |source| StoreError::Dir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let marker = dir.join(DB_FILE);
        match std::fs::read_to_string(&marker) {
            Ok(text) if text.trim() == FORMAT => {}
            Ok(text) => {
                return Err(StoreError::Format {
                    path: marker,
                    reason: format!(
                        "it records the format {}; this version writes {FORMAT} (use the version that wrote it, or move the directory away)",
                        crate::util::shown(text.trim())
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(&marker, FORMAT.as_bytes()).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        Ok(LogStore {
            dir,
            days: Mutex::new(BTreeMap::new()),
            damaged: Mutex::new(BTreeMap::new()),
            next_seq: None,
            writer_memory: WriterOptions::default().cache_bytes_usize(),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether the disk under the store is full: a small file written
    /// there and removed says so.
    pub(crate) fn disk_full(&self) -> bool {
        let probe = self.dir.join(".space-probe");
        let result = std::fs::write(&probe, [0u8; 64 * 1024]);
        let _ = std::fs::remove_file(&probe);
        matches!(result, Err(e) if e.kind() == std::io::ErrorKind::StorageFull)
    }

    /// Lets each day's writer buffer at most `bytes` (at least 15 MB,
    /// tantivy's floor) before it writes a segment; [`open`](Self::open)
    /// sets 64 MiB.
    pub fn set_cache_bytes(&mut self, bytes: u64) -> Result<(), StoreError> {
        self.writer_memory = writer::writer_memory(bytes);
        Ok(())
    }

    /// The days the store holds (`YYYYMMDD`), oldest first.
    pub fn list_days(&self) -> Result<Vec<u32>, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut days: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| parse_day(&name))
            .collect();
        days.sort_unstable();
        Ok(days)
    }

    /// The day's index, opened on first use; `None` when the day does not
    /// exist (any more) or is damaged (then recorded in
    /// [`damaged_days`](Self::damaged_days)).
    fn day(&self, day: u32) -> Option<Arc<Day>> {
        let mut days = lock(&self.days);
        if let Some(d) = days.get(&day) {
            return Some(Arc::clone(d));
        }
        let path = self.dir.join(day.to_string());
        if !path.join("meta.json").exists() {
            return None;
        }
        match Day::open(&path) {
            Ok(d) => {
                let d = Arc::new(d);
                days.insert(day, Arc::clone(&d));
                Some(d)
            }
            Err(e) => {
                drop(days);
                self.mark_damaged(day, &e.to_string());
                None
            }
        }
    }

    fn mark_damaged(&self, day: u32, why: &str) {
        lock(&self.days).remove(&day);
        lock(&self.damaged).insert(day, why.to_owned());
    }

    /// Days that could not be read, with why: searches skip them and go on
    /// with the others.
    pub fn damaged_days(&self) -> Vec<(u32, String)> {
        lock(&self.damaged)
            .iter()
            .map(|(d, w)| (*d, w.clone()))
            .collect()
    }

    /// The number of stored events (those of the previous version's store
    /// not yet migrated are not counted).
    pub fn count(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for day in self.list_days()? {
            if let Some(d) = self.day(day) {
                total += d.searcher()?.num_docs();
            }
        }
        Ok(total)
    }

    /// Bytes the store's files occupy.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for day in self.list_days()? {
            total += dir_bytes(&self.dir.join(day.to_string()));
        }
        Ok(total)
    }

    /// Drops the days that `retention` no longer keeps, oldest first, and
    /// returns them (`YYYYMMDD`).
    pub fn apply_retention(
        &mut self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<Vec<u32>, StoreError> {
        let oldest_kept = now_ms.saturating_sub(i64::from(retention.max_age_days) * 86_400_000);
        let today = day_of(now_ms);
        let mut dropped = Vec::new();
        let days = self.list_days()?;
        let mut sizes: Vec<u64> = days
            .iter()
            .map(|d| dir_bytes(&self.dir.join(d.to_string())))
            .collect();
        for (i, &oldest) in days.iter().enumerate() {
            let expired = day_start(oldest) + 86_400_000 <= oldest_kept;
            let total: u64 = sizes[i..].iter().sum();
            let too_big = oldest < today && total > retention.max_bytes;
            if !expired && !too_big {
                break;
            }
            // The writer and readers of the day go first; a reader in
            // another process keeps its open files until it is done.
            lock(&self.days).remove(&oldest);
            let path = self.dir.join(oldest.to_string());
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Dir { path, source }),
            }
            lock(&self.damaged).remove(&oldest);
            sizes[i] = 0;
            dropped.push(oldest);
        }
        Ok(dropped)
    }
}

/// `YYYYMMDD` of a day directory's name.
fn parse_day(name: &str) -> Option<u32> {
    (name.len() == 8 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// The bytes of the files in `dir` (a day's index is flat).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Locks `m`, whether or not a panic poisoned it: what it guards (maps of
/// opened days) is never left half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the old file or the new one, never half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
