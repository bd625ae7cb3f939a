//! The store's layout: one pair of tables per UTC day, created on first
//! use, and what an insert writes in them (the document, and the text and
//! attribute columns of the full-text index). An insert is one
//! transaction, all or nothing; nothing here panics on what it stores.

use std::borrow::Cow;
use std::collections::BTreeSet;

use rusqlite::params;

use super::Fts5Store;
use crate::logs::store::{StoreEntry, StoreError};
use crate::logs::LogRecord;
use crate::logs::query::{FieldKind, TEXT_FIELDS, field_kind};
use crate::logs::time::day_of;

fn table_day(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("logs_")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

impl Fts5Store {
    pub(super) fn list_days(&self) -> Result<BTreeSet<u32>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'logs_*'",
            )
            .map_err(self.err())?;
        let names = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(names.iter().filter_map(|n| table_day(n)).collect())
    }

    fn ensure_day(&mut self, day: u32) -> Result<(), StoreError> {
        if self.days.contains(&day) {
            return Ok(());
        }
        let columns: Vec<&str> = TEXT_FIELDS.iter().map(|(c, _)| *c).collect();
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS logs_{day} (
                     id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,
                     level TEXT NOT NULL, doc TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS logs_{day}_ts ON logs_{day} (ts);
                 CREATE VIRTUAL TABLE IF NOT EXISTS fts_{day} USING fts5(
                     {}, attrs, content = '', tokenize = 'unicode61 remove_diacritics 0');",
                columns.join(", ")
            ))
            .map_err(self.err())?;
        self.days.insert(day);
        Ok(())
    }

    /// Writes `entries` in one transaction: all of them are stored or none.
    pub fn insert(&mut self, entries: &[StoreEntry]) -> Result<(), StoreError> {
        for day in entries.iter().map(|e| day_of(e.record.timestamp_ms)) {
            self.ensure_day(day)?;
        }
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let columns = TEXT_FIELDS
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ");
        let placeholders = vec!["?"; TEXT_FIELDS.len() + 1].join(", ");
        let mut sql_day = None;
        let (mut insert_log, mut insert_fts) = (String::new(), String::new());
        let mut attrs = String::new();
        for e in entries {
            let day = day_of(e.record.timestamp_ms);
            if sql_day != Some(day) {
                sql_day = Some(day);
                insert_log = format!("INSERT INTO logs_{day} (ts, level, doc) VALUES (?, ?, ?)");
                insert_fts = format!(
                    "INSERT INTO fts_{day} (rowid, {columns}, attrs) VALUES (?, {placeholders})"
                );
            }
            let r = &e.record;
            let doc = String::from_utf8_lossy(&e.document);
            tx.prepare_cached(&insert_log)
                .and_then(|mut s| s.execute(params![r.timestamp_ms, r.level, doc]))
                .map_err(err)?;
            let id = tx.last_insert_rowid();
            attrs.clear();
            write_attrs(r, &mut attrs);
            let target: &str = &r.target;
            let mut values: Vec<Option<&str>> = Vec::with_capacity(TEXT_FIELDS.len() + 1);
            let texts: Vec<Option<Cow<'_, str>>> = TEXT_FIELDS
                .iter()
                .map(|(column, key)| match *column {
                    "message" => Some(Cow::Borrowed(r.message.as_str())),
                    "logger" => Some(Cow::Borrowed(target)),
                    _ => r.field(key).map(|v| v.as_text()),
                })
                .collect();
            values.extend(texts.iter().map(|t| t.as_deref()));
            values.push(Some(attrs.as_str()));
            tx.prepare_cached(&insert_fts)
                .and_then(|mut s| {
                    s.raw_bind_parameter(1, id)?;
                    for (i, v) in values.iter().enumerate() {
                        s.raw_bind_parameter(i + 2, v)?;
                    }
                    s.raw_execute()
                })
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

/// Document keys that `attrs` does not index (the same in every event, or
/// not fields at all).
pub(super) const NOT_IN_ATTRS: &[&str] = &["service.name", "@timestamp", "ecs.version"];

/// Indexes the values of the fields that are not text columns, so an exact
/// field term is an index lookup (then checked against the document) and not
/// a scan of every document. Keys are left out: they are in almost every
/// event, and indexing them cost a fifth of the ingest rate.
fn write_attrs(r: &LogRecord, out: &mut String) {
    use std::fmt::Write as _;
    for (name, value) in r.fields.iter().chain(&r.span_fields) {
        if matches!(field_kind(name), FieldKind::Exact) {
            let _ = write!(out, "{value} ; ");
        }
    }
    if let Some(function) = r.span_name {
        let _ = write!(out, "{function} ; ");
    }
    for id in [r.trace_id, r.span_id].into_iter().flatten() {
        let _ = write!(out, "{id:016x} ; ");
    }
}
