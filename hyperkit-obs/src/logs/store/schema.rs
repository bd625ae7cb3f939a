//! A day index's layout and what one event writes in it: the timestamp
//! (the sort key, a column), a sequence number (the cursor of `tail`), the
//! level, the text fields as words with positions, every other field's
//! value as one exact term (`key\0value`), numeric values again as
//! sortable terms for ranges, and the ECS line itself, stored compressed.
//! The words are the query language's [`words`](crate::logs::words), so
//! what the index finds is what the language means; nothing here panics
//! on what it indexes.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{TantivyDocument, Term};

use super::StoreEntry;
use crate::logs::TEXT_FIELDS;

/// The tokenizer of the text fields, registered under this name.
pub(super) const WORDS: &str = "hyperkit_words";

/// Between a key and its value in the `attrs` and `nums` terms: no field
/// name of `tracing` holds it.
pub(super) const SEP: char = '\0';

/// The fields of a day's index.
#[derive(Clone, Debug)]
pub(super) struct Fields {
    pub(super) schema: Schema,
    pub(super) ts: Field,
    pub(super) seq: Field,
    pub(super) level: Field,
    /// One per [`TEXT_FIELDS`] entry, in its order.
    pub(super) text: Vec<Field>,
    pub(super) attrs: Field,
    pub(super) nums: Field,
    pub(super) doc: Field,
    pub(super) stored_level: Field,
}

impl Fields {
    /// The schema this version writes.
    pub(super) fn new() -> Fields {
        let mut b = Schema::builder();
        b.add_i64_field("ts", tantivy::schema::FAST);
        b.add_u64_field("seq", tantivy::schema::FAST);
        b.add_text_field("level", STRING);
        // No norms: nothing is scored.
        let words = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WORDS)
                .set_fieldnorms(false)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        for (column, _) in TEXT_FIELDS {
            b.add_text_field(&format!("t_{column}"), words.clone());
        }
        let exact = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_fieldnorms(false)
                .set_index_option(IndexRecordOption::Basic),
        );
        b.add_text_field("attrs", exact.clone());
        b.add_text_field("nums", exact);
        b.add_text_field("doc", STORED);
        b.add_text_field("stored_level", STORED);
        Fields::from_schema(b.build()).expect("the fields were just added")
    }

    /// The fields of an existing index's schema; `None` when one is missing
    /// (another format).
    pub(super) fn from_schema(schema: Schema) -> Option<Fields> {
        let get = |name: &str| schema.get_field(name).ok();
        let text = TEXT_FIELDS
            .iter()
            .map(|(column, _)| get(&format!("t_{column}")))
            .collect::<Option<Vec<_>>>()?;
        Some(Fields {
            ts: get("ts")?,
            seq: get("seq")?,
            level: get("level")?,
            text,
            attrs: get("attrs")?,
            nums: get("nums")?,
            doc: get("doc")?,
            stored_level: get("stored_level")?,
            schema,
        })
    }

    /// The text field of a [`TEXT_FIELDS`] column.
    pub(super) fn text_field(&self, column: &str) -> Option<Field> {
        TEXT_FIELDS
            .iter()
            .position(|(c, _)| *c == column)
            .map(|i| self.text[i])
    }

    /// The text field holding a document key (`error.message`), if it is
    /// one of the text fields.
    pub(super) fn text_field_of_key(&self, key: &str) -> Option<Field> {
        TEXT_FIELDS
            .iter()
            .position(|(_, k)| *k == key)
            .map(|i| self.text[i])
    }

    /// The index document of `entry`, the `seq`-th event of the store,
    /// read from its ECS document alone: the log layer hands the store
    /// nothing else, so that no memory of the caller's but the document's
    /// crosses to the store's thread. `scratch` is reused from one event to
    /// the next: the writer allocates for none of the terms.
    pub(super) fn document(
        &self,
        entry: &StoreEntry,
        seq: u64,
        scratch: &mut Scratch,
    ) -> TantivyDocument {
        let Scratch { term, text, digits } = scratch;
        // The ECS line, the terms and their values: one buffer, sized once.
        let mut doc = TantivyDocument::with_capacity(entry.document.len() * 2 + 128);
        doc.add_i64(self.ts, entry.timestamp_ms);
        doc.add_u64(self.seq, seq);
        let mut exact = |key: &str, value: &str, doc: &mut TantivyDocument| {
            term.clear();
            term.push_str(key);
            term.push(SEP);
            term.push_str(value);
            doc.add_text(self.attrs, term.as_str());
        };
        let line = String::from_utf8_lossy(&entry.document);
        // A line that is not a JSON object is kept (found by time and
        // `tail`), its keys unindexed.
        let pairs = serde_json::from_str::<Pairs<'_>>(&line).unwrap_or_default();
        for (key, raw) in &pairs.0 {
            let key = key.as_ref();
            let value = Value::of(raw);
            match (key, &value) {
                ("@timestamp" | "ecs.version", _) => continue,
                ("log.level", Value::Str(level)) => {
                    doc.add_text(self.level, level);
                    doc.add_text(self.stored_level, level);
                    continue;
                }
                ("log.level", _) => continue,
                _ => {}
            }
            if !value.text(key, text) {
                continue;
            }
            let text_field = self.text_field_of_key(key);
            if let Some(f) = text_field {
                doc.add_text(f, text.as_str());
            }
            match value {
                Value::Number { value, tag, .. } => {
                    numeric_term_into(key, value, tag, text, digits);
                    doc.add_text(self.nums, digits_str(digits));
                }
                _ if text_field.is_none() => exact(key, text, &mut doc),
                _ => {}
            }
        }
        drop(pairs);
        doc.add_text(self.doc, line);
        doc
    }

    /// The `attrs` term of `key` holding `value`.
    pub(super) fn exact_term(&self, key: &str, value: &str) -> Term {
        Term::from_field_text(self.attrs, &format!("{key}{SEP}{value}"))
    }
}

/// The buffers [`Fields::document`] reuses from one event to the next.
#[derive(Default)]
pub(super) struct Scratch {
    term: String,
    text: String,
    digits: Vec<u8>,
}

/// `bytes` as text: only ASCII digits, letters and what [`Fields::document`]
/// writes in them ever land there.
fn digits_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The keys of an ECS document with their values' JSON, in the line's
/// order, borrowed from it (a key with escapes is copied).
#[derive(Default)]
struct Pairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an ECS document (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<'de>, A::Error> {
                // An ECS line of the log layer has a dozen keys or so.
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16).min(64));
                while let Some(Key(key)) = map.next_key()? {
                    pairs.push((key, map.next_value()?));
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// A key, borrowed from the line unless it holds escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// A value of the document as the index takes it.
enum Value<'a> {
    Str(Cow<'a, str>),
    /// A number, with the tag of its kind ([`INTEGER`] or [`FLOAT`]) and
    /// its text as the line writes it.
    Number {
        value: f64,
        tag: char,
        text: &'a str,
    },
    /// `true`, `false`, an object or an array: indexed as its JSON text.
    Json(&'a str),
    Null,
}

impl<'a> Value<'a> {
    fn of(raw: &'a RawValue) -> Value<'a> {
        let json = raw.get();
        match json.as_bytes().first() {
            Some(b'"') => match json.get(1..json.len() - 1) {
                Some(inner) if !inner.contains('\\') => Value::Str(Cow::Borrowed(inner)),
                _ => serde_json::from_str::<String>(json)
                    .map(|s| Value::Str(Cow::Owned(s)))
                    .unwrap_or(Value::Null),
            },
            Some(b'n') => Value::Null,
            Some(b'-' | b'0'..=b'9') => match json.parse::<f64>() {
                // serde_json writes a float with a point or an exponent,
                // an integer with neither.
                Ok(value) if value.is_finite() => Value::Number {
                    value,
                    tag: if json.contains(['.', 'e', 'E']) {
                        FLOAT
                    } else {
                        INTEGER
                    },
                    text: json,
                },
                _ => Value::Json(json),
            },
            _ => Value::Json(json),
        }
    }

    /// Writes the value's text as the query language matches it into
    /// `out`; false for `null` (what the log layer writes for a float that
    /// is not finite), which is not indexed. The ids of a trace are
    /// written as the log layer writes them, 32 and 16 lowercase hex
    /// digits: the previous version's 16-digit trace ids are widened.
    fn text(&self, key: &str, out: &mut String) -> bool {
        out.clear();
        match self {
            Value::Str(s) if key == "trace.id" => {
                match u128::from_str_radix(s, 16)
                    .ok()
                    .and_then(crate::trace::TraceId::from_u128)
                {
                    Some(id) => out.push_str(digits_str(&id.hex())),
                    None => out.push_str(s),
                }
            }
            Value::Str(s) if key == "span.id" => match crate::trace::SpanId::from_hex(s) {
                Some(id) => out.push_str(digits_str(&id.hex())),
                None => out.push_str(s),
            },
            Value::Str(s) => out.push_str(s),
            Value::Number { text, .. } | Value::Json(text) => out.push_str(text),
            Value::Null => return false,
        }
        true
    }
}

/// The tags of an integer and of a float in a `nums` term.
pub(super) const INTEGER: char = 'i';
pub(super) const FLOAT: char = 'f';

/// The `nums` term of a numeric value: `key`, the separator, the value in
/// numeric byte order (for ranges), its kind and its text as the document
/// writes it (for exact terms). One term serves both, so a number costs
/// the index one term, not two.
pub(super) fn numeric_term(key: &str, value: f64, tag: char, text: &str) -> String {
    let mut term = Vec::with_capacity(key.len() + 18 + text.len());
    numeric_term_into(key, value, tag, text, &mut term);
    String::from_utf8_lossy(&term).into_owned()
}

/// [`numeric_term`] written into `out` (cleared first).
fn numeric_term_into(key: &str, value: f64, tag: char, text: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(key.as_bytes());
    out.push(SEP as u8);
    crate::util::write_hex16(out, sortable_bits(value));
    out.push(tag as u8);
    out.extend_from_slice(text.as_bytes());
}

/// `v` as 16 hex digits whose byte order is the numeric order (the sign
/// bit flipped for positives, every bit for negatives; -0 as 0).
pub(super) fn sortable(v: f64) -> String {
    let mut out = Vec::with_capacity(16);
    crate::util::write_hex16(&mut out, sortable_bits(v));
    String::from_utf8_lossy(&out).into_owned()
}

fn sortable_bits(v: f64) -> u64 {
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// The query language's words as a tantivy tokenizer: runs of letters and
/// digits, lower-cased as [`str::to_lowercase`] does.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Words;

pub(super) struct WordStream<'a> {
    text: &'a str,
    at: usize,
    token: Token,
}

impl Tokenizer for Words {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        WordStream {
            text,
            at: 0,
            token: Token::default(),
        }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        let rest = &self.text[self.at..];
        let Some(start) = rest.find(char::is_alphanumeric) else {
            self.at = self.text.len();
            return false;
        };
        let word = &rest[start..];
        let len = word
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(word.len());
        let word = &word[..len];
        self.token.text.clear();
        if word.is_ascii() {
            self.token.text.push_str(word);
            self.token.text.make_ascii_lowercase();
        } else {
            self.token.text.push_str(&word.to_lowercase());
        }
        self.token.offset_from = self.at + start;
        self.token.offset_to = self.at + start + len;
        self.token.position = self.token.position.wrapping_add(1);
        self.at += start + len;
        true
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

/// Registers the tokenizers the schema names on `index`.
pub(super) fn register(index: &tantivy::Index) {
    index
        .tokenizers()
        .register(WORDS, TextAnalyzer::from(Words));
}
