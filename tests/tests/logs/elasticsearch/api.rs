//! The rest of the API: the index template installed (and retried without
//! holding the logs back), credentials sent and never shown, search.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperkit_obs::Secret;
use hyperkit_obs::logs::Document;
use hyperkit_obs::logs::elastic::{self as elasticsearch, ElasticsearchAuth};
use serde_json::{Value, json};
use test_support::fixture::Request;
use test_support::wait::wait_for;

use super::{DAY1, DAY2, Fixture, Reply, config, default_other, doc};

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
    wait_for("the first bulk", Duration::from_secs(5), || {
        shipper.status().delivered == 1
    });
    assert!(shipper.status().warning.is_some());
    wait_for("the template", Duration::from_secs(5), || {
        shipper.status().warning.is_none()
    });
    let requests = fixture.requests();
    let puts: Vec<&Request> = requests
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
    let requests = fixture.requests();
    let r = requests.last().unwrap();
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
