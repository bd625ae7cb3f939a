//! The background sinks' common specification (`test_support::sink`) run
//! against the Sentry transport (`hyperkit_obs::sentry::transport_factory`)
//! of a Sentry client of its own, sending to a capture server of its own
//! (project 77) that goes down and comes back on the same address. One
//! event is one item; it has arrived when Sentry's parser reads it from an
//! envelope the capture server accepted.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyperkit_obs::export::{SinkStatus, statuses};
use sentry::protocol::Event;
use test_support::fixture::sentry::Capture;
use test_support::sink::{SinkUnderTest, check};

use super::{PUBLIC_KEY, serial};

const PROJECT: u64 = 77;

struct Sentry {
    capture: Option<Capture>,
    addr: std::net::SocketAddr,
    /// Events read from the capture servers taken down so far.
    earlier: Vec<String>,
    client: Option<Arc<sentry::Client>>,
    target: String,
}

fn messages(capture: &Capture) -> Vec<String> {
    capture
        .events_since(0)
        .into_iter()
        .filter_map(|e| e.message)
        .collect()
}

impl SinkUnderTest for Sentry {
    fn send(&mut self, id: u64) {
        let event = Event {
            message: Some(format!("item {id}")),
            level: sentry::Level::Error,
            ..Event::default()
        };
        if let Some(client) = &self.client {
            client.capture_event(event, None);
        }
    }

    fn arrived(&self) -> BTreeMap<u64, usize> {
        let now = self.capture.as_ref().map(messages).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for message in self.earlier.iter().chain(&now) {
            if let Some(id) = message.strip_prefix("item ").and_then(|i| i.parse().ok()) {
                *counts.entry(id).or_default() += 1;
            }
        }
        counts
    }

    fn status(&self) -> SinkStatus {
        statuses()
            .into_iter()
            .find(|s| s.target == self.target)
            .expect("the transport's sink runs")
    }

    fn take_down(&mut self) {
        if let Some(capture) = self.capture.take() {
            self.earlier.extend(messages(&capture));
        }
    }

    fn bring_back(&mut self) {
        self.capture = Some(Capture::start_on(self.addr, PROJECT, PUBLIC_KEY));
    }

    fn drop_guard(&mut self) {
        if let Some(client) = self.client.take() {
            client.close(Some(hyperkit_obs::sentry::FLUSH_DEADLINE));
        }
    }
}

#[test]
fn the_sentry_transport_meets_the_sink_specification() {
    let _one = serial();
    let capture = Capture::start(PROJECT, PUBLIC_KEY);
    let addr = capture.addr();
    let mut options = sentry::ClientOptions::new();
    options.dsn = Some(
        format!("http://{PUBLIC_KEY}@{addr}/{PROJECT}")
            .parse()
            .unwrap(),
    );
    options.transport = Some(hyperkit_obs::sentry::transport_factory().unwrap());
    let client = Arc::new(sentry::Client::from_config(options));
    check(
        "sentry",
        // The transport's queue; its guard drops within the flush deadline.
        64,
        hyperkit_obs::sentry::FLUSH_DEADLINE,
        &mut Sentry {
            capture: Some(capture),
            addr,
            earlier: Vec::new(),
            client: Some(client),
            target: format!("http://{addr}/api/{PROJECT}/envelope/"),
        },
    );
}
