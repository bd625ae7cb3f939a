//! The store of the previous version (one SQLite database, `logs.sqlite3`,
//! a `logs_YYYYMMDD` table per day) moved into the index: each day is read
//! and committed whole, then its table dropped, so a migration stopped
//! anywhere (even by SIGKILL) resumes without losing or repeating an event;
//! the emptied database is removed at the end. It only reads what the
//! previous version wrote and never panics on what it finds there.

use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags};

use super::{LogStore, StoreEntry, StoreError};

/// The database file of the previous version's store, in the same directory.
pub const LEGACY_FILE: &str = "logs.sqlite3";

/// Events read and indexed at a time.
const CHUNK: i64 = 8_192;

impl LogStore {
    /// Whether the directory still holds the previous version's store.
    pub fn has_legacy(&self) -> bool {
        self.dir.join(LEGACY_FILE).exists()
    }

    /// Moves the previous version's events (SQLite, [`LEGACY_FILE`]) into
    /// the index and removes that database; returns how many moved.
    /// Resumes where a stopped migration left off.
    pub fn migrate_legacy(&mut self) -> Result<u64, StoreError> {
        let mut moved = 0;
        loop {
            let (n, done) = self.migrate_legacy_days(usize::MAX)?;
            moved += n;
            if done {
                return Ok(moved);
            }
        }
    }

    /// Moves at most `days` days of the previous version's store; returns
    /// how many events moved and whether the migration is done.
    pub(super) fn migrate_legacy_days(&mut self, days: usize) -> Result<(u64, bool), StoreError> {
        let path = self.dir.join(LEGACY_FILE);
        if !path.exists() {
            return Ok((0, true));
        }
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'logs_[0-9]*'",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(err)?;
        let mut moved = 0;
        let done = tables.len() <= days;
        for table in tables.into_iter().take(days) {
            let Some(day) = table.strip_prefix("logs_").and_then(super::parse_day) else {
                continue;
            };
            let mut last = i64::MIN;
            loop {
                let rows: Vec<(i64, i64, String)> = conn
                    .prepare(&format!(
                        "SELECT id, ts, doc FROM {table} WHERE id > ? ORDER BY id LIMIT {CHUNK}"
                    ))
                    .and_then(|mut s| {
                        s.query_map([last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                            .collect()
                    })
                    .map_err(err)?;
                let Some(&(id, _, _)) = rows.last() else {
                    break;
                };
                last = id;
                let entries: Vec<StoreEntry> = rows
                    .into_iter()
                    .map(|(_, ts, doc)| entry(ts, doc))
                    .collect();
                moved += entries.len() as u64;
                self.add_uncommitted(day, &entries)?;
            }
            self.commit_day(day)?;
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS fts_{day}; DROP TABLE IF EXISTS {table};"
            ))
            .map_err(err)?;
        }
        drop(conn);
        if done {
            for suffix in ["", "-wal", "-shm"] {
                let file = PathBuf::from(format!("{}{suffix}", path.display()));
                let _ = std::fs::remove_file(file);
            }
        }
        Ok((moved, done))
    }
}

/// The entry of a stored ECS document: the index reads its keys from the
/// document itself, as it does for every event.
fn entry(ts: i64, doc: String) -> StoreEntry {
    StoreEntry {
        timestamp_ms: ts,
        document: doc.into_bytes().into(),
    }
}
