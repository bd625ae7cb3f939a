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
//! request.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyperkit_obs::Secret;
use hyperkit_obs::logs::elastic::{self as elasticsearch, ElasticsearchAuth, ElasticsearchConfig};
use hyperkit_obs::logs::{Document, ShipperGuard};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the fixture received it.
#[derive(Clone, Debug)]
struct Request {
    at: Instant,
    method: String,
    path: String,
    headers: HashMap<String, String>,
    /// The body, gunzipped when it was gzip.
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// `(action, _index, document)` of each bulk document, checking the
    /// NDJSON framing.
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

/// What the fixture does with a request.
enum Reply {
    /// An HTTP answer: status, extra headers, JSON body.
    Json(u16, Vec<(&'static str, String)>, Value),
    /// Close the connection without answering.
    Drop,
    /// Wait, then answer.
    Slow(Duration, Box<Reply>),
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
    requests: Vec<Request>,
    /// Items answered within a normal 200 answer.
    answered: Vec<Answered>,
    seen: HashMap<u64, u32>,
    bulks: usize,
}

struct Fixture {
    url: String,
    log: Arc<Mutex<Log>>,
    _stop: tokio::sync::oneshot::Sender<()>,
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
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log_in = log.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = async {
                    loop {
                        let (stream, _) = listener.accept().await.unwrap();
                        let (log, item, whole, other) =
                            (log_in.clone(), item.clone(), whole.clone(), other.clone());
                        tokio::spawn(async move {
                            let _ = serve(stream, log, item, whole, other).await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        Fixture {
            url: format!("http://{addr}"),
            log,
            _stop: stop,
        }
    }

    fn items(item: impl Fn(u64, u32, &str) -> u16 + Send + Sync + 'static) -> Fixture {
        Fixture::start(
            Arc::new(item),
            Arc::new(|_, _| None),
            Arc::new(default_other),
        )
    }

    fn bulk_requests(&self) -> Vec<Request> {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/_bulk"))
            .cloned()
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

/// Reads one HTTP/1.1 request (Content-Length framing, as reqwest sends a
/// body it knows the size of), answers it, and closes.
async fn serve(
    mut stream: tokio::net::TcpStream,
    log: Arc<Mutex<Log>>,
    item: Arc<ItemRule>,
    whole: Arc<WholeRule>,
    other: Arc<OtherRule>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let path = request_line.next().unwrap().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let raw = &buf[head_end..head_end + length];
    let body = if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw).read_to_end(&mut out)?;
        out
    } else {
        raw.to_vec()
    };
    let request = Request {
        at: Instant::now(),
        method,
        path,
        headers,
        body,
    };
    let mut reply = {
        let mut log = log.lock().unwrap();
        log.requests.push(request.clone());
        if request.path.starts_with("/_bulk") {
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
            match whole(number, &request) {
                Some(reply) => reply,
                None => {
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
            }
        } else {
            other(&request)
        }
    };
    loop {
        match reply {
            Reply::Slow(wait, next) => {
                tokio::time::sleep(wait).await;
                reply = *next;
            }
            Reply::Drop => return Ok(()),
            Reply::Json(status, extra, body) => {
                let body = body.to_string();
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await?;
                return Ok(());
            }
        }
    }
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

#[test]
fn each_event_is_delivered_once_retried_or_rejected_with_its_reason_and_order_is_kept() {
    // id % 10: 1 → 429 once, 2 → 503 twice, 3 → 400 mapping error always.
    let fixture = Fixture::items(|id, attempt, _| match (id % 10, attempt) {
        (1, 0) => 429,
        (2, 0 | 1) => 503,
        (3, _) => 400,
        _ => 201,
    });
    let mut c = config(&fixture);
    c.batch_events = 25;
    let rejected: Arc<Mutex<Vec<(Value, String)>>> = Arc::default();
    let sink = rejected.clone();
    let guard = elasticsearch::start_with_rejected(&c, move |doc, reason| {
        sink.lock()
            .unwrap()
            .push((serde_json::from_slice(doc).unwrap(), reason.to_owned()));
    })
    .unwrap();
    let shipper = guard.handle();
    const N: u64 = 200;
    for id in 0..N {
        let day = if id < N / 2 { DAY1 } else { DAY2 };
        assert!(shipper.send(Document::new(doc(id, day), day)));
    }
    assert!(shipper.flush(Duration::from_secs(10)), "flush timed out");

    let delivered = delivered_counts(&fixture.answered(), false);
    for id in 0..N {
        let expected = usize::from(id % 10 != 3);
        assert_eq!(
            delivered.get(&id).copied().unwrap_or(0),
            expected,
            "id {id}"
        );
    }
    let seen = fixture.log.lock().unwrap().seen.clone();
    for id in 0..N {
        let times = match id % 10 {
            1 => 2,
            2 => 3,
            _ => 1, // the 400s are never retried
        };
        assert_eq!(seen[&id], times, "id {id} was sent {} times", seen[&id]);
    }
    let rejected = rejected.lock().unwrap();
    assert_eq!(rejected.len(), 20);
    for (doc, reason) in rejected.iter() {
        assert_eq!(doc["id"].as_u64().unwrap() % 10, 3);
        assert!(reason.contains("mapper_parsing_exception"), "{reason}");
        assert!(reason.contains("HTTP 400"), "{reason}");
    }
    let status = shipper.status();
    assert_eq!(
        (
            status.delivered,
            status.rejected,
            status.dropped,
            status.queued
        ),
        (180, 20, 0, 0)
    );

    let requests = fixture.bulk_requests();
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        // Retried documents come before newer ones: ids rise in each request.
        let ids = r.ids();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
        for (action, index, doc) in r.bulk() {
            assert_eq!(action, "index");
            let day = if doc["id"].as_u64().unwrap() < N / 2 {
                "2026.11.27"
            } else {
                "2026.11.28"
            };
            assert_eq!(index, format!("hyperkit-logs-{day}"));
        }
    }
    // Within each index, documents were first sent in the order they came.
    let mut first_sent = Vec::new();
    for r in &requests {
        for id in r.ids() {
            if !first_sent.contains(&id) {
                first_sent.push(id);
            }
        }
    }
    assert!(first_sent.windows(2).all(|w| w[0] < w[1]));
    guard.shutdown(Duration::from_secs(1));
}

#[test]
fn a_409_on_create_into_a_data_stream_counts_as_delivered() {
    let fixture = Fixture::items(|id, _, action| {
        assert_eq!(action, "create");
        if id % 2 == 0 { 409 } else { 201 }
    });
    let mut c = config(&fixture);
    c.data_stream = true;
    c.index = "logs-hyperkit-test".to_owned();
    let guard = ship(&c, 0..20);
    let shipper = guard.handle();
    let status = shipper.status();
    assert_eq!((status.delivered, status.rejected), (20, 0));
    for r in fixture.bulk_requests() {
        for (action, index, _) in r.bulk() {
            assert_eq!(
                (action.as_str(), index.as_str()),
                ("create", "logs-hyperkit-test")
            );
        }
    }
    assert_eq!(fixture.log.lock().unwrap().seen.values().max(), Some(&1));
    guard.shutdown(Duration::from_secs(1));
}

#[test]
fn a_413_splits_the_batch_in_halves_until_it_fits() {
    let fixture = Fixture::start(
        Arc::new(|_, _, _| 201),
        Arc::new(|_, r: &Request| {
            (r.ids().len() > 8)
                .then(|| Reply::Json(413, vec![], json!({"error": "Request Entity Too Large"})))
        }),
        Arc::new(default_other),
    );
    let mut c = config(&fixture);
    c.batch_events = 40;
    c.flush_interval = Duration::from_secs(60);
    let guard = ship(&c, 0..40);
    let shipper = guard.handle();
    let sizes: Vec<usize> = fixture
        .bulk_requests()
        .iter()
        .map(|r| r.ids().len())
        .collect();
    // Each half is sent on its own; only the halves of 5 fit.
    assert_eq!(
        sizes,
        [40, 20, 10, 5, 5, 10, 5, 5, 20, 10, 5, 5, 10, 5, 5],
        "{sizes:?}"
    );
    let delivered = delivered_counts(&fixture.answered(), false);
    assert_eq!(delivered.len(), 40);
    assert!(delivered.values().all(|&n| n == 1));
    let order: Vec<u64> = fixture.answered().iter().map(|(_, id, _)| *id).collect();
    assert_eq!(order, (0..40).collect::<Vec<_>>());
    assert_eq!(shipper.status().delivered, 40);
    guard.shutdown(Duration::from_secs(1));
}

#[test]
fn whole_request_429_and_503_back_off_honouring_retry_after_then_deliver_once() {
    let fixture = Fixture::start(
        Arc::new(|_, _, _| 201),
        Arc::new(|n, _| match n {
            0 => Some(Reply::Json(
                429,
                vec![("retry-after", "1".to_owned())],
                json!({"error": {"type": "es_rejected_execution_exception", "reason": "busy"}, "status": 429}),
            )),
            1 => Some(Reply::Json(
                503,
                vec![],
                json!({"error": {"type": "cluster_block_exception", "reason": "no master"}, "status": 503}),
            )),
            _ => None,
        }),
        Arc::new(default_other),
    );
    let mut c = config(&fixture);
    c.retry_max = Duration::from_secs(2);
    let guard = ship(&c, 0..10);
    let shipper = guard.handle();
    let requests = fixture.bulk_requests();
    assert_eq!(requests.len(), 3);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {gap:?}"
    );
    for r in &requests {
        assert_eq!(r.ids(), (0..10).collect::<Vec<_>>());
    }
    assert_eq!(shipper.status().delivered, 10);
    assert_eq!(delivered_counts(&fixture.answered(), false).len(), 10);
    guard.shutdown(Duration::from_secs(1));
}

#[test]
fn dropped_connections_and_slow_answers_are_retried_in_order() {
    let fixture = Fixture::start(
        Arc::new(|_, _, _| 201),
        Arc::new(|n, _| match n {
            0 => Some(Reply::Drop),
            1 => Some(Reply::Slow(
                Duration::from_secs(3),
                Box::new(Reply::Json(500, vec![], json!({}))),
            )),
            _ => None,
        }),
        Arc::new(default_other),
    );
    let mut c = config(&fixture);
    c.timeout = Duration::from_millis(300);
    let guard = ship(&c, 0..10);
    let shipper = guard.handle();
    let requests = fixture.bulk_requests();
    assert!(requests.len() >= 3);
    for r in &requests {
        assert_eq!(r.ids(), (0..10).collect::<Vec<_>>());
    }
    let delivered = delivered_counts(&fixture.answered(), false);
    assert_eq!(delivered.len(), 10);
    assert!(delivered.values().all(|&n| n == 1));
    let status = shipper.status();
    assert_eq!((status.delivered, status.dropped), (10, 0));
    guard.shutdown(Duration::from_secs(1));
}

/// Follows a dotted path through a mapping's `properties`.
fn mapping<'a>(mappings: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(mappings, |m, part| &m["properties"][part])
}

#[test]
fn the_index_template_is_installed_with_ecs_mappings_retrying_without_blocking_shipping() {
    let attempts = Arc::new(Mutex::new(0));
    let count = attempts.clone();
    let fixture = Fixture::start(
        Arc::new(|_, _, _| 201),
        Arc::new(|_, _| None),
        Arc::new(move |r: &Request| {
            let mut n = count.lock().unwrap();
            *n += 1;
            if *n <= 2 {
                Reply::Json(
                    500,
                    vec![],
                    json!({"error": {"type": "x", "reason": "not yet"}}),
                )
            } else {
                default_other(r)
            }
        }),
    );
    let mut c = config(&fixture);
    c.install_template = true;
    c.retry_initial = Duration::from_millis(200);
    let guard = elasticsearch::start(&c).unwrap();
    let shipper = guard.handle();
    shipper.send(Document::new(doc(1, DAY1), DAY1));
    // The failed template does not hold back the logs.
    common::wait_for("the first bulk", Duration::from_secs(5), || {
        shipper.status().delivered == 1
    });
    assert!(shipper.status().warning.is_some());
    common::wait_for("the template", Duration::from_secs(5), || {
        shipper.status().warning.is_none()
    });
    let log = fixture.log.lock().unwrap();
    let puts: Vec<&Request> = log
        .requests
        .iter()
        .filter(|r| r.path == "/_index_template/hyperkit-logs")
        .collect();
    assert_eq!(puts.len(), 3);
    assert!(puts.iter().all(|r| r.method == "PUT"));
    let template = puts[2].json();
    assert_eq!(template["index_patterns"], json!(["hyperkit-logs-*"]));
    let m = &template["template"]["mappings"];
    for (field, kind) in [
        ("@timestamp", "date"),
        ("log.level", "keyword"),
        ("message", "match_only_text"),
        ("service.name", "keyword"),
        ("event.duration", "long"),
        ("error.message", "text"),
        ("error.type", "keyword"),
        ("trace.id", "keyword"),
        ("span.id", "keyword"),
        ("chain", "keyword"),
        ("model", "keyword"),
        ("task", "keyword"),
        ("operation", "keyword"),
        ("status", "keyword"),
        ("ecs.version", "keyword"),
    ] {
        assert_eq!(mapping(m, field)["type"], kind, "{field}");
    }
    let dynamic = &m["dynamic_templates"][0]["strings_as_keyword"];
    assert_eq!(dynamic["match_mapping_type"], "string");
    assert_eq!(dynamic["mapping"]["type"], "keyword");
    drop(log);
    guard.shutdown(Duration::from_secs(1));
}

#[test]
fn api_key_and_basic_auth_are_sent_and_never_shown() {
    let fixture = Fixture::start(
        Arc::new(|_, _, _| 201),
        Arc::new(|n, _| {
            (n == 0).then(|| {
                Reply::Json(401, vec![], json!({"error": {"type": "security_exception", "reason": "missing authentication credentials"}, "status": 401}))
            })
        }),
        Arc::new(default_other),
    );
    for (auth, expected) in [
        (
            ElasticsearchAuth::ApiKey(Secret::new(
                "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==",
            )),
            "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==".to_owned(),
        ),
        (
            ElasticsearchAuth::Basic {
                username: "elastic".to_owned(),
                password: Secret::new("pa55-w0rd"),
            },
            // base64("elastic:pa55-w0rd")
            "Basic ZWxhc3RpYzpwYTU1LXcwcmQ=".to_owned(),
        ),
    ] {
        let mut c = config(&fixture);
        c.auth = Some(auth);
        let secret = expected.split(' ').nth(1).unwrap().to_owned();
        let guard = elasticsearch::start(&c).unwrap();
        let shipper = guard.handle();
        shipper.send(Document::new(doc(1, DAY1), DAY1));
        assert!(shipper.flush(Duration::from_secs(10)));
        let last = fixture.bulk_requests().pop().unwrap();
        assert_eq!(last.header("authorization"), Some(expected.as_str()));
        for shown in [
            format!("{c:?}"),
            format!("{guard:?}"),
            format!("{:?}", shipper.status()),
            format!("{:?}", elasticsearch::ElasticsearchClient::new(&c).unwrap()),
        ] {
            assert!(
                !shown.contains(&secret) && !shown.contains("pa55-w0rd"),
                "{shown}"
            );
        }
        guard.shutdown(Duration::from_secs(1));
    }
    // The first request was refused with 401 and retried, its error kept
    // without the credential.
    let requests = fixture.bulk_requests();
    assert_eq!(requests.len(), 3);
}

#[test]
fn a_hanging_server_never_blocks_send_and_a_full_queue_counts_drops_exactly() {
    let fixture = Fixture::start(
        Arc::new(|_, _, _| 201),
        Arc::new(|_, _| Some(Reply::Slow(Duration::from_secs(30), Box::new(Reply::Drop)))),
        Arc::new(default_other),
    );
    let mut c = config(&fixture);
    c.queue_capacity = 100;
    c.timeout = Duration::from_secs(30);
    let guard = elasticsearch::start(&c).unwrap();
    let shipper = guard.handle();
    let before = dropped_metric();
    let mut slowest = Duration::ZERO;
    for id in 0..1000 {
        let started = Instant::now();
        shipper.send(Document::new(doc(id, DAY1), DAY1));
        slowest = slowest.max(started.elapsed());
        if id == 50 {
            common::wait_for("a hanging bulk request", Duration::from_secs(5), || {
                !fixture.bulk_requests().is_empty()
            });
        }
    }
    // A bound with margin, not a speed: the bulk request hangs for its
    // 30 s timeout, so a send that waited for room would wait that long;
    // 250 ms leaves room for a descheduled thread on a loaded machine.
    assert!(
        slowest < Duration::from_millis(250),
        "send took {slowest:?}"
    );
    let status = shipper.status();
    assert_eq!((status.queued, status.dropped), (100, 900));
    assert!(dropped_metric() - before >= 900.0);
    let started = Instant::now();
    guard.shutdown(Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let status = shipper.status();
    assert_eq!(
        (status.queued, status.dropped, status.delivered),
        (0, 1000, 0)
    );
}

fn dropped_metric() -> f64 {
    hyperkit_obs::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "hyperkit_obs_dropped_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "sink" && l.value() == "elasticsearch")
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[test]
fn search_sends_a_query_string_query_newest_first_and_returns_the_sources() {
    let fixture = Fixture::start(
        Arc::new(|_, _, _| 201),
        Arc::new(|_, _| None),
        Arc::new(|r: &Request| {
            if r.path.contains("/_search") {
                Reply::Json(
                    200,
                    vec![],
                    json!({"took": 1, "timed_out": false, "hits": {"total": {"value": 2, "relation": "eq"}, "hits": [
                        {"_index": "hyperkit-logs-2026.11.28", "_id": "b", "_source": {"message": "newer"}, "sort": [2]},
                        {"_index": "hyperkit-logs-2026.11.27", "_id": "a", "_source": {"message": "older"}, "sort": [1]},
                    ]}}),
                )
            } else {
                default_other(r)
            }
        }),
    );
    let client = elasticsearch::ElasticsearchClient::new(&config(&fixture)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hits = rt
        .block_on(client.search(
            r#"log.level:error AND chain:ethereum AND "out of gas""#,
            Some(DAY1),
            Some(DAY2),
            50,
        ))
        .unwrap();
    assert_eq!(
        hits,
        vec![json!({"message": "newer"}), json!({"message": "older"})]
    );
    let log = fixture.log.lock().unwrap();
    let r = log.requests.last().unwrap();
    assert!(r.path.starts_with("/hyperkit-logs-*/_search"), "{}", r.path);
    let body = r.json();
    let bool_query = &body["query"]["bool"];
    assert_eq!(
        bool_query["must"][0]["query_string"]["query"],
        r#"log.level:error AND chain:ethereum AND "out of gas""#
    );
    assert_eq!(
        bool_query["filter"][0]["range"]["@timestamp"],
        json!({"gte": DAY1, "lte": DAY2, "format": "epoch_millis"})
    );
    assert_eq!(body["sort"], json!([{"@timestamp": {"order": "desc"}}]));
    assert_eq!(body["size"], 50);
}
