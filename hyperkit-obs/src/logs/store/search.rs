//! Searching the store. Newest first: days newest first, and in each day
//! the segments by their newest event; in a segment (sorted newest first)
//! the time range is a binary search on the timestamp column and the
//! query's matches come newest first, so each segment yields at most
//! `limit` of them and the search stops at the first day or segment whose
//! newest event is older than every hit it holds. After a cursor (`tail`):
//! only the segments holding events stored after it are read.
//!
//! A day that fails to read (damaged, or removed by retention meanwhile)
//! is skipped and recorded, never trusted: a search fails only when the
//! store's directory cannot be listed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tantivy::columnar::Column;
use tantivy::query::EnableScoring;
use tantivy::schema::Value as _;
use tantivy::{DocId, DocSet, Searcher, SegmentReader, TERMINATED, TantivyDocument};

use super::day::Day;
use super::plan::{Segment, to_query};
use super::schema::Fields;
use super::{Cursor, LogStore, SearchOptions, StoreError, StoredLog};
use crate::logs::query::Query;
use crate::logs::time::day_start;

const DAY_MS: i64 = 86_400_000;

/// One match before its document is read: ordered by time, then by when
/// it was stored.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    ts: i64,
    seq: u64,
    /// Index into the searchers of this search.
    searcher: usize,
    segment: u32,
    doc: DocId,
}

/// The `limit` greatest items pushed, by `key`.
struct Best<K: Ord + Copy> {
    limit: usize,
    heap: BinaryHeap<Reverse<K>>,
}

impl<K: Ord + Copy> Best<K> {
    fn new(limit: usize) -> Self {
        Best {
            limit,
            heap: BinaryHeap::with_capacity(limit.min(4096) + 1),
        }
    }

    fn full(&self) -> bool {
        self.heap.len() >= self.limit
    }

    fn least(&self) -> Option<K> {
        self.heap.peek().map(|r| r.0)
    }

    fn push(&mut self, k: K) {
        if !self.full() {
            self.heap.push(Reverse(k));
        } else if self.least().is_some_and(|least| k > least) {
            self.heap.pop();
            self.heap.push(Reverse(k));
        }
    }
}

/// Docs `[start, end)` of a segment sorted newest first whose timestamps
/// are in `[since, until)`.
fn ts_docs(ts: &Column<i64>, max_doc: DocId, since: i64, until: i64) -> (DocId, DocId) {
    let value = |doc: DocId| ts.first(doc).unwrap_or(i64::MIN);
    let first_below = |bound: i64| {
        let (mut lo, mut hi) = (0, max_doc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if value(mid) >= bound {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    (first_below(until), first_below(since))
}

struct SegmentScan<'a> {
    /// Its place among the searcher's segments.
    ord: u32,
    reader: &'a SegmentReader,
    ts: Column<i64>,
    seq: Column<u64>,
    /// Docs in the time range.
    start: DocId,
    end: DocId,
}

impl LogStore {
    /// Events matching `query`, newest first (or, with
    /// [`SearchOptions::after`], the ones stored after it, oldest first).
    ///
    /// Days that cannot be read are skipped and reported by
    /// [`damaged_days`](Self::damaged_days).
    pub fn search(
        &self,
        query: &Query,
        options: &SearchOptions,
    ) -> Result<Vec<StoredLog>, StoreError> {
        let since = options.since_ms.unwrap_or(i64::MIN);
        let until = options.until_ms.unwrap_or(i64::MAX);
        if options.limit == 0 || since >= until {
            return Ok(Vec::new());
        }
        let mut days: Vec<u32> = self
            .list_days()?
            .into_iter()
            .filter(|d| day_start(*d).saturating_add(DAY_MS) > since && day_start(*d) < until)
            .collect();
        let mut searchers: Vec<(u32, Arc<Day>, Searcher)> = Vec::new();
        let mut hits = Vec::new();
        match options.after {
            None => {
                days.reverse();
                let mut best = Best::<Hit>::new(options.limit);
                for day in days {
                    // Every event of an older day is older than this one's.
                    let newest = day_start(day).saturating_add(DAY_MS - 1);
                    if best.full() && best.least().is_some_and(|h| h.ts > newest) {
                        break;
                    }
                    self.each_day(
                        day,
                        &mut searchers,
                        |searcher, fields, at, scans| {
                            newest_first(query, scans, searcher, fields, at, &mut best)
                        },
                        since,
                        until,
                    );
                }
                hits.extend(best.heap.into_iter().map(|r| r.0));
                hits.sort_unstable_by(|a, b| b.cmp(a));
            }
            Some(after) => {
                let mut best = Best::<Reverse<(u64, Hit)>>::new(options.limit);
                for day in days {
                    self.each_day(
                        day,
                        &mut searchers,
                        |searcher, fields, at, scans| {
                            stored_after(query, scans, searcher, fields, at, after, &mut best)
                        },
                        since,
                        until,
                    );
                }
                hits.extend(best.heap.into_iter().map(|r| (r.0).0.1));
                hits.sort_unstable_by_key(|h| h.seq);
            }
        }
        Ok(self.fetch(&hits, &searchers))
    }

    /// Runs `search` over the segments of `day` that hold events in
    /// `[since, until)`; a day that fails is skipped and recorded.
    fn each_day(
        &self,
        day: u32,
        searchers: &mut Vec<(u32, Arc<Day>, Searcher)>,
        search: impl FnOnce(&Searcher, &Fields, usize, Vec<SegmentScan<'_>>) -> tantivy::Result<()>,
        since: i64,
        until: i64,
    ) {
        let Some(d) = self.day(day) else { return };
        let searcher = match d.searcher() {
            Ok(s) => s,
            Err(e) => return self.skip(day, &e.to_string()),
        };
        let at = searchers.len();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut scans = Vec::new();
            for (ord, reader) in searcher.segment_readers().iter().enumerate() {
                if reader.max_doc() == 0 {
                    continue;
                }
                let fast = reader.fast_fields();
                let (ts, seq) = (fast.i64("ts")?, fast.u64("seq")?);
                let (start, end) = ts_docs(&ts, reader.max_doc(), since, until);
                if start < end {
                    scans.push(SegmentScan {
                        ord: ord as u32,
                        reader,
                        ts,
                        seq,
                        start,
                        end,
                    });
                }
            }
            search(&searcher, &d.fields, at, scans)
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.skip(day, &e.to_string()),
            Err(_) => self.skip(day, "reading it panicked: the index is damaged"),
        }
        searchers.push((day, d, searcher));
    }

    /// Records that `day` could not be read, unless retention removed it.
    fn skip(&self, day: u32, why: &str) {
        if self.dir.join(day.to_string()).exists() {
            self.mark_damaged(day, why);
        }
    }

    /// The stored documents of `hits`, in order; a hit whose document
    /// cannot be read is left out (its day is recorded as damaged).
    fn fetch(&self, hits: &[Hit], searchers: &[(u32, Arc<Day>, Searcher)]) -> Vec<StoredLog> {
        let mut stores = std::collections::HashMap::new();
        let mut found = Vec::with_capacity(hits.len());
        for h in hits {
            let (day, d, searcher) = &searchers[h.searcher];
            let read = catch_unwind(AssertUnwindSafe(|| -> tantivy::Result<StoredLog> {
                let store = match stores.entry((h.searcher, h.segment)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(searcher.segment_reader(h.segment).get_store_reader(4)?)
                    }
                };
                let doc: TantivyDocument = store.get(h.doc)?;
                let text = |f| {
                    doc.get_first(f)
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_owned()
                };
                Ok(StoredLog {
                    cursor: Cursor { seq: h.seq },
                    timestamp_ms: h.ts,
                    level: text(d.fields.stored_level),
                    document: text(d.fields.doc),
                })
            }));
            match read {
                Ok(Ok(log)) => found.push(log),
                Ok(Err(e)) => self.skip(*day, &e.to_string()),
                Err(_) => self.skip(*day, "reading a document panicked: the index is damaged"),
            }
        }
        found
    }
}

fn scorer(
    query: &Query,
    searcher: &Searcher,
    fields: &Fields,
    scan: &SegmentScan<'_>,
) -> tantivy::Result<Option<Box<dyn tantivy::query::Scorer>>> {
    let ts_docs = |since: i64, until: i64| ts_docs(&scan.ts, scan.reader.max_doc(), since, until);
    let segment = Segment {
        fields,
        reader: scan.reader,
        ts_docs: &ts_docs,
    };
    let Some(q) = to_query(segment.plan(query)?) else {
        return Ok(None);
    };
    let mut scorer = q
        .weight(EnableScoring::disabled_from_schema(searcher.schema()))?
        .scorer(scan.reader, 1.0)?;
    if scorer.doc() < scan.start {
        scorer.seek(scan.start);
    }
    Ok(Some(scorer))
}

fn newest_first(
    query: &Query,
    mut scans: Vec<SegmentScan<'_>>,
    searcher: &Searcher,
    fields: &Fields,
    at: usize,
    best: &mut Best<Hit>,
) -> tantivy::Result<()> {
    let newest = |s: &SegmentScan<'_>| s.ts.first(s.start).unwrap_or(i64::MIN);
    scans.sort_by_key(|s| Reverse(newest(s)));
    for scan in &scans {
        if best.full() && best.least().is_some_and(|h| h.ts > newest(scan)) {
            break;
        }
        let Some(mut scorer) = scorer(query, searcher, fields, scan)? else {
            continue;
        };
        let segment = scan.ord;
        let mut taken = 0;
        let mut doc = scorer.doc();
        while doc != TERMINATED && doc < scan.end && taken < best.limit {
            let ts = scan.ts.first(doc).unwrap_or(i64::MIN);
            // The rest of the segment is older still.
            if best.full() && best.least().is_some_and(|h| h.ts > ts) {
                break;
            }
            let seq = scan.seq.first(doc).unwrap_or(0);
            best.push(Hit {
                ts,
                seq,
                searcher: at,
                segment,
                doc,
            });
            taken += 1;
            doc = scorer.advance();
        }
    }
    Ok(())
}

fn stored_after(
    query: &Query,
    scans: Vec<SegmentScan<'_>>,
    searcher: &Searcher,
    fields: &Fields,
    at: usize,
    after: Cursor,
    best: &mut Best<Reverse<(u64, Hit)>>,
) -> tantivy::Result<()> {
    for scan in &scans {
        if scan.seq.max_value() <= after.seq {
            continue;
        }
        let Some(mut scorer) = scorer(query, searcher, fields, scan)? else {
            continue;
        };
        let segment = scan.ord;
        let mut doc = scorer.doc();
        while doc != TERMINATED && doc < scan.end {
            let seq = scan.seq.first(doc).unwrap_or(0);
            if seq > after.seq {
                let ts = scan.ts.first(doc).unwrap_or(i64::MIN);
                let hit = Hit {
                    ts,
                    seq,
                    searcher: at,
                    segment,
                    doc,
                };
                best.push(Reverse((seq, hit)));
            }
            doc = scorer.advance();
        }
    }
    Ok(())
}
