//! The previous store, SQLite FTS5, kept beside the tantivy index only so
//! that one benchmark run measures both on the same events; it is dropped
//! once the figures have chosen. It never runs outside the benchmark.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::logs::time::{day_of, day_start};

mod schema;
mod search;

use super::{Retention, StoreError};

/// The database file inside the store directory.
pub const DB_FILE: &str = "logs.sqlite3";

/// The SQLite database of the previous store.
#[derive(Debug)]
pub struct Fts5Store {
    conn: Connection,
    path: PathBuf,
    days: BTreeSet<u32>,
}

impl Fts5Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Fts5Store, StoreError> {
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
        let mut store = Fts5Store {
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
