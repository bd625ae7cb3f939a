//! Structured logs: Elastic Common Schema JSON lines on stdout and a local
//! store that `hyperkit-obs logs search` queries with Kibana's Lucene syntax.
//!
//! - [`ecs_document`] builds the one JSON document of an event; every sink
//!   uses its bytes.
//! - [`EcsLayer`] (from [`layer`]) is the `tracing_subscriber::Layer` that
//!   writes those lines and feeds the store. [`init()`](crate::init) installs
//!   it; a program with its own subscriber adds it itself.
//! - [`text_layer`] writes human-readable lines instead, for a terminal
//!   ([`TextFormat`], with durations as [`HumanDuration`]).
//! - [`NonBlockingStdout`] and [`non_blocking`] write the lines off the
//!   caller's thread.
//! - [`store`] is the local store (a tantivy index per day) with its
//!   background writer.
//! - [`Query`] is the query language.
//! - [`elastic`] and [`logstash`] ship the documents to Elasticsearch and
//!   Logstash on the shared export runtime; [`elastic::ElasticsearchClient`]
//!   is also the search client of `hyperkit-obs logs search`.
//!
//! Nothing here blocks the logging caller on the store or panics.

mod config;
mod document;
#[cfg(feature = "elasticsearch")]
#[cfg_attr(docsrs, doc(cfg(feature = "elasticsearch")))]
pub mod elastic;
mod layer;
#[cfg(feature = "logstash")]
#[cfg_attr(docsrs, doc(cfg(feature = "logstash")))]
pub mod logstash;
mod query;
#[cfg(any(feature = "elasticsearch", feature = "logstash"))]
mod ship;
mod stdout;
#[cfg(feature = "log-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "log-store")))]
pub mod store;
#[cfg(test)]
mod testing;
mod text;
mod time;

pub use config::{LogFormat, LogsConfig};
pub use document::{ECS_VERSION, FieldValue, LogRecord, ecs_document};
pub use layer::{EcsLayer, TrackedSpans, layer};
pub use query::{
    FieldKind, ParseError, Query, Range, TEXT_FIELDS, Term, wildcard_matches, wildcard_prefix,
    words,
};
#[cfg(any(feature = "elasticsearch", feature = "logstash"))]
pub use ship::{Document, ShipperGuard, ShipperHandle, ShippingError};
pub use stdout::{
    FLUSH_DEADLINE as STDOUT_FLUSH_DEADLINE, LineWriter, NonBlocking, NonBlockingGuard,
    NonBlockingStdout, QueuedLine, flush as flush_stdout, non_blocking,
};
#[cfg(feature = "log-store")]
pub use store::{LogStore, LogStoreGuard, SearchOptions, StoreSink, StoredLog};
pub use text::{HumanDuration, TextFields, TextFormat, colour_allowed, text_layer};
pub use time::{format_timestamp, parse_time};

/// The store's directory for a data directory: `<data_dir>/logs`.
pub fn store_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("logs")
}
