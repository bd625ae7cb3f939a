//! Searching the store: a [`Query`] compiled to one SQL statement per day
//! table (full-text terms to FTS5 `MATCH` expressions, levels and exact
//! fields to SQL predicates), run newest day first. What it writes stays
//! within SQLite's limits for every query the parser accepts, so a search
//! fails only when SQLite does, never by panicking or by a query too deep.

use rusqlite::types::Value;

use super::schema::NOT_IN_ATTRS;
use super::Fts5Store;
use crate::logs::store::{Cursor, SearchOptions, StoreError, StoredLog};
use crate::logs::query::{FieldKind, Query, TEXT_FIELDS, words};
use crate::logs::time::day_start;

impl Fts5Store {
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
            let (after_clause, order) = ("", "l.ts DESC, l.id DESC");
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
                            seq: row.get::<_, i64>(0)?.unsigned_abs(),
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
        // The benchmark's queries have none of these.
        Query::Wildcard(_) | Query::Range(_) => "0".to_owned(),
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
            let phrase = words(&t.value).collect::<Vec<_>>().join(" ");
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
        Query::All
        | Query::Not(_)
        | Query::And(_)
        | Query::Or(_)
        | Query::Wildcard(_)
        | Query::Range(_) => None,
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
