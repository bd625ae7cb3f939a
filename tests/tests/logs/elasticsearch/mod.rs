//! The Elasticsearch shipper against a protocol fixture: an HTTP/1.1 server
//! on 127.0.0.1 that answers `_bulk` as the bulk API documents it
//! (<https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html>:
//! an NDJSON body of action and document lines, gzip with
//! `Content-Encoding: gzip`, an answer `{took, errors, items: [{index|create:
//! {_index, status, error: {type, reason}}}]}` in request order, whole-request
//! 413/429/503), `PUT _index_template/<name>` as the index template API does
//! (<https://www.elastic.co/guide/en/elasticsearch/reference/current/index-templates.html>)
//! and `_search` as the search API does (`test_support::fixture::elasticsearch`).
//! No Elasticsearch runs here; the fixture can also answer slowly, or drop
//! the connection, and records every request. Delivery, retries and
//! back-pressure are in `delivery`; the index template, credentials and
//! search in `api`.

mod api;
mod delivery;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyperkit_obs::logs::elastic::{self as elasticsearch, ElasticsearchConfig};
use hyperkit_obs::logs::{Document, ShipperGuard};
use test_support::fixture::elasticsearch::{Answered, Bulk, Fixture, Reply, default_other};

fn config(fixture: &Fixture) -> ElasticsearchConfig {
    let mut c = ElasticsearchConfig::new(&fixture.url);
    c.flush_interval = Duration::from_millis(10);
    c.retry_initial = Duration::from_millis(10);
    c.retry_max = Duration::from_millis(100);
    c.timeout = Duration::from_secs(5);
    c.install_template = false;
    c
}

/// 2026-11-27T12:00:00Z and the day after.
const DAY1: i64 = 1_795_780_800_000;
const DAY2: i64 = DAY1 + 86_400_000;

fn doc(id: u64, ts: i64) -> Arc<[u8]> {
    format!(r#"{{"@timestamp":"{ts}","log.level":"INFO","message":"event {id}","id":{id}}}"#)
        .into_bytes()
        .into()
}

/// Starts the shipper with `c`, sends documents `ids` of [`DAY1`] and waits
/// (at most 10 s) until they are all delivered or given up.
fn ship(c: &ElasticsearchConfig, ids: std::ops::Range<u64>) -> ShipperGuard {
    let guard = elasticsearch::start(c).unwrap();
    let shipper = guard.handle();
    for id in ids {
        shipper.send(Document::new(doc(id, DAY1), DAY1));
    }
    assert!(
        shipper.flush(Duration::from_secs(10)),
        "{:?}",
        shipper.status()
    );
    guard
}

/// Ids answered with a success status (2xx, or 409 when `create`).
fn delivered_counts(answered: &[Answered], conflict_ok: bool) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for (_, id, status) in answered {
        if (200..300).contains(status) || (conflict_ok && *status == 409) {
            *counts.entry(*id).or_default() += 1;
        }
    }
    counts
}

/// `hyperkit_obs_dropped_total{sink="elasticsearch"}` in this process.
fn dropped_metric() -> f64 {
    test_support::metrics::total("hyperkit_obs_dropped_total", &[("sink", "elasticsearch")])
}
