//! What the log shippers share: the [`Document`] they carry (one ECS JSON
//! document as the log layer wrote it), their handles and guards (those of
//! the shared export runtime, [`crate::export`]), and their errors.
//!
//! The log layer hands each document to every [`ShipperHandle`] with
//! [`send`](crate::export::Handle::send): it never blocks, never does I/O
//! and never panics; a full queue drops the document and counts it in
//! `hyperkit_obs_dropped_total{sink}`. A sink's own trouble, logged under
//! [`LOG_TARGET`](crate::export::LOG_TARGET) with its `sink` field, is never
//! shipped to that sink (a failing Elasticsearch is not sent the news of
//! its own failure).

use std::sync::Arc;

/// One ECS JSON document (a JSON object, no trailing newline) on its way
/// to a shipper.
#[derive(Clone, Debug)]
pub struct Document {
    /// The document's bytes, shared by every sink it goes to.
    pub bytes: Arc<[u8]>,
    /// Its `@timestamp` in milliseconds since the Unix epoch (Elasticsearch
    /// picks the daily index from it).
    pub timestamp_ms: i64,
}

impl Document {
    /// A document written at `timestamp_ms`.
    pub fn new(bytes: Arc<[u8]>, timestamp_ms: i64) -> Self {
        Document {
            bytes,
            timestamp_ms,
        }
    }
}

/// The handle the log layer sends documents to a shipper through.
pub type ShipperHandle = crate::export::Handle<Document>;

/// A running shipper: dropping it delivers what is queued (within its
/// shutdown deadline, 5 s) and stops it.
pub type ShipperGuard = crate::export::Guard<Document>;

/// Errors of the shippers and of the Elasticsearch client. Their text never
/// holds a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShippingError {
    /// The shipper could not start (its thread, runtime or HTTP client).
    #[error("the {sink} shipper cannot start: {message}")]
    Setup {
        /// `elasticsearch` or `logstash`.
        sink: &'static str,
        /// Why.
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{target} is unreachable: {message}")]
    Transport {
        /// The server (no credentials).
        target: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{target} answered HTTP {status}: {body}")]
    Http {
        /// The server (no credentials).
        target: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The server's answer could not be read.
    #[error("{target} answered something that is not Elasticsearch's JSON: {message}")]
    Decode {
        /// The server (no credentials).
        target: String,
        /// What could not be read.
        message: String,
    },
}
