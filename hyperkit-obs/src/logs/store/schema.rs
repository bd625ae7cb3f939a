//! A day index's layout and what one event writes in it: the timestamp
//! (the sort key, a column), a sequence number (the cursor of `tail`), the
//! level, the text fields as words with positions, every other field's
//! value as one exact term (`key\0value`), numeric values again as
//! sortable terms for ranges, and the ECS line itself, stored compressed.
//! The words are the query language's [`words`](crate::logs::words), so
//! what the index finds is what the language means; nothing here panics
//! on what it indexes.

use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{TantivyDocument, Term};

use super::StoreEntry;
use crate::logs::{FieldValue, TEXT_FIELDS};

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

    /// The index document of `entry`, the `seq`-th event of the store.
    /// `scratch` is reused from one event to the next: the writer builds
    /// a document per event and allocates for none of its terms.
    pub(super) fn document(
        &self,
        entry: &StoreEntry,
        seq: u64,
        scratch: &mut Scratch,
    ) -> TantivyDocument {
        let r = &entry.record;
        let Scratch { term, text, digits } = scratch;
        // The ECS line, the terms and their values: one buffer, sized once.
        let mut doc = TantivyDocument::with_capacity(entry.document.len() * 2 + 128);
        doc.add_i64(self.ts, r.timestamp_ms);
        doc.add_u64(self.seq, seq);
        doc.add_text(self.level, r.level);
        doc.add_text(self.stored_level, r.level);
        doc.add_text(self.text[0], &r.message);
        if let Some(f) = self.text_field_of_key("log.logger") {
            doc.add_text(f, &r.target);
        }
        let mut exact = |key: &str, value: &str, doc: &mut TantivyDocument| {
            term.clear();
            term.push_str(key);
            term.push(SEP);
            term.push_str(value);
            doc.add_text(self.attrs, term.as_str());
        };
        if let Some(service) = service_name(&entry.document) {
            exact("service.name", &service, &mut doc);
        }
        r.document_fields(|key, value| {
            if !json_text(value, text, digits) {
                return;
            }
            let text_field = self.text_field_of_key(key);
            if let Some(f) = text_field {
                doc.add_text(f, text.as_str());
            }
            match number(value) {
                Some((n, tag)) => {
                    numeric_term_into(key, n, tag, text, digits);
                    doc.add_text(self.nums, digits_str(digits));
                }
                None if text_field.is_none() => exact(key, text, &mut doc),
                None => {}
            }
        });
        if let Some(function) = r.span_name {
            exact("log.origin.function", function, &mut doc);
        }
        // The ids as the document writes them: 32 and 16 lowercase hex
        // digits.
        if let Some(id) = r.trace_id {
            exact("trace.id", digits_str(&id.hex()), &mut doc);
        }
        if let Some(id) = r.span_id {
            exact("span.id", digits_str(&id.hex()), &mut doc);
        }
        match std::str::from_utf8(&entry.document) {
            Ok(line) => doc.add_text(self.doc, line),
            Err(_) => doc.add_text(self.doc, String::from_utf8_lossy(&entry.document)),
        }
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

/// The value as the document's JSON shows it, as text (`1.0` for a float
/// one, as serde_json writes it); false for what the document writes as
/// `null` (a float that is not finite). `digits` is a buffer to reuse.
pub(super) fn json_text(value: &FieldValue, out: &mut String, digits: &mut Vec<u8>) -> bool {
    out.clear();
    digits.clear();
    match value {
        FieldValue::Str(s) => out.push_str(s),
        FieldValue::I64(v) => {
            crate::util::write_i64(digits, *v);
            out.push_str(digits_str(digits));
        }
        FieldValue::U64(v) => {
            crate::util::write_u64(digits, *v);
            out.push_str(digits_str(digits));
        }
        FieldValue::F64(v) if v.is_finite() => {
            // serde_json writes the shortest text that round-trips, as the
            // document does.
            let _ = serde_json::to_writer(&mut *digits, v);
            out.push_str(digits_str(digits));
        }
        FieldValue::F64(_) => return false,
        FieldValue::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
    }
    true
}

/// The value as a number, when the document writes it as one, with the
/// tag of its kind ([`INTEGER`] or [`FLOAT`]).
fn number(value: &FieldValue) -> Option<(f64, char)> {
    match value {
        FieldValue::I64(v) => Some((*v as f64, INTEGER)),
        FieldValue::U64(v) => Some((*v as f64, INTEGER)),
        FieldValue::F64(v) if v.is_finite() => Some((*v, FLOAT)),
        _ => None,
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

/// The `service.name` of an ECS document as [`ecs_document`]
/// (crate::logs::ecs_document) writes it. Inside a JSON string every `"` is
/// escaped, so the first `,"service.name":"` is the key itself.
pub(super) fn service_name(document: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    const KEY: &[u8] = b",\"service.name\":";
    // From comma to comma (a line has a few dozen): the key comes early,
    // after the timestamp, level, message and logger.
    let mut at = 0;
    let at = loop {
        let comma = at + document.get(at..)?.iter().position(|&b| b == b',')?;
        if document[comma..].starts_with(KEY) {
            break comma + KEY.len();
        }
        at = comma + 1;
    };
    let rest = document.get(at..)?;
    if rest.first() != Some(&b'"') {
        return None;
    }
    let mut escaped = false;
    let mut end = 1;
    while end < rest.len() {
        match rest[end] {
            b'\\' => {
                escaped = true;
                end += 2;
            }
            b'"' if escaped => return serde_json::from_slice(rest.get(..=end)?).ok(),
            b'"' => return std::str::from_utf8(&rest[1..end]).ok().map(Into::into),
            _ => end += 1,
        }
    }
    None
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
