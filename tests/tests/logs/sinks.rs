//! The background sinks' common specification (`test_support::sink`) run
//! against the Elasticsearch and Logstash shippers, each through its
//! protocol fixture (the `_bulk` API; Logstash's `tcp` input with the
//! `json_lines` codec), brought down and back on the same address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyperkit_obs::export::SinkStatus;
use hyperkit_obs::logs::elastic::{self as elasticsearch, ElasticsearchConfig};
use hyperkit_obs::logs::logstash::{self, LogstashConfig};
use hyperkit_obs::logs::{Document, ShipperGuard, ShipperHandle};
use test_support::fixture::elasticsearch::{Answered, Fixture, default_other};
use test_support::fixture::logstash::{Listener, Received};
use test_support::sink::{SinkUnderTest, check};

const CAPACITY: usize = 100;
const DEADLINE: Duration = Duration::from_secs(5);

fn doc(id: u64) -> Document {
    let bytes: Arc<[u8]> = format!(
        r#"{{"@timestamp":"2026-11-27T05:00:00.000Z","log.level":"INFO","message":"line {id}","id":{id}}}"#
    )
    .into_bytes()
    .into();
    Document::new(bytes, 1_795_780_800_000)
}

/// Every bulk item answered `201`.
fn bulk_fixture(addr: SocketAddr) -> Fixture {
    Fixture::start_on(
        addr,
        Arc::new(|_, _, _| 201),
        Arc::new(|_, _| None),
        Arc::new(default_other),
    )
}

struct Elasticsearch {
    /// What every fixture this test started answered, earlier ones first.
    answered: Vec<Answered>,
    server: Option<Fixture>,
    addr: SocketAddr,
    guard: Option<ShipperGuard>,
    shipper: ShipperHandle,
}

impl SinkUnderTest for Elasticsearch {
    fn send(&mut self, id: u64) {
        self.shipper.send(doc(id));
    }

    fn arrived(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        let now = self.server.as_ref().map(Fixture::answered);
        for (_, id, status) in self.answered.iter().chain(now.iter().flatten()) {
            if (200..300).contains(status) {
                *counts.entry(*id).or_default() += 1;
            }
        }
        counts
    }

    fn status(&self) -> SinkStatus {
        self.shipper.status()
    }

    fn take_down(&mut self) {
        if let Some(server) = self.server.take() {
            self.answered.extend(server.answered());
        }
    }

    fn bring_back(&mut self) {
        self.server = Some(bulk_fixture(self.addr));
    }

    fn drop_guard(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.shutdown(DEADLINE);
        }
    }
}

#[test]
fn the_elasticsearch_shipper_meets_the_sink_specification() {
    let server = bulk_fixture(SocketAddr::from(([127, 0, 0, 1], 0)));
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut config = ElasticsearchConfig::new(&server.url);
    config.flush_interval = Duration::from_millis(10);
    config.retry_initial = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(100);
    config.timeout = Duration::from_secs(5);
    config.install_template = false;
    config.queue_capacity = CAPACITY;
    let guard = elasticsearch::start(&config).unwrap();
    let shipper = guard.handle();
    check(
        "elasticsearch",
        CAPACITY,
        DEADLINE,
        &mut Elasticsearch {
            answered: Vec::new(),
            server: Some(server),
            addr,
            guard: Some(guard),
            shipper,
        },
    );
}

struct Logstash {
    received: Received,
    listener: Option<Listener>,
    /// Connections numbered so far (each listener numbers its own from
    /// here).
    connections: usize,
    addr: SocketAddr,
    guard: Option<ShipperGuard>,
    shipper: ShipperHandle,
}

impl SinkUnderTest for Logstash {
    fn send(&mut self, id: u64) {
        self.shipper.send(doc(id));
    }

    fn arrived(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for (_, line) in self.received.lock().unwrap().iter() {
            let value: serde_json::Value =
                serde_json::from_str(line).expect("every line Logstash reads is JSON");
            *counts.entry(value["id"].as_u64().unwrap()).or_default() += 1;
        }
        counts
    }

    fn status(&self) -> SinkStatus {
        self.shipper.status()
    }

    fn take_down(&mut self) {
        // Gone between lines (nothing written is left unread): what a
        // Logstash that crashes with unread bytes loses is the restart test
        // of `logstash`.
        self.listener = None;
        self.connections += 1_000;
    }

    fn bring_back(&mut self) {
        let (listener, _) = Listener::start(self.addr, self.received.clone(), self.connections);
        self.listener = Some(listener);
    }

    fn drop_guard(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.shutdown(DEADLINE);
        }
    }

    fn at_least_once(&self) -> bool {
        true
    }
}

#[test]
fn the_logstash_shipper_meets_the_sink_specification() {
    let received: Received = Arc::default();
    let (listener, addr) = Listener::start("127.0.0.1:0".parse().unwrap(), received.clone(), 0);
    let mut config = LogstashConfig::new(addr.to_string());
    config.queue_capacity = CAPACITY;
    config.retry_initial = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(100);
    let guard = logstash::start(&config).unwrap();
    let shipper = guard.handle();
    check(
        "logstash",
        CAPACITY,
        DEADLINE,
        &mut Logstash {
            received,
            listener: Some(listener),
            connections: 0,
            addr,
            guard: Some(guard),
            shipper,
        },
    );
}
