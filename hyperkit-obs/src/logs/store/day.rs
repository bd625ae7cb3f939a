//! One UTC day's tantivy index: opened for reading on first use, reloaded
//! when another commit lands (another process's, too), and written through
//! one `IndexWriter` created when the day is first written. It must never
//! hold a writer it is not using for long (each holds memory, threads and
//! the day's lock), and never reads a schema other than its own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::directory::MmapDirectory;
use tantivy::index::{IndexSettings, IndexSortByField, Order};
use tantivy::indexer::{IndexWriterOptions, LogMergePolicy, UserOperation};
use tantivy::store::Compressor;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};

use super::schema::{self, Fields, Scratch};
use super::{LogStore, StoreEntry, StoreError, lock};
use crate::logs::time::day_of;

/// Doc-store blocks: larger ones compress ECS lines (alike from one to the
/// next) better, and a search reads few of them.
const DOCSTORE_BLOCK: usize = 64 * 1024;

/// Documents handed to an indexing thread at once.
const HANDOVER: usize = 256;

/// The smallest batch shared between indexing threads.
const SPLIT_FROM: usize = 4096;

/// Threads indexing a day's documents: two where the machine has two
/// cores (each writes its own segment per commit, so a commit's segments
/// are sorted and finished in parallel), one on a single core.
fn indexing_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// What `meta.json` looked like when the reader last reloaded: a commit
/// replaces the file (a new inode), so a change of any part means a reload.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path.join("meta.json")).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        inode,
        len: m.len(),
        modified: m.modified().ok(),
    })
}

pub(super) struct Day {
    path: PathBuf,
    index: Index,
    pub(super) fields: Fields,
    reader: IndexReader,
    seen: Mutex<Option<Stamp>>,
    writer: Mutex<Option<IndexWriter>>,
    /// Threads its writer indexes with.
    threads: usize,
}

impl Day {
    fn error(path: &Path) -> impl Fn(tantivy::TantivyError) -> StoreError + '_ {
        |source| StoreError::Index {
            path: path.to_owned(),
            source,
        }
    }

    /// Opens the existing index in `path`.
    pub(super) fn open(path: &Path) -> Result<Day, StoreError> {
        let index = Index::open_in_dir(path).map_err(Day::error(path))?;
        Day::from_index(path, index)
    }

    /// Opens the index in `path`, creating it when there is none.
    pub(super) fn open_or_create(path: &Path) -> Result<Day, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Dir {
            path: path.to_owned(),
            source,
        })?;
        let directory = MmapDirectory::open(path).map_err(|e| StoreError::Index {
            path: path.to_owned(),
            source: e.into(),
        })?;
        let index = Index::builder()
            .schema(Fields::new().schema)
            .settings(IndexSettings {
                sort_by_field: Some(IndexSortByField {
                    field: "ts".to_owned(),
                    order: Order::Desc,
                }),
                docstore_compression: Compressor::Lz4,
                docstore_blocksize: DOCSTORE_BLOCK,
                ..IndexSettings::default()
            })
            .open_or_create(directory)
            .map_err(Day::error(path))?;
        Day::from_index(path, index)
    }

    fn from_index(path: &Path, index: Index) -> Result<Day, StoreError> {
        let fields = Fields::from_schema(index.schema()).ok_or_else(|| StoreError::Format {
            path: path.to_owned(),
            reason: "its index lacks fields this version writes".to_owned(),
        })?;
        let sorted = index
            .settings()
            .sort_by_field
            .as_ref()
            .is_some_and(|s| s.field == "ts" && s.order == Order::Desc);
        if !sorted {
            return Err(StoreError::Format {
                path: path.to_owned(),
                reason: "its index is not sorted newest first".to_owned(),
            });
        }
        schema::register(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(Day::error(path))?;
        Ok(Day {
            path: path.to_owned(),
            seen: Mutex::new(stamp(path)),
            index,
            fields,
            reader,
            writer: Mutex::new(None),
            threads: indexing_threads(),
        })
    }

    /// A searcher over the day's latest commit.
    pub(super) fn searcher(&self) -> Result<Searcher, StoreError> {
        let now = stamp(&self.path);
        let mut seen = lock(&self.seen);
        if now != *seen {
            self.reader.reload().map_err(Day::error(&self.path))?;
            *seen = now;
        }
        Ok(self.reader.searcher())
    }

    /// Adds `docs` and commits them: all are stored or none. A failure
    /// drops the writer with what it held, so a retry starts clean.
    pub(super) fn write<I>(&self, docs: I, memory: usize) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = TantivyDocument>,
        I::IntoIter: ExactSizeIterator,
    {
        self.add(docs, memory)?;
        self.commit()
    }

    /// Adds `docs` (newest first) without committing them.
    ///
    /// With one indexing thread they go in messages of [`HANDOVER`], so
    /// building the next ones overlaps indexing these. With more, a batch
    /// of [`SPLIT_FROM`] or more gives each thread one contiguous part: every segment a
    /// commit writes then holds its own span of time, apart from the
    /// others', and tantivy merges such segments by stacking them instead
    /// of re-sorting every event (interleaved messages would give every
    /// segment the whole batch's span).
    pub(super) fn add<I>(&self, docs: I, memory: usize) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = TantivyDocument>,
        I::IntoIter: ExactSizeIterator,
    {
        let mut slot = lock(&self.writer);
        let result = (|| {
            let writer = match slot.as_mut() {
                Some(w) => w,
                None => {
                    let threads = self.threads;
                    let options = IndexWriterOptions::builder()
                        .num_worker_threads(threads)
                        .num_merge_threads(1)
                        .memory_budget_per_thread(super::writer::writer_memory(
                            (memory / threads) as u64,
                        ))
                        .build();
                    let writer: IndexWriter = self.index.writer_with_options(options)?;
                    let mut policy = LogMergePolicy::default();
                    // Eight segments of a size before they merge: each
                    // merge rewrites (and re-sorts) every event it holds,
                    // and on two cores it takes from indexing; eight
                    // small segments still cost a search little.
                    policy.set_min_num_segments(8);
                    writer.set_merge_policy(Box::new(policy));
                    slot.insert(writer)
                }
            };
            let mut docs = docs.into_iter();
            let part = match self.threads {
                1 => HANDOVER,
                // A small batch goes whole to one thread: split, it would
                // make as many tiny segments, each merged again soon.
                _ if docs.len() < SPLIT_FROM => docs.len(),
                n => docs.len().div_ceil(n),
            };
            while docs.len() > 0 {
                let chunk: Vec<UserOperation<TantivyDocument>> =
                    docs.by_ref().take(part).map(UserOperation::Add).collect();
                writer.run(chunk)?;
            }
            Ok(())
        })();
        if result.is_err() {
            // Rolls back what was added: the batch comes again, whole.
            *slot = None;
        }
        result.map_err(Day::error(&self.path))
    }

    /// Commits what was added.
    pub(super) fn commit(&self) -> Result<(), StoreError> {
        let mut slot = lock(&self.writer);
        let Some(writer) = slot.as_mut() else {
            return Ok(());
        };
        let result = writer.commit();
        if result.is_err() {
            *slot = None;
        }
        result.map(|_| ()).map_err(Day::error(&self.path))
    }

    /// Stops the day's writer, if it has one (waiting for its merges).
    pub(super) fn close_writer(&self) {
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.wait_merging_threads();
        }
    }

    /// Whether the day has a writer open.
    pub(super) fn writing(&self) -> bool {
        lock(&self.writer).is_some()
    }
}

impl LogStore {
    /// Writes `entries`, one commit per day they fall on: all the entries of
    /// a day are stored or none.
    pub fn insert(&mut self, entries: &[StoreEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = match self.next_seq {
            Some(s) => s,
            None => self.max_seq()? + 1,
        };
        let mut by_day: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for (i, e) in entries.iter().enumerate() {
            by_day.entry(day_of(e.timestamp_ms)).or_default().push(i);
        }
        let mut scratch = Scratch::default();
        for (&day, indices) in &mut by_day {
            let d = self.day_for_writing(day)?;
            // Newest first, as the index keeps them: tantivy's sort then
            // finds them in order.
            indices.sort_by_key(|&i| std::cmp::Reverse(entries[i].timestamp_ms));
            let docs = indices.iter().map(|&i| {
                d.fields
                    .document(&entries[i], first + i as u64, &mut scratch)
            });
            d.write(docs, self.writer_memory)?;
        }
        self.next_seq = Some(first + entries.len() as u64);
        self.close_idle_writers(by_day.keys().copied().max().unwrap_or(0));
        Ok(())
    }

    /// Adds `entries`, all of `day`, without committing them (a migration
    /// commits each day once).
    pub(super) fn add_uncommitted(
        &mut self,
        day: u32,
        entries: &[StoreEntry],
    ) -> Result<(), StoreError> {
        let first = match self.next_seq {
            Some(s) => s,
            None => self.max_seq()? + 1,
        };
        let d = self.day_for_writing(day)?;
        let mut scratch = Scratch::default();
        let docs = entries
            .iter()
            .enumerate()
            .map(|(i, e)| d.fields.document(e, first + i as u64, &mut scratch));
        d.add(docs, self.writer_memory)?;
        self.next_seq = Some(first + entries.len() as u64);
        Ok(())
    }

    /// Commits what [`add_uncommitted`](Self::add_uncommitted) added to `day`.
    pub(super) fn commit_day(&mut self, day: u32) -> Result<(), StoreError> {
        match self.day(day) {
            Some(d) => d.commit(),
            None => Ok(()),
        }
    }

    /// The cursor after every event stored so far: a search after it
    /// returns only what is stored from now on (`tail` starts there).
    pub fn cursor(&self) -> Result<super::Cursor, StoreError> {
        Ok(super::Cursor {
            seq: self.max_seq()?,
        })
    }

    /// The greatest sequence number stored, 0 for none.
    fn max_seq(&self) -> Result<u64, StoreError> {
        let mut max = 0;
        for day in self.list_days()? {
            let Some(d) = self.day(day) else { continue };
            for segment in d.searcher()?.segment_readers() {
                if segment.num_docs() == 0 {
                    continue;
                }
                if let Ok(column) = segment.fast_fields().u64("seq") {
                    max = max.max(column.max_value());
                }
            }
        }
        Ok(max)
    }

    fn day_for_writing(&self, day: u32) -> Result<Arc<Day>, StoreError> {
        if let Some(d) = self.day(day) {
            return Ok(d);
        }
        let d = Arc::new(Day::open_or_create(&self.dir.join(day.to_string()))?);
        lock(&self.days).insert(day, Arc::clone(&d));
        Ok(d)
    }

    /// Stops every writer this store holds, once their merges are done:
    /// what was committed stays, in as few segments as the merges left.
    pub fn close_writers(&mut self) {
        let days: Vec<Arc<Day>> = lock(&self.days).values().cloned().collect();
        for d in days {
            d.close_writer();
        }
    }

    /// Keeps writers open for the newest day written and the one before it
    /// (late events around midnight); older days' writers stop.
    fn close_idle_writers(&self, newest: u32) {
        let idle: Vec<Arc<Day>> = lock(&self.days)
            .iter()
            .filter(|(day, d)| **day < newest && d.writing())
            .map(|(_, d)| Arc::clone(d))
            .collect();
        for d in idle.iter().rev().skip(1) {
            d.close_writer();
        }
    }
}
