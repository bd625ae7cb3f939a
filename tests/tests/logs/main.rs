//! Logs: the local store (`store`) and what its index added (`index`:
//! wildcards, ranges, time ranges with limits, the tail cursor), shipping
//! to Elasticsearch (`elasticsearch`) and Logstash (`logstash`) against
//! protocol fixtures, and both shippers against the background sinks'
//! common specification (`sinks`).
//!
//! `init()` with both shippers configured is `logs_shipping.rs`, a binary
//! of its own: it installs the process-wide subscriber.

mod elasticsearch;
mod index;
mod logstash;
mod sinks;
mod store;
