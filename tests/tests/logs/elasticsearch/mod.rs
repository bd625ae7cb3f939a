//! The Elasticsearch shipper against a protocol fixture: an HTTP/1.1 server
//! on 127.0.0.1 that answers `_bulk` as the bulk API documents it
//! (<https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html>:
//! an NDJSON body of action and document lines, gzip with
//! `Content-Encoding: gzip`, an answer `{took, errors, items: [{index|create:
//! {_index, status, error: {type, reason}}}]}` in request order, whole-request
//! 413/429/503), `PUT _index_template/<name>` as the index template API does
//! (<https://www.elastic.co/guide/en/elasticsearch/reference/current/index-templates.html>)
//! and `_search` as the search API does. No Elasticsearch runs here; the
//! fixture can also answer slowly, or drop the connection, and records every
//! request. Delivery, retries and back-pressure are in `delivery`; the index
//! template, credentials and search in `api`.

mod api;
mod delivery;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperkit_obs::logs::elastic::{self as elasticsearch, ElasticsearchConfig};
use hyperkit_obs::logs::{Document, ShipperGuard};
use serde_json::{Value, json};
use test_support::fixture::{self, HttpFixture, Request, Response};

/// A `_bulk` request's documents.
trait Bulk {
    /// `(action, _index, document)` of each bulk document, checking the
    /// NDJSON framing.
    fn bulk(&self) -> Vec<(String, String, Value)>;

    /// The `id` of each document.
    fn ids(&self) -> Vec<u64>;
}

impl Bulk for Request {
    fn bulk(&self) -> Vec<(String, String, Value)> {
        let text = std::str::from_utf8(&self.body).unwrap();
        assert!(
            text.ends_with('\n'),
            "the bulk body must end with a newline"
        );
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len() % 2, 0, "action and document lines pair up");
        lines
            .chunks(2)
            .map(|pair| {
                let action: Value = serde_json::from_str(pair[0]).unwrap();
                let (name, meta) = action.as_object().unwrap().iter().next().unwrap();
                let doc: Value = serde_json::from_str(pair[1]).unwrap();
                (
                    name.clone(),
                    meta["_index"].as_str().unwrap().to_owned(),
                    doc,
                )
            })
            .collect()
    }

    fn ids(&self) -> Vec<u64> {
        self.bulk()
            .iter()
            .map(|(_, _, d)| d["id"].as_u64().unwrap())
            .collect()
    }
}

/// What the fixture does with a request. Every answer closes the
/// connection: one request per connection.
enum Reply {
    /// An HTTP answer: status, extra headers, JSON body.
    Json(u16, Vec<(&'static str, String)>, Value),
    /// Close the connection without answering.
    Drop,
    /// Wait, then answer.
    Slow(Duration, Box<Reply>),
}

impl From<Reply> for fixture::Reply {
    fn from(reply: Reply) -> fixture::Reply {
        match reply {
            Reply::Json(status, extra, body) => extra
                .into_iter()
                .fold(Response::json(status, &body).close(), |r, (k, v)| {
                    r.header(k, v)
                })
                .into(),
            Reply::Drop => fixture::Reply::Close,
            Reply::Slow(wait, next) => fixture::Reply::After(wait, Box::new((*next).into())),
        }
    }
}

/// How the fixture answers a bulk item: given the document's id, how many
/// times the fixture saw it before, and the action.
type ItemRule = dyn Fn(u64, u32, &str) -> u16 + Send + Sync;
/// How the fixture answers a whole bulk request (`None`: item by item),
/// given its number among bulk requests (from 0).
type WholeRule = dyn Fn(usize, &Request) -> Option<Reply> + Send + Sync;
/// How the fixture answers anything else.
type OtherRule = dyn Fn(&Request) -> Reply + Send + Sync;

/// One bulk item as answered: (request number, id, status).
type Answered = (usize, u64, u16);

#[derive(Default)]
struct Log {
    /// Items answered within a normal 200 answer.
    answered: Vec<Answered>,
    seen: HashMap<u64, u32>,
    bulks: usize,
}

struct Fixture {
    url: String,
    log: Arc<Mutex<Log>>,
    http: HttpFixture,
}

fn item_error(status: u16) -> Value {
    let (kind, reason) = match status {
        400 => (
            "mapper_parsing_exception",
            "failed to parse field [event.duration] of type [long] in document",
        ),
        409 => (
            "version_conflict_engine_exception",
            "[abc]: version conflict, document already exists (current version [1])",
        ),
        429 => (
            "es_rejected_execution_exception",
            "rejected execution of coordinating operation",
        ),
        _ => (
            "unavailable_shards_exception",
            "primary shard is not active Timeout: [1m]",
        ),
    };
    json!({"type": kind, "reason": reason})
}

impl Fixture {
    fn start(item: Arc<ItemRule>, whole: Arc<WholeRule>, other: Arc<OtherRule>) -> Fixture {
        let log: Arc<Mutex<Log>> = Arc::default();
        let state = Arc::clone(&log);
        let http = HttpFixture::start(move |request| {
            if request.path.starts_with("/_bulk") {
                answer_bulk(&mut state.lock().unwrap(), request, &*item, &*whole).into()
            } else {
                other(request).into()
            }
        });
        Fixture {
            url: http.url(),
            log,
            http,
        }
    }

    fn items(item: impl Fn(u64, u32, &str) -> u16 + Send + Sync + 'static) -> Fixture {
        Fixture::start(
            Arc::new(item),
            Arc::new(|_, _| None),
            Arc::new(default_other),
        )
    }

    /// Every request received, in order.
    fn requests(&self) -> Vec<Request> {
        self.http.requests()
    }

    fn bulk_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/_bulk"))
            .collect()
    }

    fn answered(&self) -> Vec<Answered> {
        self.log.lock().unwrap().answered.clone()
    }
}

fn default_other(r: &Request) -> Reply {
    if r.path.starts_with("/_index_template/") {
        Reply::Json(200, vec![], json!({"acknowledged": true}))
    } else {
        Reply::Json(404, vec![], json!({"error": "no handler", "status": 404}))
    }
}

/// The answer to a `_bulk` request: the whole rule's, or each item's.
fn answer_bulk(log: &mut Log, request: &Request, item: &ItemRule, whole: &WholeRule) -> Reply {
    let number = log.bulks;
    log.bulks += 1;
    let docs = request.bulk();
    let attempts: Vec<u32> = docs
        .iter()
        .map(|(_, _, d)| {
            let seen = log.seen.entry(d["id"].as_u64().unwrap()).or_default();
            *seen += 1;
            *seen - 1
        })
        .collect();
    if let Some(reply) = whole(number, request) {
        return reply;
    }
    let mut errors = false;
    let items: Vec<Value> = docs
        .iter()
        .zip(attempts)
        .map(|((action, index, doc), attempt)| {
            let id = doc["id"].as_u64().unwrap();
            let status = item(id, attempt, action);
            log.answered.push((number, id, status));
            let mut result = json!({
                "_index": index, "_id": format!("id-{id}-{attempt}"),
                "status": status,
            });
            if status >= 300 {
                errors = true;
                result["error"] = item_error(status);
            } else {
                result["result"] = json!("created");
            }
            json!({ action.clone(): result })
        })
        .collect();
    Reply::Json(
        200,
        vec![],
        json!({"took": 3, "errors": errors, "items": items}),
    )
}

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
