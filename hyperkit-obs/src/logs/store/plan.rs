//! A [`Query`] compiled for one segment of a day's index. Each term is
//! first looked up in the segment's term dictionary: a term in no event of
//! the segment makes its part of the query match nothing, one in every
//! event makes it match everything, and the boolean structure is
//! simplified from there, so `service.name:other` (absent) and
//! `NOT service.name:svc` (everywhere) read no posting list at all.
//! Wildcards and ranges become the few matching terms' posting lists, or
//! one bitmap of the segment when they match many terms. Work and memory
//! are bounded by the query's terms and the segment's size; nothing here
//! panics or recurses deeper than the query nests.

use std::ops::Bound;
use std::sync::Arc;

use tantivy::query::{
    AllQuery, BitSetDocSet, BooleanQuery, ConstScorer, EnableScoring, Explanation, Occur,
    PhraseQuery, Query as TantivyQuery, Scorer, TermQuery, Weight,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{BitSet, DocId, DocSet, Score, SeekDangerResult, SegmentReader, Term};

use super::schema::{FLOAT, Fields, INTEGER, SEP, numeric_term, sortable};
use crate::logs::query::{FieldKind, Query, Range, wildcard_matches, wildcard_prefix};
use crate::logs::{ECS_VERSION, words};

/// A query simplified for one segment.
pub(super) enum Node {
    All,
    Nothing,
    Leaf(Box<dyn TantivyQuery>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

/// More matching terms than this become one bitmap instead of a union of
/// posting lists read lazily.
const LAZY_TERMS: usize = 32;

pub(super) struct Segment<'a> {
    pub(super) fields: &'a Fields,
    pub(super) reader: &'a SegmentReader,
    /// Docs `[start, end)` of the segment hold this timestamp range's
    /// events (the segment is sorted newest first).
    pub(super) ts_docs: &'a dyn Fn(i64, i64) -> (DocId, DocId),
}

type Result<T> = tantivy::Result<T>;

impl Segment<'_> {
    /// `query` for this segment.
    pub(super) fn plan(&self, query: &Query) -> Result<Node> {
        Ok(match query {
            Query::All => Node::All,
            Query::Term(t) => {
                let key = t.document_key();
                match t.kind() {
                    FieldKind::Level => self.term(Term::from_field_text(
                        self.fields.level,
                        &t.value.to_lowercase(),
                    ))?,
                    FieldKind::Exact => self.exact(key.unwrap_or_default(), &t.value)?,
                    FieldKind::Text(column) => {
                        let words: Vec<String> = words(&t.value).collect();
                        let mut parts = Vec::new();
                        for field in self.text_fields(column) {
                            parts.push(self.phrase(field, &words)?);
                        }
                        or(parts)
                    }
                }
            }
            Query::Wildcard(t) => self.wildcard(t.kind(), t.document_key(), &t.value)?,
            Query::Range(r) => self.range(r)?,
            Query::And(parts) => {
                let mut planned = Vec::with_capacity(parts.len());
                for p in parts {
                    match self.plan(p)? {
                        Node::Nothing => return Ok(Node::Nothing),
                        Node::All => {}
                        n => planned.push(n),
                    }
                }
                match planned.len() {
                    0 => Node::All,
                    1 => planned.pop().unwrap_or(Node::All),
                    _ => Node::And(planned),
                }
            }
            Query::Or(parts) => {
                let mut planned = Vec::with_capacity(parts.len());
                for p in parts {
                    planned.push(self.plan(p)?);
                }
                or(planned)
            }
            Query::Not(inner) => match self.plan(inner)? {
                Node::All => Node::Nothing,
                Node::Nothing => Node::All,
                n => Node::Not(Box::new(n)),
            },
        })
    }

    fn text_fields(&self, column: &str) -> Vec<Field> {
        if column.is_empty() {
            self.fields.text.clone()
        } else {
            self.fields.text_field(column).into_iter().collect()
        }
    }

    fn max_doc(&self) -> u32 {
        self.reader.max_doc()
    }

    /// Whether a term in `df` documents is in all of them.
    fn everywhere(&self, df: u32) -> bool {
        df == self.max_doc() && self.reader.num_deleted_docs() == 0
    }

    fn term(&self, term: Term) -> Result<Node> {
        let df = self.reader.inverted_index(term.field())?.doc_freq(&term)?;
        Ok(if df == 0 {
            Node::Nothing
        } else if self.everywhere(df) {
            Node::All
        } else {
            Node::Leaf(Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
        })
    }

    /// The words in `field`, consecutively.
    fn phrase(&self, field: Field, words: &[String]) -> Result<Node> {
        if let [word] = words {
            return self.term(Term::from_field_text(field, word));
        }
        let index = self.reader.inverted_index(field)?;
        let mut terms = Vec::with_capacity(words.len());
        for w in words {
            let term = Term::from_field_text(field, w);
            if index.doc_freq(&term)? == 0 {
                return Ok(Node::Nothing);
            }
            terms.push(term);
        }
        if terms.is_empty() {
            return Ok(Node::Nothing);
        }
        Ok(Node::Leaf(Box::new(PhraseQuery::new(terms))))
    }

    /// A field other than the level and the text fields equal to `value`.
    fn exact(&self, key: &str, value: &str) -> Result<Node> {
        match key {
            "ecs.version" => Ok(constant(value == ECS_VERSION)),
            "@timestamp" => {
                // Only the text the document writes matches it.
                let ms = crate::logs::parse_time(value, 0).ok();
                match ms.filter(|ms| crate::logs::format_timestamp(*ms) == value) {
                    Some(ms) => Ok(self.doc_range((self.ts_docs)(ms, ms.saturating_add(1)))),
                    None => Ok(Node::Nothing),
                }
            }
            _ => {
                let mut parts = vec![self.term(self.fields.exact_term(key, value))?];
                // A number matches where the document writes this text.
                if let Ok(v) = value.parse::<f64>()
                    && v.is_finite()
                {
                    for tag in [INTEGER, FLOAT] {
                        let term = numeric_term(key, v, tag, value);
                        parts.push(self.term(Term::from_field_text(self.fields.nums, &term))?);
                    }
                }
                Ok(or(parts))
            }
        }
    }

    fn doc_range(&self, (start, end): (DocId, DocId)) -> Node {
        if start >= end {
            return Node::Nothing;
        }
        let mut docs = BitSet::with_max_value(self.max_doc());
        for d in start..end {
            docs.insert(d);
        }
        Node::Leaf(Box::new(Docs(Arc::new(docs))))
    }

    fn wildcard(&self, kind: FieldKind, key: Option<&str>, pattern: &str) -> Result<Node> {
        match kind {
            FieldKind::Level => {
                let pattern = pattern.to_lowercase();
                self.terms_with_prefix(self.fields.level, "", &pattern)
            }
            FieldKind::Exact => match key.unwrap_or_default() {
                "ecs.version" => Ok(constant(wildcard_matches(pattern, ECS_VERSION))),
                key => {
                    let key = format!("{key}{SEP}");
                    let strings = self.terms_with_prefix(self.fields.attrs, &key, pattern)?;
                    // Numbers: every value of the key, matched on its text.
                    let end = prefix_end(key.as_bytes());
                    let lower = Bound::Included(key.clone().into_bytes());
                    let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
                    let numbers = self.terms(self.fields.nums, lower, upper, |v| {
                        v.strip_prefix(&key)
                            .and_then(|rest| rest.get(17..))
                            .is_some_and(|text| wildcard_matches(pattern, text))
                    })?;
                    Ok(or(vec![strings, numbers]))
                }
            },
            FieldKind::Text(column) => {
                let pattern = pattern.to_lowercase();
                let mut parts = Vec::new();
                for field in self.text_fields(column) {
                    parts.push(self.terms_with_prefix(field, "", &pattern)?);
                }
                Ok(or(parts))
            }
        }
    }

    /// The terms of `field` that are `key` followed by a value matching
    /// `pattern`.
    fn terms_with_prefix(&self, field: Field, key: &str, pattern: &str) -> Result<Node> {
        let start = format!("{key}{}", wildcard_prefix(pattern));
        let end = prefix_end(start.as_bytes());
        let lower = Bound::Included(start.into_bytes());
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.terms(field, lower, upper, |value| {
            value
                .strip_prefix(key)
                .is_some_and(|v| wildcard_matches(pattern, v))
        })
    }

    fn range(&self, r: &Range) -> Result<Node> {
        let key = r.document_key();
        if key == "ecs.version" {
            // A string: numeric bounds never hold it.
            let inside = in_bounds(ECS_VERSION, r.lower.as_ref(), r.upper.as_ref());
            return Ok(constant(r.numeric().is_none() && inside));
        }
        if matches!((&r.lower, &r.upper), (Bound::Unbounded, Bound::Unbounded)) {
            return self.wildcard(r.kind(), Some(key), "*");
        }
        if let Some((lower, upper)) = r.numeric() {
            if r.kind() == FieldKind::Level {
                return Ok(Node::Nothing);
            }
            let prefix = format!("{key}{SEP}");
            // Terms of one value share `prefix` + its 16 sortable digits.
            let value = |v: f64| format!("{prefix}{}", sortable(v)).into_bytes();
            let after = |v: f64| prefix_end(&value(v)).map_or(Bound::Unbounded, Bound::Included);
            let lower = match lower {
                Bound::Included(v) => Bound::Included(value(v)),
                Bound::Excluded(v) => after(v),
                Bound::Unbounded => Bound::Included(prefix.clone().into_bytes()),
            };
            let upper = match upper {
                Bound::Included(v) => match after(v) {
                    Bound::Included(b) => Bound::Excluded(b),
                    other => other,
                },
                Bound::Excluded(v) => Bound::Excluded(value(v)),
                Bound::Unbounded => {
                    prefix_end(prefix.as_bytes()).map_or(Bound::Unbounded, Bound::Excluded)
                }
            };
            return self.terms(self.fields.nums, lower, upper, |v| v.starts_with(&prefix));
        }
        let lower_case = |b: &Bound<String>| map_bound(b, |s| s.to_lowercase());
        match r.kind() {
            FieldKind::Level => {
                let (lo, hi) = (lower_case(&r.lower), lower_case(&r.upper));
                let (lower, upper) = (bytes(&lo, ""), bytes(&hi, ""));
                self.terms(self.fields.level, lower, upper, |_| true)
            }
            FieldKind::Text(column) => {
                let (lo, hi) = (lower_case(&r.lower), lower_case(&r.upper));
                let mut parts = Vec::new();
                for field in self.text_fields(column) {
                    let (lower, upper) = (bytes(&lo, ""), bytes(&hi, ""));
                    parts.push(self.terms(field, lower, upper, |_| true)?);
                }
                Ok(or(parts))
            }
            FieldKind::Exact => {
                let prefix = format!("{key}{SEP}");
                let lower = match bytes(&r.lower, &prefix) {
                    Bound::Unbounded => Bound::Included(prefix.clone().into_bytes()),
                    b => b,
                };
                let upper = match bytes(&r.upper, &prefix) {
                    Bound::Unbounded => {
                        prefix_end(prefix.as_bytes()).map_or(Bound::Unbounded, Bound::Excluded)
                    }
                    b => b,
                };
                self.terms(self.fields.attrs, lower, upper, |v| v.starts_with(&prefix))
            }
        }
    }

    /// The documents holding a term of `field` between `lower` and `upper`
    /// that `keep` accepts.
    fn terms(
        &self,
        field: Field,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Node> {
        let index = self.reader.inverted_index(field)?;
        let dict = index.terms();
        let mut range = dict.range();
        range = match &lower {
            Bound::Included(b) => range.ge(b),
            Bound::Excluded(b) => range.gt(b),
            Bound::Unbounded => range,
        };
        range = match &upper {
            Bound::Included(b) => range.le(b),
            Bound::Excluded(b) => range.lt(b),
            Bound::Unbounded => range,
        };
        let mut stream = range.into_stream()?;
        let mut few: Vec<Node> = Vec::new();
        let mut many: Option<BitSet> = None;
        while stream.advance() {
            let Ok(text) = std::str::from_utf8(stream.key()) else {
                continue;
            };
            if !keep(text) {
                continue;
            }
            let info = stream.value();
            if self.everywhere(info.doc_freq) {
                return Ok(Node::All);
            }
            if many.is_none() && few.len() < LAZY_TERMS {
                let term = Term::from_field_text(field, text);
                few.push(Node::Leaf(Box::new(TermQuery::new(
                    term,
                    IndexRecordOption::Basic,
                ))));
                continue;
            }
            let docs = many.get_or_insert_with(|| BitSet::with_max_value(self.max_doc()));
            if !few.is_empty() {
                // The terms kept lazily so far go into the bitmap too.
                for node in std::mem::take(&mut few) {
                    if let Node::Leaf(q) = node {
                        add_docs(q.as_ref(), self.reader, docs)?;
                    }
                }
            }
            let mut postings = index.read_postings_from_terminfo(info, IndexRecordOption::Basic)?;
            while postings.doc() != tantivy::TERMINATED {
                docs.insert(postings.doc());
                postings.advance();
            }
        }
        Ok(match many {
            Some(docs) => Node::Leaf(Box::new(Docs(Arc::new(docs)))),
            None => or(few),
        })
    }
}

fn add_docs(query: &dyn TantivyQuery, reader: &SegmentReader, docs: &mut BitSet) -> Result<()> {
    let schema = reader.schema();
    let mut scorer = query
        .weight(EnableScoring::disabled_from_schema(schema))?
        .scorer(reader, 1.0)?;
    while scorer.doc() != tantivy::TERMINATED {
        docs.insert(scorer.doc());
        scorer.advance();
    }
    Ok(())
}

fn constant(matches: bool) -> Node {
    if matches { Node::All } else { Node::Nothing }
}

fn or(parts: Vec<Node>) -> Node {
    let mut kept = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Node::All => return Node::All,
            Node::Nothing => {}
            n => kept.push(n),
        }
    }
    match kept.len() {
        0 => Node::Nothing,
        1 => kept.pop().unwrap_or(Node::Nothing),
        _ => Node::Or(kept),
    }
}

fn map_bound(b: &Bound<String>, f: impl Fn(&str) -> String) -> Bound<String> {
    match b {
        Bound::Included(s) => Bound::Included(f(s)),
        Bound::Excluded(s) => Bound::Excluded(f(s)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn bytes(b: &Bound<String>, prefix: &str) -> Bound<Vec<u8>> {
    map_bound(b, |s| format!("{prefix}{s}")).map(String::into_bytes)
}

fn in_bounds(value: &str, lower: Bound<&String>, upper: Bound<&String>) -> bool {
    let above = match lower {
        Bound::Included(l) => value >= l.as_str(),
        Bound::Excluded(l) => value > l.as_str(),
        Bound::Unbounded => true,
    };
    let below = match upper {
        Bound::Included(u) => value <= u.as_str(),
        Bound::Excluded(u) => value < u.as_str(),
        Bound::Unbounded => true,
    };
    above && below
}

/// The least byte string greater than every string starting with `prefix`
/// (`None` when there is none: all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The tantivy query of `node`; `None` when it matches nothing.
pub(super) fn to_query(node: Node) -> Option<Box<dyn TantivyQuery>> {
    match node {
        Node::All => Some(Box::new(AllQuery)),
        Node::Nothing => None,
        Node::Leaf(q) => Some(q),
        Node::And(parts) => {
            let mut clauses: Vec<(Occur, Box<dyn TantivyQuery>)> = Vec::new();
            let mut positive = false;
            for p in parts {
                match p {
                    Node::Not(inner) => {
                        if let Some(q) = to_query(*inner) {
                            clauses.push((Occur::MustNot, Box::new(ForwardOnly(q))));
                        }
                    }
                    other => {
                        clauses.push((Occur::Must, to_query(other)?));
                        positive = true;
                    }
                }
            }
            // tantivy matches nothing for a query of exclusions alone.
            if !positive {
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Some(Box::new(BooleanQuery::new(clauses)))
        }
        Node::Or(parts) => {
            let queries: Vec<_> = parts.into_iter().filter_map(to_query).collect();
            (!queries.is_empty()).then(|| Box::new(BooleanQuery::union(queries)) as _)
        }
        Node::Not(inner) => Some(match to_query(*inner) {
            None => Box::new(AllQuery),
            Some(q) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery)),
                (Occur::MustNot, Box::new(ForwardOnly(q))),
            ])),
        }),
    }
}

/// A query used to exclude documents. tantivy's exclusion asks its first
/// candidate of the excluded set even when that set already stands past it
/// (a phrase's scorer asserts against that in debug builds), and its
/// "dangerous" seek may leave a scorer off its set. Here every seek is a
/// real one, and a document behind the set's position is answered "not in
/// it", which is what the position means.
#[derive(Debug)]
struct ForwardOnly(Box<dyn TantivyQuery>);

impl Clone for ForwardOnly {
    fn clone(&self) -> Self {
        ForwardOnly(self.0.box_clone())
    }
}

impl TantivyQuery for ForwardOnly {
    fn weight(&self, scoring: EnableScoring<'_>) -> Result<Box<dyn Weight>> {
        Ok(Box::new(ForwardWeight(self.0.weight(scoring)?)))
    }
}

struct ForwardWeight(Box<dyn Weight>);

impl Weight for ForwardWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> Result<Box<dyn Scorer>> {
        Ok(Box::new(ForwardScorer(self.0.scorer(reader, boost)?)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> Result<Explanation> {
        self.0.explain(reader, doc)
    }
}

struct ForwardScorer(Box<dyn Scorer>);

impl DocSet for ForwardScorer {
    fn advance(&mut self) -> DocId {
        self.0.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        let doc = self.0.doc();
        if target <= doc {
            doc
        } else {
            self.0.seek(target)
        }
    }

    /// Always a real seek: the scorer stays on a document of its set, so
    /// its position can answer for the documents behind it.
    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        let doc = self.seek(target);
        if doc == target {
            SeekDangerResult::Found
        } else {
            SeekDangerResult::SeekLowerBound(doc)
        }
    }

    fn doc(&self) -> DocId {
        self.0.doc()
    }

    fn size_hint(&self) -> u32 {
        self.0.size_hint()
    }
}

impl Scorer for ForwardScorer {
    fn score(&mut self) -> Score {
        self.0.score()
    }
}

/// A set of one segment's documents worked out in advance.
#[derive(Clone, Debug)]
struct Docs(Arc<BitSet>);

impl TantivyQuery for Docs {
    fn weight(&self, _: EnableScoring<'_>) -> Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for Docs {
    fn scorer(&self, _reader: &SegmentReader, boost: Score) -> Result<Box<dyn Scorer>> {
        let docs = BitSetDocSet::from((*self.0).clone());
        Ok(Box::new(ConstScorer::new(docs, boost)))
    }

    fn explain(&self, _reader: &SegmentReader, _doc: DocId) -> Result<Explanation> {
        Ok(Explanation::new("a precomputed set of documents", 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_last_byte_that_can_grow() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }
}
