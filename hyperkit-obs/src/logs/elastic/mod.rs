//! Elasticsearch (`ELASTICSEARCH_URL`): the shipper that sends the log
//! layer's documents as gzip-compressed NDJSON `_bulk` requests, following
//! the bulk API's documentation
//! (<https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html>),
//! and the search client of `hyperkit-obs logs search`.
//!
//! - [`config`]: `ELASTICSEARCH_*` and `HYPERKIT_ES_*`, the daily index
//!   names and the index template;
//! - [`client`]: one server's `_bulk`, template and `_search` requests and
//!   what their answers mean;
//! - `shipper`: the [`Exporter`](crate::export::Exporter) that runs on the
//!   shared export runtime ([`crate::export`]): batching, retries, drops.
//!
//! A batch goes out when it holds `HYPERKIT_ES_BATCH_EVENTS` documents or
//! `HYPERKIT_ES_BATCH_BYTES` bytes, or its oldest document has waited
//! `HYPERKIT_ES_FLUSH_MS`. Each document goes to the index named by
//! `HYPERKIT_ES_INDEX` for the UTC day of its timestamp (`index` action), or
//! to the data stream `HYPERKIT_ES_INDEX` (`create` action).
//!
//! The answer is read item by item:
//! - 2xx, and 409 on `create` (the document is already there): delivered;
//! - 429 or 5xx: that item alone is retried, before any newer document,
//!   after an exponential backoff with jitter;
//! - any other status (400 `mapper_parsing_exception`, …): refused for good,
//!   never retried, counted in `hyperkit_obs_dropped_total{sink="elasticsearch"}`
//!   and [`SinkStatus::rejected`](crate::export::SinkStatus::rejected), and
//!   handed with its reason to the `on_rejected` callback of
//!   [`start_with_rejected`].
//!
//! A whole request answered 413 is split in halves, each sent on its own (a
//! single document too large is refused for good); 408, 429 and 5xx, a
//! timeout or a broken connection retry the whole batch after a backoff
//! that honours `Retry-After`; 401, 403 and 404 (a configuration problem)
//! too, so that nothing is lost while it is fixed, within the queue bound;
//! any other 4xx refuses the batch for good. An `index` retried after a
//! timeout may have been applied already, so Elasticsearch may hold such a
//! document twice; a `create` into a data stream may not (409).
//!
//! Unless `HYPERKIT_ES_TEMPLATE=false`, the index template
//! `hyperkit-logs` with ECS mappings is installed at start: the first batch
//! waits for the first attempt (at most one request timeout), and a failure
//! is retried with backoff and reported by the readiness check.
//!
//! Credentials never appear in `Debug`, errors or logs.

pub mod client;
pub mod config;
mod shipper;

use std::sync::Arc;

pub use client::ElasticsearchClient;
pub use config::{
    DEFAULT_DATA_STREAM, DEFAULT_INDEX, ElasticsearchAuth, ElasticsearchConfig, TEMPLATE_NAME,
};

use super::ship::{ShipperGuard, ShippingError};

/// Receives each document Elasticsearch refused for good, with the
/// server's reason (`HTTP 400 type: reason`).
pub type RejectedFn = dyn Fn(&[u8], &str) + Send + Sync;

/// The sink name of the shipper: its `sink` label, readiness check and
/// thread.
pub const SINK: &str = "elasticsearch";

/// Starts the Elasticsearch shipper on the shared export runtime and
/// registers the `elasticsearch` readiness check. Never waits for the
/// server.
pub fn start(config: &ElasticsearchConfig) -> Result<ShipperGuard, ShippingError> {
    shipper::start(config, None)
}

/// [`start`], handing each document the server refuses for good to
/// `on_rejected` (on the shipper's thread: keep it short), so that it can
/// be kept elsewhere (`init()` keeps it in the local log store).
pub fn start_with_rejected(
    config: &ElasticsearchConfig,
    on_rejected: impl Fn(&[u8], &str) + Send + Sync + 'static,
) -> Result<ShipperGuard, ShippingError> {
    shipper::start(config, Some(Arc::new(on_rejected)))
}
