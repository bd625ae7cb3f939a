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

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params};

use super::document::LogRecord;
use super::query::{FieldKind, Query, TEXT_FIELDS, words};
use super::time::{day_of, day_start};
use crate::util::unix_ms as now_millis;

/// The database file inside the store directory.
pub const DB_FILE: &str = "logs.sqlite3";
/// The sink name of the store's writer: its `sink` label and readiness check.
pub const SINK: &str = "logstore";

/// How long dropping a [`LogStoreGuard`] waits for queued events to be written.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

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

fn table_day(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("logs_")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
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

    fn list_days(&self) -> Result<BTreeSet<u32>, StoreError> {
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

    /// Events matching `query`, newest first (or, with
    /// [`SearchOptions::after`], the ones stored after it, oldest first).
    pub fn search(
        &self,
        query: &Query,
        options: &SearchOptions,
    ) -> Result<Vec<StoredLog>, StoreError> {
        let since = options.since_ms.unwrap_or(i64::MIN);
        let until = options.until_ms.unwrap_or(i64::MAX);
        let mut days: Vec<u32> = self
            .list_days()?
            .into_iter()
            .filter(|d| day_start(*d) + 86_400_000 > since && day_start(*d) < until)
            .filter(|d| options.after.is_none_or(|c| *d >= c.day))
            .collect();
        if options.after.is_none() {
            days.reverse();
        }
        let mut found = Vec::new();
        for day in days {
            let want = options.limit.saturating_sub(found.len());
            if want == 0 {
                break;
            }
            let mut params = Vec::new();
            let predicate = compile(query, &format!("fts_{day}"), &mut params);
            let (after_clause, order) = match options.after {
                Some(c) if c.day == day => {
                    params.push(Value::Integer(c.id));
                    ("AND l.id > ?", "l.id ASC")
                }
                Some(_) => ("", "l.id ASC"),
                None => ("", "l.ts DESC, l.id DESC"),
            };
            params.extend([
                Value::Integer(since),
                Value::Integer(until),
                Value::Integer(i64::try_from(want).unwrap_or(i64::MAX)),
            ]);
            let sql = format!(
                "SELECT l.id, l.ts, l.level, l.doc FROM logs_{day} l
                 WHERE ({predicate}) {after_clause} AND l.ts >= ? AND l.ts < ?
                 ORDER BY {order} LIMIT ?"
            );
            let mut stmt = match self.conn.prepare(&sql) {
                Ok(s) => s,
                // Retention (possibly in another process) dropped the day
                // since it was listed.
                Err(e) if e.to_string().contains("no such table") => continue,
                Err(e) => return Err(self.err()(e)),
            };
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |row| {
                    Ok(StoredLog {
                        cursor: Cursor {
                            day,
                            id: row.get(0)?,
                        },
                        timestamp_ms: row.get(1)?,
                        level: row.get(2)?,
                        document: row.get(3)?,
                    })
                })
                .map_err(self.err())?;
            for row in rows {
                found.push(row.map_err(self.err())?);
            }
        }
        Ok(found)
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

/// Document keys that `attrs` does not index (the same in every event, or
/// not fields at all).
const NOT_IN_ATTRS: &[&str] = &["service.name", "@timestamp", "ecs.version"];

/// Indexes the values of the fields that are not text columns, so an exact
/// field term is an index lookup (then checked against the document) and not
/// a scan of every document. Keys are left out: they are in almost every
/// event, and indexing them cost a fifth of the ingest rate.
fn write_attrs(r: &LogRecord, out: &mut String) {
    use std::fmt::Write as _;
    for (name, value) in r.fields.iter().chain(&r.span_fields) {
        if matches!(super::query::field_kind(name), FieldKind::Exact) {
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

/// Compiles `query` to an SQL predicate over `logs_D l`, with `fts` the day's
/// FTS5 table; parameters are appended to `params`.
///
/// A parsed query nests at most [`Query::MAX_DEPTH`] levels, so neither this
/// nor [`fts_expr`] recurses deeper, and for up to [`Query::MAX_TERMS`] terms
/// what they write stays inside SQLite's limits: FTS5 expressions at most
/// [`FTS_LEVELS`] deep, chains of `AND` and `OR` as balanced trees for the SQL
/// expression depth (1,000), at most six parameters per term (32,766).
fn compile(query: &Query, fts: &str, params: &mut Vec<Value>) -> String {
    if let Some(expr) = fts_expr(query, FTS_LEVELS) {
        return fts_match(expr, fts, params);
    }
    match query {
        Query::All => "1".to_owned(),
        Query::Term(t) => match t.kind() {
            FieldKind::Level => {
                params.push(Value::Text(t.value.to_lowercase()));
                "l.level = ?".to_owned()
            }
            FieldKind::Exact => {
                let key = t.document_key().unwrap_or_default();
                if key.contains('"') {
                    return "0".to_owned();
                }
                // The `attrs` index narrows the rows down to those holding
                // the key's and the value's words; the document decides.
                let prefilter = if NOT_IN_ATTRS.contains(&key) {
                    None
                } else {
                    let tokens: Vec<String> = words(&t.value).collect();
                    (!tokens.is_empty()).then(|| format!("attrs : \"{}\"", tokens.join(" ")))
                };
                let mut sql = String::new();
                if let Some(expr) = prefilter {
                    params.push(Value::Text(expr));
                    sql = format!("l.id IN (SELECT rowid FROM {fts} WHERE {fts} MATCH ?) AND ");
                }
                // The document is written by one encoder, so `"key":value`
                // appears in it verbatim when the field has that value: a
                // substring test skips most documents without parsing them.
                let key_json = serde_json::to_string(key).unwrap_or_default();
                let quoted = serde_json::to_string(&t.value).unwrap_or_default();
                let literal = serde_json::from_str::<serde_json::Value>(&t.value)
                    .is_ok_and(|v| v.is_number() || v.is_boolean());
                params.push(Value::Text(format!("{key_json}:{quoted}")));
                if literal {
                    params.push(Value::Text(format!("{key_json}:{}", t.value)));
                    sql.push_str("(instr(l.doc, ?) > 0 OR instr(l.doc, ?) > 0) AND ");
                } else {
                    sql.push_str("instr(l.doc, ?) > 0 AND ");
                }
                let path = Value::Text(format!("$.\"{key}\""));
                params.extend([path.clone(), path, Value::Text(t.value.clone())]);
                sql.push_str(
                    "IFNULL((CASE json_type(l.doc, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
                     ELSE CAST(json_extract(l.doc, ?) AS TEXT) END) = ?, 0)",
                );
                format!("({sql})")
            }
            // Text terms always have an FTS expression.
            FieldKind::Text(_) => "0".to_owned(),
        },
        Query::And(parts) => {
            // The full-text parts become one MATCH, the rest SQL predicates.
            let (mut positive, mut negative, mut rest) = (Vec::new(), Vec::new(), Vec::new());
            for p in parts {
                match (fts_expr(p, FTS_LEVELS - 1), p) {
                    (Some(e), _) => positive.push(e),
                    (None, Query::Not(inner)) => match fts_expr(inner, FTS_LEVELS - 2) {
                        Some(e) => negative.push(e),
                        None => rest.push(p),
                    },
                    _ => rest.push(p),
                }
            }
            let mut sql = Vec::new();
            if positive.is_empty() {
                for e in negative {
                    sql.push(format!("NOT ({})", fts_match(e, fts, params)));
                }
            } else {
                sql.push(fts_match(fts_and(&positive, &negative), fts, params));
            }
            sql.extend(rest.into_iter().map(|p| compile(p, fts, params)));
            balanced(sql, "AND")
        }
        Query::Or(parts) => {
            let sql = parts.iter().map(|p| compile(p, fts, params)).collect();
            balanced(sql, "OR")
        }
        Query::Not(inner) => format!("NOT ({})", compile(inner, fts, params)),
    }
}

/// The predicate that `expr` matches in the day's FTS5 table `fts`.
fn fts_match(expr: String, fts: &str, params: &mut Vec<Value>) -> String {
    params.push(Value::Text(expr));
    format!("l.id IN (SELECT rowid FROM {fts} WHERE {fts} MATCH ?)")
}

/// `parts` joined by `op` as one predicate. SQLite counts each operand of an
/// `a OR b OR …` chain as a level of expression depth, so 1,000 of them fail
/// ("Expression tree is too large"); a balanced tree of pairs takes log2 of
/// that.
fn balanced(mut parts: Vec<String>, op: &str) -> String {
    while parts.len() > 1 {
        let mut pairs = Vec::with_capacity(parts.len().div_ceil(2));
        let mut it = parts.into_iter();
        while let Some(a) = it.next() {
            pairs.push(match it.next() {
                Some(b) => format!("({a} {op} {b})"),
                None => a,
            });
        }
        parts = pairs;
    }
    parts
        .pop()
        .unwrap_or_else(|| if op == "AND" { "1" } else { "0" }.to_owned())
}

/// How deep the operators of one FTS5 expression may nest. FTS5's parser has
/// a fixed stack of 100 entries, and an operand nested on the right of an
/// operator holds three or four of them per level (24 levels of
/// `(a) NOT ((…) OR (b))` overflow it); a query nested deeper is split into
/// several MATCHes that SQL combines.
const FTS_LEVELS: usize = 16;

/// The FTS5 expression equivalent to `query`, when it has one that nests at
/// most `levels` deep: text terms combined by AND and OR, with NOT only
/// beside a positive term.
fn fts_expr(query: &Query, levels: usize) -> Option<String> {
    match query {
        Query::Term(t) => {
            let FieldKind::Text(column) = t.kind() else {
                return None;
            };
            let phrase = super::query::words(&t.value).collect::<Vec<_>>().join(" ");
            Some(if column.is_empty() {
                // Every text column, not `attrs`.
                let columns: Vec<&str> = TEXT_FIELDS.iter().map(|(c, _)| *c).collect();
                format!("{{{}}} : \"{phrase}\"", columns.join(" "))
            } else {
                format!("{column} : \"{phrase}\"")
            })
        }
        Query::And(parts) if levels >= 2 => {
            let mut positive = Vec::new();
            let mut negative = Vec::new();
            for p in parts {
                match (fts_expr(p, levels - 1), p) {
                    (Some(e), _) => positive.push(e),
                    (None, Query::Not(inner)) => negative.push(fts_expr(inner, levels - 2)?),
                    _ => return None,
                }
            }
            (!positive.is_empty()).then(|| fts_and(&positive, &negative))
        }
        Query::Or(parts) if levels >= 1 => {
            let parts = parts
                .iter()
                .map(|p| fts_expr(p, levels - 1).map(|e| format!("({e})")))
                .collect::<Option<Vec<_>>>()?;
            Some(parts.join(" OR "))
        }
        Query::All | Query::Not(_) | Query::And(_) | Query::Or(_) => None,
    }
}

/// The FTS5 expression that every one of `positive` matches and none of
/// `negative`: `(p1) AND (p2) NOT ((n1) OR (n2))`. However FTS5 groups the
/// `NOT` with the `AND`s, that is the same set; and one `NOT` over all the
/// negatives nests no deeper for a thousand of them than for one.
fn fts_and(positive: &[String], negative: &[String]) -> String {
    let group = |exprs: &[String], op: &str| {
        exprs
            .iter()
            .map(|e| format!("({e})"))
            .collect::<Vec<_>>()
            .join(op)
    };
    let mut e = group(positive, " AND ");
    if !negative.is_empty() {
        e = format!("{e} NOT ({})", group(negative, " OR "));
    }
    e
}

// ---------------------------------------------------------------------------
// The background writer, a sink on the shared export runtime.
// ---------------------------------------------------------------------------

/// How the background writer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Events the queue holds before new ones are dropped.
    pub queue_capacity: usize,
    /// Events written per transaction at most.
    pub batch_size: usize,
    /// What the store keeps.
    pub retention: Retention,
    /// Memory the writer's connection keeps for database pages.
    pub cache_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue_capacity: 65_536,
            batch_size: 4_096,
            retention: Retention {
                max_age_days: 7,
                max_bytes: 1 << 30,
            },
            cache_bytes: 32 << 20,
        }
    }
}

/// The sending side of the store's queue, held by the log layer. Cloning is
/// cheap; sending never blocks: a full queue drops the event and counts it
/// in `hyperkit_obs_dropped_total{sink="logstore"}`.
pub type StoreSink = crate::export::Handle<StoreEntry>;

/// Owns the writer: dropping it writes what is queued within
/// [`FLUSH_DEADLINE`] and stops; what is left is dropped and counted.
pub type LogStoreGuard = crate::export::Guard<StoreEntry>;

/// Opens the store in `dir`, applies retention once, and starts its writer
/// on the shared export runtime (readiness check `logstore`).
pub fn start(
    dir: impl AsRef<Path>,
    options: WriterOptions,
) -> Result<(StoreSink, LogStoreGuard), StoreError> {
    let mut store = LogStore::open(dir)?;
    store.set_cache_bytes(options.cache_bytes)?;
    store.apply_retention(options.retention, now_millis())?;
    let target = store.path().display().to_string();
    let writer = Writer {
        store,
        retention: options.retention,
        last_retention: Instant::now(),
    };
    let runtime = crate::export::Options::new(SINK, target)
        .capacity(options.queue_capacity)
        .batch(options.batch_size, 0)
        // A disk that is full or failing is tried again soon, and at most
        // every 5 s while it stays so.
        .retry(Duration::from_millis(100), Duration::from_secs(5))
        .shutdown_deadline(FLUSH_DEADLINE);
    let guard = crate::export::spawn(runtime, writer).map_err(|e| StoreError::Dir {
        path: PathBuf::from("(writer thread)"),
        source: e.source,
    })?;
    Ok((guard.handle(), guard))
}

struct Writer {
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
            delivery.fail(format!("cannot write to the log store: {e}"));
            if e.is_transient() {
                // Kept, in order, until the disk takes them again (or the
                // queue fills and newer events are dropped, counted).
                delivery.retry_all(batch);
            } else {
                delivery.reject(batch.len());
            }
        }
    }

    fn tick(&mut self, house: &mut crate::export::Housekeeping<'_>) {
        const RETENTION_EVERY: Duration = Duration::from_secs(60);
        if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            if let Err(e) = self.store.apply_retention(self.retention, now_millis()) {
                house.fail(format!("cannot apply the log store's retention: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{FieldValue, ecs_document};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hyperkit-logstore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entry(ts: i64, level: &'static str, message: &str, chain: &str) -> StoreEntry {
        let mut record = LogRecord::new(ts, level, "app::build", message);
        record
            .span_fields
            .push(("chain", FieldValue::Str(chain.to_owned())));
        let mut document = Vec::new();
        ecs_document(&record, "svc", &mut document);
        StoreEntry { record, document }
    }

    fn messages(store: &LogStore, query: &str, options: &SearchOptions) -> Vec<String> {
        store
            .search(&Query::parse(query).unwrap(), options)
            .unwrap()
            .into_iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l.document).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_795_757_293_123;

    #[test]
    fn search_finds_field_terms_and_phrases_newest_first_across_days() {
        let dir = temp_dir("search");
        let mut store = LogStore::open(&dir).unwrap();
        store
            .insert(&[
                entry(T0 - DAY, "error", "build failed: out of gas", "ethereum"),
                entry(T0, "info", "build succeeded", "ethereum"),
                entry(T0 + 1, "error", "build failed: out of gas", "solana"),
                entry(T0 + 2, "error", "gas out of reach", "ethereum"),
            ])
            .unwrap();
        let all = SearchOptions::default();
        assert_eq!(
            messages(
                &store,
                r#"level:error AND chain:ethereum AND "out of gas""#,
                &all
            ),
            ["build failed: out of gas"]
        );
        assert_eq!(
            messages(&store, "gas -chain:solana", &all),
            ["gas out of reach", "build failed: out of gas"]
        );
        assert_eq!(
            messages(&store, "NOT level:error", &all),
            ["build succeeded"]
        );
        assert_eq!(messages(&store, "service.name:svc", &all).len(), 4);
        let since = SearchOptions {
            since_ms: Some(T0),
            limit: 2,
            ..all.clone()
        };
        assert_eq!(
            messages(&store, "", &since),
            ["gas out of reach", "build failed: out of gas"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_search_after_a_cursor_returns_later_events_oldest_first() {
        let dir = temp_dir("tail");
        let mut store = LogStore::open(&dir).unwrap();
        store
            .insert(&[
                entry(T0 - DAY, "info", "one", "a"),
                entry(T0, "info", "two", "a"),
            ])
            .unwrap();
        let first = store
            .search(
                &Query::All,
                &SearchOptions {
                    limit: 1,
                    ..SearchOptions::default()
                },
            )
            .unwrap();
        store
            .insert(&[entry(T0 + 1, "info", "three", "a")])
            .unwrap();
        let after = SearchOptions {
            after: Some(first[0].cursor),
            ..SearchOptions::default()
        };
        assert_eq!(messages(&store, "", &after), ["three"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retention_drops_whole_days_by_age_and_by_size() {
        let dir = temp_dir("retention");
        let mut store = LogStore::open(&dir).unwrap();
        for d in 0..5 {
            store
                .insert(&[entry(T0 - d * DAY, "info", "x", "a")])
                .unwrap();
        }
        let keep_all = Retention {
            max_age_days: 30,
            max_bytes: u64::MAX,
        };
        assert!(store.apply_retention(keep_all, T0).unwrap().is_empty());
        let three_days = Retention {
            max_age_days: 3,
            max_bytes: u64::MAX,
        };
        // Nov 24 still holds an event younger than three days.
        assert_eq!(store.apply_retention(three_days, T0).unwrap(), [20261123]);
        let tiny = Retention {
            max_age_days: 30,
            max_bytes: 1,
        };
        assert_eq!(
            store.apply_retention(tiny, T0).unwrap(),
            [20261124, 20261125, 20261126]
        );
        assert_eq!(store.count().unwrap(), 1, "today's events stay");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_page_cache_is_what_it_is_set_to() {
        let dir = temp_dir("cache");
        let store = LogStore::open(&dir).unwrap();
        let cache = |store: &LogStore| -> i64 {
            store
                .conn
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(cache(&store), -32768, "32 MiB when opened");
        store.set_cache_bytes(4 << 20).unwrap();
        assert_eq!(cache(&store), -4096);
        store.set_cache_bytes(1).unwrap();
        assert_eq!(cache(&store), -64, "never below 64 KiB");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_writer_stores_queued_events_and_flush_waits_for_them() {
        let dir = temp_dir("writer");
        let (sink, guard) = start(&dir, WriterOptions::default()).unwrap();
        for i in 0..1000 {
            assert!(sink.send(entry(now_millis(), "info", &format!("event {i}"), "a")));
        }
        assert!(guard.flush(Duration::from_secs(10)));
        let status = guard.status();
        assert_eq!(
            (status.delivered, status.dropped, status.last_error),
            (1000, 0, None)
        );
        assert_eq!(LogStore::open(&dir).unwrap().count().unwrap(), 1000);
        drop(guard);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropping_the_guard_returns_while_other_threads_keep_logging() {
        let dir = temp_dir("shutdown");
        let (sink, guard) = start(&dir, WriterOptions::default()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let logger = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    sink.send(entry(now_millis(), "info", "busy", "a"));
                }
            }
        });
        let started = Instant::now();
        drop(guard);
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        logger.join().unwrap();
        assert!(took < FLUSH_DEADLINE + Duration::from_secs(5), "{took:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = temp_dir("full");
        let options = WriterOptions {
            queue_capacity: 1,
            batch_size: 1,
            ..WriterOptions::default()
        };
        let (sink, guard) = start(&dir, options).unwrap();
        let started = Instant::now();
        let sent = (0..10_000)
            .filter(|_| sink.send(entry(T0, "info", "x", "a")))
            .count();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(guard.flush(Duration::from_secs(10)));
        let status = guard.status();
        assert_eq!(status.dropped as usize, 10_000 - sent);
        assert!(status.dropped > 0);
        drop(guard);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `first`, then `op` and `other` numbered from 1, to the term limit.
    fn terms(first: &str, op: &str, other: &str) -> String {
        let mut q = first.to_owned();
        for i in 1..Query::MAX_TERMS {
            q.push_str(&format!("{op}{other}{i}"));
        }
        q
    }

    /// `levels` times `open`, then `inner`, then as many `close`.
    fn nest(levels: usize, open: &str, inner: &str, close: &str) -> String {
        format!("{}{inner}{}", open.repeat(levels), close.repeat(levels))
    }

    #[test]
    fn the_largest_queries_the_parser_accepts_search_like_small_ones() {
        let dir = temp_dir("largest");
        let mut store = LogStore::open(&dir).unwrap();
        store
            .insert(&[
                entry(T0, "error", "build failed: out of gas", "ethereum"),
                entry(T0 + 1, "info", "build succeeded", "solana"),
            ])
            .unwrap();
        let depth = Query::MAX_DEPTH;
        let cases = [
            // Full-text terms: one MATCH.
            (terms("gas", " OR ", "w"), 1),
            (terms("build", " -", "w"), 2),
            // Levels and exact fields: SQL predicates.
            (terms("level:error", " OR ", "level:l"), 1),
            (terms("build", " -", "level:l"), 2),
            (terms("service.name:svc", " OR ", "service.name:s"), 2),
            (terms("service.name:svc", " AND NOT ", "service.name:s"), 2),
            // As deep as the parser allows, each way.
            (format!("{}level:error", "NOT ".repeat(depth)), 1),
            (format!("{}gas", "NOT ".repeat(depth - 1)), 1),
            (nest(depth - 1, "w OR (", "succeeded", ")"), 1),
            (nest(depth - 1, "level:info OR (", "gas", ")"), 2),
            (nest(depth - 1, "build -nope (", "build", ")"), 2),
            (
                nest(depth - 1, "service.name:svc (", "service.name:svc", ")"),
                2,
            ),
            // 21 levels of an And, a Not and an Or each, true at odd levels.
            (nest(depth / 3, "build -(nope OR (", "w OR nope", "))"), 2),
        ];
        let all = SearchOptions::default();
        for (query, found) in cases {
            let q = Query::parse(&query).unwrap();
            let result = store.search(&q, &all).map(|logs| logs.len());
            assert_eq!(
                result.as_ref().ok(),
                Some(&found),
                "{}…: {result:?}",
                &query[..60.min(query.len())]
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
