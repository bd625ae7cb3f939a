//! `init()` with `ELASTICSEARCH_URL` and `LOGSTASH_URL` set: a tracked
//! call's failure line reaches Elasticsearch's `_bulk` API and a Logstash
//! `tcp` input as the same ECS document the local store keeps, and a
//! document Elasticsearch refuses for good stays in the local store with the
//! reason.
//!
//! Both servers are protocol fixtures, not Elasticsearch or Logstash (which
//! cannot be installed here): the `_bulk` fixture answers as
//! <https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html>
//! documents (NDJSON, gzip, per-item results), refusing documents whose
//! message contains `poison` with a 400 `document_parsing_exception`; the
//! Logstash fixture reads JSON lines as the `tcp` input with the
//! `json_lines` codec does. The richer protocol cases are in
//! `logs/elasticsearch` and `logs/logstash.rs`.
//!
//! A binary of its own: `init()` installs the process-wide subscriber and
//! shippers, which would take every other test's log lines.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyperkit_obs::logs::{LogStore, Query, SearchOptions};
use hyperkit_obs::{Builder, MonitoringConfig, track_build};
use test_support::fixture::{Fixture, HttpFixture, Response};
use test_support::wait::wait_for_value;
use tokio::io::AsyncBufReadExt;

#[derive(Debug)]
struct BuildError;

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("linker ran out of gas")
    }
}

#[track_build(chain)]
fn build(chain: &str) -> Result<(), BuildError> {
    let _ = chain;
    Err(BuildError)
}

/// Every document received, as JSON.
type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A `_bulk` endpoint on 127.0.0.1; also accepts the index template.
fn elasticsearch(received: Received) -> HttpFixture {
    HttpFixture::start(move |request| {
        if !request.path.contains("/_bulk") {
            return Response::json(200, &serde_json::json!({"acknowledged": true})).into();
        }
        let text = String::from_utf8(request.body.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut items = Vec::new();
        for pair in lines.chunks(2) {
            let action: serde_json::Value = serde_json::from_str(pair[0]).unwrap();
            let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
            let doc: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
            let index = meta["_index"].clone();
            if doc["message"].as_str().unwrap_or("").contains("poison") {
                items.push(serde_json::json!({op: {"_index": index, "status": 400,
                    "error": {"type": "document_parsing_exception",
                              "reason": "failed to parse field [chain]"}}}));
            } else {
                received.lock().unwrap().push(doc);
                items.push(serde_json::json!({op: {"_index": index, "status": 201}}));
            }
        }
        let errors = items.iter().any(|i| i.to_string().contains("\"error\""));
        Response::json(
            200,
            &serde_json::json!({"took": 1, "errors": errors, "items": items}),
        )
        .into()
    })
}

/// A Logstash `tcp` input with the `json_lines` codec on 127.0.0.1.
fn logstash(received: Received) -> Fixture {
    Fixture::tcp(move |stream, _| {
        let received = received.clone();
        async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let doc: serde_json::Value =
                    serde_json::from_str(&line).expect("every line is one JSON document");
                received.lock().unwrap().push(doc);
            }
        }
    })
}

fn wait_for(
    what: &str,
    received: &Received,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for_value(what, Duration::from_secs(20), || {
        received.lock().unwrap().iter().find(|d| check(d)).cloned()
    })
}

#[test]
fn init_ships_tracked_failures_to_elasticsearch_and_logstash_and_keeps_refused_documents() {
    let es_docs: Received = Arc::default();
    let ls_docs: Received = Arc::default();
    let es_fixture = elasticsearch(es_docs.clone());
    let ls_fixture = logstash(ls_docs.clone());
    let (es, ls) = (es_fixture.addr().port(), ls_fixture.addr().port());
    let data = std::env::temp_dir().join(format!("hyperkit-logs-shipping-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let vars = [
        ("ELASTICSEARCH_URL", format!("http://127.0.0.1:{es}")),
        ("LOGSTASH_URL", format!("tcp://127.0.0.1:{ls}")),
        ("HYPERKIT_ES_FLUSH_MS", "50".to_owned()),
        ("HYPERKIT_DATA_DIR", data.display().to_string()),
        ("HYPERKIT_LOG_FORMAT", "text".to_owned()),
        ("HYPERKIT_MLFLOW_ENABLED", "false".to_owned()),
        ("HYPERKIT_SERVICE_NAME", "shipping-test".to_owned()),
    ];
    let config = MonitoringConfig::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    let guard = Builder::from_config(config).init().unwrap();
    assert_eq!(guard.log_shippers().len(), 2);

    let started = Instant::now();
    assert!(build("ethereum").is_err());
    tracing::warn!(chain = "solana", "poison pill in the pipeline");
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "shipping never blocks the caller"
    );

    let is_failure = |d: &serde_json::Value| d["log.level"] == "error" && d["chain"] == "ethereum";
    for (sink, docs) in [("Elasticsearch", &es_docs), ("Logstash", &ls_docs)] {
        let doc = wait_for(sink, docs, is_failure);
        assert_eq!(
            doc["error.message"], "linker ran out of gas",
            "{sink}: {doc}"
        );
        assert_eq!(doc["status"], "failure", "{sink}: {doc}");
        assert_eq!(doc["service.name"], "shipping-test", "{sink}: {doc}");
        assert!(
            doc["@timestamp"].is_string() && doc["ecs.version"].is_string(),
            "{sink}: {doc}"
        );
        assert!(doc["event.duration"].as_u64().is_some(), "{sink}: {doc}");
    }
    // Logstash takes the refused document too; Elasticsearch refused it.
    wait_for("Logstash, the poison line", &ls_docs, |d| {
        d["message"] == "poison pill in the pipeline"
    });
    drop(guard);
    assert!(
        !es_docs
            .lock()
            .unwrap()
            .iter()
            .any(|d| d["message"].as_str().unwrap_or("").contains("poison")),
        "the fixture refused it"
    );

    // The refused document is in the local store, with the reason.
    let store = LogStore::open(hyperkit_obs::logs::store_dir(&data)).unwrap();
    let found = store
        .search(
            &Query::parse("\"Elasticsearch refused\" AND document_parsing_exception").unwrap(),
            &SearchOptions::default(),
        )
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].document.contains("poison pill in the pipeline"),
        "{}",
        found[0].document
    );
    // The failure itself is in the store too, found by its labels.
    let failure = store
        .search(
            &Query::parse("level:error AND chain:ethereum AND \"out of gas\"").unwrap(),
            &SearchOptions::default(),
        )
        .unwrap();
    assert_eq!(failure.len(), 1);
    let _ = std::fs::remove_dir_all(&data);
}
