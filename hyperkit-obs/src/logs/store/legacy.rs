//! The store of the previous version (one SQLite database, `logs.sqlite3`,
//! a `logs_YYYYMMDD` table per day) moved into the index: each day is read
//! and committed whole, then its table dropped, so a migration stopped
//! anywhere (even by SIGKILL) resumes without losing or repeating an event;
//! the emptied database is removed at the end. It only reads what the
//! previous version wrote and never panics on what it finds there.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use super::{LogStore, StoreEntry, StoreError};
use crate::logs::{FieldValue, LogRecord};

/// The database file of the previous version's store, in the same directory.
pub const LEGACY_FILE: &str = "logs.sqlite3";

/// Events read and indexed at a time.
const CHUNK: i64 = 8_192;

/// Field names a migration turns into `&'static str` at most (a name is
/// leaked once); fields past it stay in the document but are not indexed.
const MAX_NAMES: usize = 10_000;

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
        let mut names = Names::default();
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
                    .map(|(_, ts, doc)| entry(ts, doc, &mut names))
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

/// Field names as `&'static str`, each leaked once, at most [`MAX_NAMES`].
#[derive(Default)]
struct Names(HashSet<&'static str>);

impl Names {
    fn get(&mut self, name: &str) -> Option<&'static str> {
        if let Some(n) = self.0.get(name) {
            return Some(n);
        }
        if self.0.len() >= MAX_NAMES {
            return None;
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        self.0.insert(leaked);
        Some(leaked)
    }
}

/// The entry of a stored ECS document, its record rebuilt from the
/// document's keys so that it is indexed as it was written.
fn entry(ts: i64, doc: String, names: &mut Names) -> StoreEntry {
    let parsed: serde_json::Map<String, Value> = serde_json::from_str(&doc).unwrap_or_default();
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).unwrap_or("");
    let level = match text("log.level") {
        "error" => "error",
        "warn" => "warn",
        "debug" => "debug",
        "trace" => "trace",
        other => names.get(other).unwrap_or("info"),
    };
    let mut record = LogRecord::new(
        ts,
        level,
        Cow::Owned(text("log.logger").to_owned()),
        text("message"),
    );
    // The previous version's ids were 16 hex digits (the `tracing` span's
    // id): the trace id keeps its value, widened to 128 bits.
    record.trace_id = u128::from_str_radix(text("trace.id"), 16)
        .ok()
        .and_then(crate::trace::TraceId::from_u128);
    record.span_id = crate::trace::SpanId::from_hex(text("span.id"));
    record.span_name = parsed
        .get("log.origin.function")
        .and_then(Value::as_str)
        .and_then(|f| names.get(f));
    for (key, value) in &parsed {
        if matches!(
            key.as_str(),
            "@timestamp"
                | "log.level"
                | "message"
                | "ecs.version"
                | "log.logger"
                | "service.name"
                | "log.origin.function"
                | "trace.id"
                | "span.id"
        ) {
            continue;
        }
        let value = match value {
            Value::String(s) => FieldValue::Str(s.clone()),
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => FieldValue::U64(u),
                (_, Some(i), _) => FieldValue::I64(i),
                (_, _, Some(f)) => FieldValue::F64(f),
                _ => continue,
            },
            Value::Null => FieldValue::F64(f64::NAN),
            other => FieldValue::Str(other.to_string()),
        };
        if let Some(name) = names.get(key) {
            record.fields.push((name, value));
        }
    }
    StoreEntry {
        record,
        document: doc.into_bytes().into(),
    }
}
