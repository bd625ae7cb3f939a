//! Delivery: each document once, retried on the answers the bulk API marks
//! retryable, rejected with its reason otherwise, in order; a batch too
//! large split; a hanging server never blocking the caller.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyperkit_obs::logs::Document;
use hyperkit_obs::logs::elastic as elasticsearch;
use serde_json::{Value, json};
use test_support::fixture::Request;

use super::{
    Bulk, DAY1, DAY2, Fixture, Reply, config, default_other, delivered_counts, doc, dropped_metric,
    ship,
};

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
            test_support::wait::wait_for("a hanging bulk request", Duration::from_secs(5), || {
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
