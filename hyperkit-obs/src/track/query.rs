//! Handles of `#[track_query]`: `hyperkit_db_queries_total{operation,status}`
//! and `hyperkit_db_query_duration_seconds{operation}`.

use std::time::Duration;

use prometheus::IntCounter;

use super::{Handles, Status};
use crate::metrics::{DurationHistogram, FAMILIES, LabelSets};

/// The pre-resolved metrics of one operation.
pub struct QueryHandles {
    calls: [IntCounter; 4],
    duration: DurationHistogram,
    values: Box<[Box<str>]>,
}

impl QueryHandles {
    fn new(labels: &[&str]) -> Self {
        let operation = labels[0];
        let f = &*FAMILIES;
        QueryHandles {
            calls: Status::ALL.map(|s| f.db_queries_total.child(&[operation, s.as_str()])),
            values: Box::new([Box::from(operation)]),
            duration: f.db_query_duration.child(&[operation]),
        }
    }
}

impl Handles for QueryHandles {
    fn domain(&self) -> &'static str {
        "query"
    }

    fn labels(&self) -> (&'static [&'static str], &[Box<str>]) {
        (&["operation"], &self.values)
    }

    #[inline]
    fn record(&self, status: Status, elapsed: Duration) {
        self.calls[status.index()].inc();
        self.duration.observe(elapsed);
    }
}

/// Every operation seen by `#[track_query]`.
pub static QUERIES: LabelSets<QueryHandles> = LabelSets::new(
    "hyperkit_db_queries_total",
    &["operation"],
    QueryHandles::new,
);
