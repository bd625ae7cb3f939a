//! The stores the search table measures, behind one face: the index (the
//! store) and, while the choice is measured, the previous SQLite FTS5 one.

use std::path::Path;

use hyperkit_obs::logs::store::StoreEntry;
use hyperkit_obs::logs::store::fts5::Fts5Store;
use hyperkit_obs::logs::{LogStore, Query, SearchOptions};

pub(crate) enum Engine {
    Tantivy(LogStore),
    Fts5(Fts5Store),
}

impl Engine {
    pub(crate) fn open(name: &str, dir: &Path) -> Engine {
        match name {
            "fts5" => Engine::Fts5(Fts5Store::open(dir).unwrap()),
            _ => Engine::Tantivy(LogStore::open(dir).unwrap()),
        }
    }

    pub(crate) fn insert(&mut self, entries: &[StoreEntry]) {
        match self {
            Engine::Tantivy(s) => s.insert(entries).unwrap(),
            Engine::Fts5(s) => s.insert(entries).unwrap(),
        }
    }

    /// Lets background merges finish, so that what is measured is the
    /// store as it stays, not one caught mid-merge.
    pub(crate) fn settle(&mut self) {
        if let Engine::Tantivy(s) = self {
            s.close_writers();
        }
    }

    pub(crate) fn count(&self) -> u64 {
        match self {
            Engine::Tantivy(s) => s.count().unwrap(),
            Engine::Fts5(s) => s.count().unwrap(),
        }
    }

    /// Bytes of every file under `dir`.
    pub(crate) fn bytes(&self, dir: &Path) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => walk(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(dir)
    }

    pub(crate) fn supports(&self, query: &Query) -> bool {
        fn plain(q: &Query) -> bool {
            match q {
                Query::Wildcard(_) | Query::Range(_) => false,
                Query::And(p) | Query::Or(p) => p.iter().all(plain),
                Query::Not(q) => plain(q),
                Query::All | Query::Term(_) => true,
            }
        }
        matches!(self, Engine::Tantivy(_)) || plain(query)
    }

    pub(crate) fn search(&self, query: &Query, options: &SearchOptions) -> usize {
        match self {
            Engine::Tantivy(s) => s.search(query, options).unwrap().len(),
            Engine::Fts5(s) => s.search(query, options).unwrap().len(),
        }
    }
}
