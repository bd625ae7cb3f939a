//! [`LogRecord`] and [`ecs_document`]: one log event as an Elastic Common
//! Schema JSON object. Every sink (stdout, the local store, Elasticsearch,
//! Logstash) uses these bytes, so the document is built once per event by a
//! pure function that never fails and never panics.

use std::borrow::Cow;
use std::fmt;

use crate::trace::{SpanId, TraceId};

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11";

/// A field value as `tracing` recorded it.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// A string, or a value recorded with `%` / `?`.
    Str(String),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float (non-finite values are written as `null`).
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl FieldValue {
    /// The value as text, as the query language compares it (`true`, `42`,
    /// `1.5`, the string itself).
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            FieldValue::Str(s) => Cow::Borrowed(s),
            FieldValue::I64(v) => Cow::Owned(v.to_string()),
            FieldValue::U64(v) => Cow::Owned(v.to_string()),
            FieldValue::F64(v) => Cow::Owned(v.to_string()),
            FieldValue::Bool(v) => Cow::Borrowed(if *v { "true" } else { "false" }),
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            FieldValue::Str(s) => write_json_str(s, out),
            FieldValue::I64(v) => crate::util::write_i64(out, *v),
            FieldValue::U64(v) => crate::util::write_u64(out, *v),
            FieldValue::F64(v) if v.is_finite() => {
                // serde_json writes the shortest representation that
                // round-trips; writing to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, v);
            }
            FieldValue::F64(_) => out.extend_from_slice(b"null"),
            FieldValue::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_text())
    }
}

/// One log event, captured from `tracing` (or built by hand), ready to be
/// written as an ECS document.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// When it happened, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The level, lower case (`error`, `warn`, `info`, `debug`, `trace`).
    pub level: &'static str,
    /// The event's target (`log.logger`), usually its module path.
    pub target: Cow<'static, str>,
    /// The formatted message.
    pub message: String,
    /// The event's own fields other than the message, in the order written.
    /// A field named `error` is written as `error.message`.
    pub fields: Vec<(&'static str, FieldValue)>,
    /// Fields of the spans the event happened in, innermost span first; an
    /// event field or an inner span's field wins over an outer one.
    pub span_fields: Vec<(&'static str, FieldValue)>,
    /// The innermost span's name (`log.origin.function`: the tracking
    /// macros name their span after the function).
    pub span_name: Option<&'static str>,
    /// The trace the event happened in (`trace.id`, 32 hex digits): the
    /// trace context current when it happened (see [`crate::trace`]).
    pub trace_id: Option<TraceId>,
    /// The span it happened in (`span.id`, 16 hex digits): the innermost
    /// tracked call or traced request.
    pub span_id: Option<SpanId>,
}

impl LogRecord {
    /// A record with no fields and no span.
    pub fn new(
        timestamp_ms: i64,
        level: &'static str,
        target: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        LogRecord {
            timestamp_ms,
            level,
            target: target.into(),
            message: message.into(),
            fields: Vec::new(),
            span_fields: Vec::new(),
            span_name: None,
            trace_id: None,
            span_id: None,
        }
    }

    /// Calls `f` with each field [`ecs_document`] writes after the fixed
    /// keys, under its document name and in the document's order: the
    /// event's fields, then the spans' fields not already written; reserved
    /// names and repeats left out, `error` as `error.message`. The store
    /// indexes exactly these, so what it finds is what the document says.
    pub(crate) fn document_fields(&self, mut f: impl FnMut(&str, &FieldValue)) {
        let written = |name: &str, upto: usize, list: &[(&'static str, FieldValue)]| {
            list[..upto].iter().any(|(n, _)| *n == name)
        };
        for (i, (name, value)) in self.fields.iter().enumerate() {
            let name = if *name == "error" {
                "error.message"
            } else {
                name
            };
            if RESERVED.contains(&name)
                || written(name, i, &self.fields)
                || (name == "error.message" && written("error", i, &self.fields))
            {
                continue;
            }
            f(name, value);
        }
        for (i, (name, value)) in self.span_fields.iter().enumerate() {
            if RESERVED.contains(name)
                || self
                    .fields
                    .iter()
                    .any(|(n, _)| n == name || (*name == "error.message" && *n == "error"))
                || written(name, i, &self.span_fields)
            {
                continue;
            }
            f(name, value);
        }
    }

    /// The value of a field as the document carries it (`error` is
    /// `error.message`): the event's fields first, then the spans'.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        let matches = |n: &&'static str| *n == name || (name == "error.message" && *n == "error");
        self.fields
            .iter()
            .find(|(n, _)| matches(n))
            .or_else(|| self.span_fields.iter().find(|(n, _)| matches(n)))
            .map(|(_, v)| v)
    }
}

/// Keys the document sets itself; a field of the same name is dropped rather
/// than written twice.
const RESERVED: &[&str] = &[
    "@timestamp",
    "log.level",
    "message",
    "ecs.version",
    "log.logger",
    "service.name",
    "log.origin.function",
    "trace.id",
    "span.id",
];

/// Writes `record` as one ECS JSON object (no trailing newline) onto `out`.
///
/// Key order: `@timestamp`, `log.level`, `message`, `ecs.version`,
/// `log.logger`, `service.name`, then the event's fields (`event.duration`,
/// `error.message`, `error.type`, `status`, … under their own dotted names,
/// `error` as `error.message`), then span fields not already written (the
/// tracking macros' `chain`, `model`, `task`, `operation`), then
/// `log.origin.function`, `trace.id` (32 hex digits) and `span.id` (16).
///
/// ```
/// use hyperkit_obs::logs::{ecs_document, FieldValue, LogRecord};
///
/// let mut record = LogRecord::new(0, "error", "app::build", "build failed: out of gas");
/// record.fields.push(("error.message", FieldValue::Str("out of gas".into())));
/// record.span_fields.push(("chain", FieldValue::Str("ethereum".into())));
/// let mut out = Vec::new();
/// ecs_document(&record, "agent", &mut out);
/// let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
/// assert_eq!(doc["log.level"], "error");
/// assert_eq!(doc["chain"], "ethereum");
/// assert!(out.starts_with(br#"{"@timestamp":"1970-01-01T00:00:00.000Z""#));
/// ```
pub fn ecs_document(record: &LogRecord, service_name: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"@timestamp\":\"");
    super::time::write_rfc3339_millis(record.timestamp_ms, out);
    out.extend_from_slice(b"\",\"log.level\":\"");
    out.extend_from_slice(record.level.as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    write_json_str(&record.message, out);
    out.extend_from_slice(b",\"ecs.version\":\"");
    out.extend_from_slice(ECS_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"log.logger\":");
    write_json_str(&record.target, out);
    out.extend_from_slice(b",\"service.name\":");
    write_json_str(service_name, out);

    record.document_fields(|name, value| write_field(name, value, out));
    if let Some(function) = record.span_name {
        out.extend_from_slice(b",\"log.origin.function\":");
        write_json_str(function, out);
    }
    if let Some(id) = record.trace_id {
        out.extend_from_slice(b",\"trace.id\":\"");
        id.write_hex(out);
        out.push(b'"');
    }
    if let Some(id) = record.span_id {
        out.extend_from_slice(b",\"span.id\":\"");
        id.write_hex(out);
        out.push(b'"');
    }
    out.push(b'}');
}

fn write_field(name: &str, value: &FieldValue, out: &mut Vec<u8>) {
    out.push(b',');
    write_json_str(name, out);
    out.push(b':');
    value.write_json(out);
}

/// Writes `s` as a JSON string literal: `"` and `\\` escaped, control
/// characters as `\\n`, `\\t`, … or `\\u00XX`, everything else as is (JSON
/// allows any other character in a string). Runs without anything to
/// escape are copied whole.
pub(crate) fn write_json_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s.as_bytes();
    // Runs without anything to escape (most strings are one) are found a
    // word at a time and copied whole.
    while let Some(i) = first_to_escape(rest) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// The position of the first byte JSON needs escaped (a control character,
/// `"` or `\\`), eight bytes at a time.
#[inline]
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `w` is zero exactly where the high bit of the result is set
    // (the classic test, exact once masked by `!w`).
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        // Bytes below 0x20 (and not above 0x7f), `"` and `\\`.
        let control = w.wrapping_sub(0x2020_2020_2020_2020) & !w & HIGHS;
        let hits = control | zero(w ^ 0x2222_2222_2222_2222) | zero(w ^ 0x5c5c_5c5c_5c5c_5c5c);
        if hits != 0 {
            // The lowest flagged byte may be a false alarm from a borrow;
            // the bytes are checked one by one from the chunk's start.
            if let Some(i) = chunk.iter().position(escaped) {
                return Some(at + i);
            }
        }
        at += 8;
    }
    chunks.remainder().iter().position(escaped).map(|i| at + i)
}

fn escaped(b: &u8) -> bool {
    *b < 0x20 || *b == b'"' || *b == b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn an_escape_is_found_at_every_position_of_a_word_or_the_rest() {
        for special in ["\"", "\\", "\n", "\u{1f}", "\u{0}"] {
            for at in 0..40 {
                let base: Vec<char> = "ééé".chars().chain("abcdefgh".repeat(5).chars()).collect();
                let s: String = base[..at].iter().collect::<String>()
                    + special
                    + &base[at..].iter().collect::<String>();
                let mut ours = Vec::new();
                write_json_str(&s, &mut ours);
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    serde_json::to_string(&s).unwrap()
                );
            }
        }
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut every: String = (0u8..0x80).map(char::from).collect();
        every.push_str("é日🦀\u{2028}\u{7f}");
        for s in [
            "",
            "plain",
            "quote \" and \\ back",
            "\n\r\t\u{8}\u{c}\u{1}",
            &every,
        ] {
            let mut ours = Vec::new();
            write_json_str(s, &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    fn doc(record: &LogRecord) -> (String, Value) {
        let mut out = Vec::new();
        ecs_document(record, "build-agent", &mut out);
        let text = String::from_utf8(out).unwrap();
        let value = serde_json::from_str(&text).unwrap();
        (text, value)
    }

    fn failed_build() -> LogRecord {
        let mut r = LogRecord::new(
            1_795_757_293_123,
            "error",
            "agent::builder",
            "build failed: out of gas",
        );
        r.fields = vec![
            ("status", FieldValue::Str("failure".into())),
            ("event.duration", FieldValue::U64(1_500_000)),
            ("error.message", FieldValue::Str("out of gas".into())),
            ("error.type", FieldValue::Str("BuildError".into())),
        ];
        r.span_fields = vec![
            ("chain", FieldValue::Str("ethereum".into())),
            ("task", FieldValue::Str("codegen".into())),
        ];
        r.span_name = Some("build");
        r.trace_id = TraceId::from_u128(1);
        r.span_id = SpanId::from_u64(0xab);
        r
    }

    #[test]
    fn every_ecs_field_is_written_with_its_ecs_name() {
        let (text, v) = doc(&failed_build());
        assert_eq!(
            v,
            json!({
                "@timestamp": "2026-11-27T05:28:13.123Z",
                "log.level": "error",
                "message": "build failed: out of gas",
                "ecs.version": "8.11",
                "log.logger": "agent::builder",
                "service.name": "build-agent",
                "status": "failure",
                "event.duration": 1_500_000,
                "error.message": "out of gas",
                "error.type": "BuildError",
                "chain": "ethereum",
                "task": "codegen",
                "log.origin.function": "build",
                "trace.id": "00000000000000000000000000000001",
                "span.id": "00000000000000ab",
            })
        );
        assert!(text.starts_with("{\"@timestamp\":"), "{text}");
    }

    #[test]
    fn span_fields_are_top_level_and_event_fields_win() {
        let mut r = LogRecord::new(0, "info", "t", "m");
        r.fields = vec![("chain", FieldValue::Str("solana".into()))];
        r.span_fields = vec![
            ("chain", FieldValue::Str("ethereum".into())),
            ("model", FieldValue::Str("inner".into())),
            ("model", FieldValue::Str("outer".into())),
        ];
        let (text, v) = doc(&r);
        assert_eq!(v["chain"], "solana");
        assert_eq!(v["model"], "inner");
        assert_eq!(text.matches("\"chain\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"model\"").count(), 1, "{text}");
    }

    #[test]
    fn strings_are_escaped_and_reserved_names_are_not_duplicated() {
        let mut r = LogRecord::new(0, "warn", "t\"x", "line1\nline2 \"q\" \\ \u{1}");
        r.fields = vec![
            ("message", FieldValue::Str("shadow".into())),
            ("error", FieldValue::Str("tab\there".into())),
            ("ratio", FieldValue::F64(f64::NAN)),
            ("ok", FieldValue::Bool(true)),
            ("delta", FieldValue::I64(-3)),
        ];
        let (text, v) = doc(&r);
        assert_eq!(v["message"], "line1\nline2 \"q\" \\ \u{1}");
        assert_eq!(v["log.logger"], "t\"x");
        assert_eq!(v["error.message"], "tab\there");
        assert_eq!(v["ratio"], Value::Null);
        assert_eq!(
            (v["ok"].clone(), v["delta"].clone()),
            (json!(true), json!(-3))
        );
        assert_eq!(text.matches("\"message\"").count(), 1, "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }
}
