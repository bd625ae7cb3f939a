//! The Logstash shipper against a protocol fixture: a TCP listener on
//! 127.0.0.1 that reads newline-delimited JSON as Logstash's `tcp` input
//! with the `json_lines` codec does
//! (<https://www.elastic.co/guide/en/logstash/current/plugins-inputs-tcp.html>,
//! <https://www.elastic.co/guide/en/logstash/current/plugins-codecs-json_lines.html>:
//! one JSON document per line, lines end in `\n`;
//! `test_support::fixture::logstash`). No Logstash runs here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyperkit_obs::logs::Document;
use hyperkit_obs::logs::logstash::{self, LogstashConfig};
use test_support::fixture::logstash::{Listener, Received};
use test_support::wait::wait_for;

fn doc(id: usize) -> Arc<[u8]> {
    format!(
        r#"{{"@timestamp":"2026-11-27T05:00:00.000Z","log.level":"INFO","message":"line {id}","id":{id}}}"#
    )
    .into_bytes()
    .into()
}

#[test]
fn every_line_arrives_as_json_across_a_logstash_restart_on_the_same_port() {
    let received: Received = Arc::default();
    let (listener, addr) = Listener::start("127.0.0.1:0".parse().unwrap(), received.clone(), 0);
    let mut config = LogstashConfig::new(addr.to_string());
    config.retry_initial = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(100);
    config.timeout = Duration::from_secs(2);
    let guard = logstash::start(&config).unwrap();
    let shipper = guard.handle();

    const TOTAL: usize = 3000;
    let count = || received.lock().unwrap().len();
    let mut listener = Some(listener);
    for id in 0..TOTAL {
        assert!(shipper.send(Document::new(doc(id), 0)));
        if id % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if id == 1000 {
            // Stop Logstash mid-stream, while lines are in flight.
            wait_for("the first lines", Duration::from_secs(10), || count() > 500);
            listener.take().unwrap().crash();
        }
        if id == 1500 {
            let (l, _) = Listener::start(addr, received.clone(), 1);
            listener = Some(l);
        }
    }
    assert!(shipper.flush(Duration::from_secs(10)), "flush timed out");
    let mut copies: HashMap<u64, Vec<usize>> = HashMap::new();
    wait_for("every line", Duration::from_secs(10), || {
        copies.clear();
        for (conn, line) in received.lock().unwrap().iter() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            copies
                .entry(v["id"].as_u64().unwrap())
                .or_default()
                .push(*conn);
        }
        copies.len() == TOTAL
    });
    for (id, conns) in &copies {
        // A line arrives twice only when resent after the reconnect: once
        // on the first connection, once on the second.
        assert!(
            conns.len() == 1 || (conns.len() == 2 && conns[0] == 0 && conns[1] == 1),
            "line {id} arrived on connections {conns:?}"
        );
    }
    let status = shipper.status();
    assert_eq!(status.delivered, TOTAL as u64);
    assert_eq!(status.dropped, 0);
    assert!(
        received.lock().unwrap().iter().any(|(conn, _)| *conn == 1),
        "the shipper never reconnected"
    );
    guard.shutdown(Duration::from_secs(2));
}

#[test]
fn a_logstash_that_is_down_never_blocks_send_and_a_full_queue_counts_drops_exactly() {
    // A port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = LogstashConfig::new(addr.to_string());
    config.queue_capacity = 100;
    config.retry_initial = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(50);
    let guard = logstash::start(&config).unwrap();
    let shipper = guard.handle();
    let mut slowest = Duration::ZERO;
    for id in 0..1000 {
        let started = Instant::now();
        shipper.send(Document::new(doc(id), 0));
        slowest = slowest.max(started.elapsed());
    }
    // A bound with margin, not a speed: nothing listens, so a send that
    // waited for room would wait forever; 250 ms leaves room for a
    // descheduled thread on a loaded machine.
    assert!(
        slowest < Duration::from_millis(250),
        "send took {slowest:?}"
    );
    let status = shipper.status();
    assert_eq!(status.queued, 100);
    assert_eq!(status.dropped, 900);
    // The readiness check of the sink reports the state (whichever
    // Logstash shipper of this test binary registered it last).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let readiness = rt.block_on(hyperkit_obs::health::readiness(
        Duration::from_secs(1),
        Duration::ZERO,
    ));
    let check = &readiness.checks["logstash"];
    assert!(!check.required);
    assert!(
        check.detail.contains("queued") || check.detail.contains("stopped"),
        "{}",
        check.detail
    );
    let started = Instant::now();
    guard.shutdown(Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(shipper.status().dropped, 1000);
    assert_eq!(shipper.status().queued, 0);
}

/// A stand-in for the log layer: ships every event, its own included.
struct ShippingLayer {
    shipper: hyperkit_obs::logs::ShipperHandle,
    warnings: Arc<Mutex<Vec<String>>>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ShippingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target().starts_with(hyperkit_obs::export::LOG_TARGET) {
            self.warnings
                .lock()
                .unwrap()
                .push(format!("{} {}", meta.level(), meta.target()));
        }
        self.shipper.send(Document::new(doc(u64::MAX as usize), 0));
    }
}

#[test]
fn the_queue_full_warning_is_logged_once_and_does_not_recurse_through_the_layer() {
    use tracing_subscriber::layer::SubscriberExt;

    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = LogstashConfig::new(addr.to_string());
    config.queue_capacity = 10;
    let guard = logstash::start(&config).unwrap();
    let shipper = guard.handle();
    let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
    let subscriber = tracing_subscriber::registry().with(ShippingLayer {
        shipper: shipper.clone(),
        warnings: warnings.clone(),
    });
    tracing::subscriber::with_default(subscriber, || {
        for id in 0..110 {
            shipper.send(Document::new(doc(id), 0));
        }
    });
    assert_eq!(*warnings.lock().unwrap(), ["WARN hyperkit_obs::export"]);
    // 100 documents, and the warning itself, which found the queue full.
    assert_eq!(shipper.status().dropped, 101);
    guard.shutdown(Duration::from_millis(100));
}
