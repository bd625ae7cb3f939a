//! The local log store: every event in a SQLite database under
//! `<data dir>/logs`, indexed with FTS5 so `hyperkit-obs logs search` finds a
//! line among millions in milliseconds.
//!
//! One pair of tables per UTC day (`logs_YYYYMMDD` with the ECS documents,
//! their timestamps and levels; `fts_YYYYMMDD`, a contentless FTS5 index of
//! the text fields) so age- and size-based retention is a `DROP TABLE`. WAL
//! mode lets `logs search` read while the program writes.
//!
//! [`start`] runs the writer on its own thread behind a bounded queue: the
//! logging caller never waits on disk and never blocks — when the queue is
//! full the event is dropped, counted in `hyperkit_obs_dropped_total{sink="logstore"}`
//! and reported by one warning on stderr at most every ten seconds.
//!
//! This module holds the store's types and its whole-database operations
//! (open, size, retention); `schema` owns the day tables and what an insert
//! writes in them, `search` compiles a query to SQL and runs it, `writer`
//! is the background writer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::document::LogRecord;
use super::time::{day_of, day_start};

mod schema;
mod search;
#[cfg(test)]
mod tests;
mod writer;

pub use writer::{FLUSH_DEADLINE, LogStoreGuard, SINK, StoreSink, WriterOptions, start};

/// The database file inside the store directory.
pub const DB_FILE: &str = "logs.sqlite3";

/// A log store that cannot be opened, written or searched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory could not be created.
    #[error("the log store directory {path} cannot be created: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("the log store {path} failed: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether writing may succeed later without anyone's help: the disk
    /// is full or failed, the database is busy or locked, or its directory
    /// went away; not a corrupt database or a bug.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode;
        match self {
            StoreError::Dir { .. } => true,
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    ErrorCode::DiskFull
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::CannotOpen
                        | ErrorCode::OutOfMemory
                )
            ),
        }
    }
}

/// One event on its way into the store: the record and its ECS document.
#[derive(Clone, Debug)]
pub struct StoreEntry {
    /// The event.
    pub record: LogRecord,
    /// Its ECS document ([`ecs_document`](super::ecs_document)'s bytes).
    pub document: Vec<u8>,
}

/// Where a stored event sits; later events have greater cursors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    day: u32,
    id: i64,
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

/// The SQLite database of the local log store.
#[derive(Debug)]
pub struct LogStore {
    conn: Connection,
    path: PathBuf,
    days: BTreeSet<u32>,
}

impl LogStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogStore, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        // auto_vacuum only takes effect before the first table exists; it
        // lets retention hand dropped days' pages back to the file system.
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -32768;
             PRAGMA wal_autocheckpoint = 4096;",
        )
        .map_err(err)?;
        let mut store = LogStore {
            conn,
            path,
            days: BTreeSet::new(),
        };
        store.days = store.list_days()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps at most `bytes` (at least 64 KiB) of database pages in memory
    /// for this connection; [`open`](Self::open) sets 32 MiB.
    pub fn set_cache_bytes(&self, bytes: u64) -> Result<(), StoreError> {
        let kib = (bytes / 1024).max(64);
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{kib};"))
            .map_err(self.err())
    }

    /// The number of stored events.
    pub fn count(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for day in self.list_days()? {
            let n: i64 = self
                .conn
                .query_row(&format!("SELECT count(*) FROM logs_{day}"), [], |r| {
                    r.get(0)
                })
                .map_err(self.err())?;
            total += n.unsigned_abs();
        }
        Ok(total)
    }

    /// Bytes the store's data occupies (pages in use, excluding free pages).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let pragma = |name: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .map(i64::unsigned_abs)
                .map_err(self.err())
        };
        Ok(pragma("page_count")?.saturating_sub(pragma("freelist_count")?) * pragma("page_size")?)
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
        self.days = self.list_days()?;
        while let Some(&oldest) = self.days.first() {
            let expired = day_start(oldest) + 86_400_000 <= oldest_kept;
            let too_big = oldest < today && self.size_bytes()? > retention.max_bytes;
            if !expired && !too_big {
                break;
            }
            self.conn
                .execute_batch(&format!(
                    "DROP TABLE IF EXISTS fts_{oldest}; DROP TABLE IF EXISTS logs_{oldest};
                     PRAGMA incremental_vacuum;"
                ))
                .map_err(self.err())?;
            self.days.remove(&oldest);
            dropped.push(oldest);
        }
        Ok(dropped)
    }
}
