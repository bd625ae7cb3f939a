//! The background sinks' common specification (`test_support::sink`) run
//! against the OTLP span exporter, sending to `otlp`'s OTLP/HTTP fixture
//! (a fixture: no OpenTelemetry Collector can be installed here; it decodes
//! what arrives with the OpenTelemetry protobuf definitions) that goes down
//! and comes back on the same address. One tracked call is one item: it
//! runs under a remote parent whose trace id is the item's id, and has
//! arrived when a span of that trace is in a request the fixture accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperkit_obs::export::SinkStatus;
use hyperkit_obs::trace::{self, SpanSinkGuard};
use hyperkit_obs::track_query;
use test_support::fixture::HttpFixture;
use test_support::sink::{SinkUnderTest, check};

use super::otlp::{FixtureState, exporter, receive};

/// The exporter's queue (`OTEL_BSP_MAX_QUEUE_SIZE`).
const CAPACITY: usize = 64;

/// What the guard's drop allows itself (the README's "within 5 s").
const DROP_DEADLINE: Duration = Duration::from_secs(5);

#[track_query(operation = "spec")]
fn spec_item() {}

struct Otlp {
    state: Arc<Mutex<FixtureState>>,
    server: Option<HttpFixture>,
    addr: SocketAddr,
    guard: Option<SpanSinkGuard>,
}

fn serve(state: &Arc<Mutex<FixtureState>>, addr: Option<SocketAddr>) -> HttpFixture {
    let state = Arc::clone(state);
    let handler = move |request: &test_support::fixture::Request| receive(&state, request).into();
    match addr {
        Some(addr) => HttpFixture::start_on(addr, handler),
        None => HttpFixture::start(handler),
    }
}

impl SinkUnderTest for Otlp {
    fn send(&mut self, id: u64) {
        // Item `id` is trace `id + 1` (a trace id of zeros is invalid).
        let parent = trace::parse_traceparent(&format!(
            "00-{:032x}-00f067aa0ba902b7-01",
            u128::from(id) + 1
        ))
        .unwrap();
        let _in_request = parent.attach();
        spec_item();
    }

    fn arrived(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        let state = self.state.lock().unwrap();
        let spans = state
            .received
            .iter()
            .flat_map(|(r, _)| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter());
        for span in spans {
            let Ok(bytes) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
                continue;
            };
            let Some(id) = u128::from_be_bytes(bytes).checked_sub(1) else {
                continue;
            };
            if let Ok(id) = u64::try_from(id) {
                *counts.entry(id).or_default() += 1;
            }
        }
        counts
    }

    fn status(&self) -> SinkStatus {
        self.guard
            .as_ref()
            .and_then(SpanSinkGuard::status)
            .expect("the exporter runs")
    }

    fn take_down(&mut self) {
        self.server = None;
    }

    fn bring_back(&mut self) {
        self.server = Some(serve(&self.state, Some(self.addr)));
    }

    fn drop_guard(&mut self) {
        self.guard = None;
    }
}

#[test]
fn the_otlp_exporter_meets_the_sink_specification() {
    let _turn = super::sampling_alone();
    let state = Arc::new(Mutex::new(FixtureState::default()));
    let server = serve(&state, None);
    let addr = server.addr();
    let capacity = CAPACITY.to_string();
    let guard = exporter(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &server.url()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", &capacity),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    trace::enable();
    check(
        "otlp",
        CAPACITY,
        DROP_DEADLINE,
        &mut Otlp {
            state,
            server: Some(server),
            addr,
            guard: Some(guard),
        },
    );
}
