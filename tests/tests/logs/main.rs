//! Logs: the local store (`store`) and what its index added (`index`:
//! wildcards, ranges, time ranges with limits, the tail cursor), and
//! shipping to Elasticsearch (`elasticsearch`) and Logstash (`logstash`)
//! against protocol fixtures.
//!
//! `init()` with both shippers configured is `logs_shipping.rs`, a binary
//! of its own: it installs the process-wide subscriber.

mod elasticsearch;
mod index;
mod logstash;
mod store;
