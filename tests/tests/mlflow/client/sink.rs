//! The background sinks' common specification (`test_support::sink`) run
//! against the MLflow exporter: one tracked model call is one item, and it
//! has arrived when the fixture holds its run, finished, tagged with its
//! call id. The fixture goes down and comes back on the same address with
//! its store, as a tracking server restarted over its database does.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hyperkit_obs::export::SinkStatus;
use hyperkit_obs::mlflow::{self, CALL_ID_TAG, MlflowGuard};
use hyperkit_obs::model::current_call_id;
use hyperkit_obs::{ModelOutput, track_model};
use test_support::sink::{SinkUnderTest, check};

use super::config;
use super::fixture::{Down, Fixture, StoredRun};

const CAPACITY: usize = 60;
const DEADLINE: Duration = Duration::from_secs(30);

struct Answer {
    call: String,
}

impl ModelOutput for Answer {
    fn input_tokens(&self) -> Option<u64> {
        Some(3)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(5)
    }
}

#[track_model(model = "spec-model", task = "sink-spec")]
fn ask() -> Answer {
    let call = current_call_id().expect("a tracked call has an id");
    Answer {
        call: call.to_string(),
    }
}

enum Server {
    Up(Fixture),
    Down(Down),
    Gone,
}

struct Mlflow {
    server: Server,
    /// Item id by call id.
    items: HashMap<String, u64>,
    guard: Option<MlflowGuard>,
}

impl SinkUnderTest for Mlflow {
    fn send(&mut self, id: u64) {
        self.items.insert(ask().call, id);
    }

    fn arrived(&self) -> BTreeMap<u64, usize> {
        let runs: Vec<StoredRun> = match &self.server {
            Server::Up(f) => f.state().runs.clone(),
            Server::Down(d) => d.state().runs.clone(),
            Server::Gone => Vec::new(),
        };
        let mut counts = BTreeMap::new();
        for run in runs.iter().filter(|r| r.status == "FINISHED") {
            if let Some(id) = run.tag(CALL_ID_TAG).and_then(|c| self.items.get(c)) {
                *counts.entry(*id).or_default() += 1;
            }
        }
        counts
    }

    fn status(&self) -> SinkStatus {
        mlflow::status().expect("the exporter runs")
    }

    fn take_down(&mut self) {
        if let Server::Up(f) = std::mem::replace(&mut self.server, Server::Gone) {
            self.server = Server::Down(f.stop());
        }
    }

    fn bring_back(&mut self) {
        if let Server::Down(d) = std::mem::replace(&mut self.server, Server::Gone) {
            self.server = Server::Up(d.start());
        }
    }

    fn drop_guard(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.shutdown(DEADLINE);
        }
    }
}

#[test]
fn the_mlflow_exporter_meets_the_sink_specification() {
    let _one = test_support::mlflow::serial();
    let fixture = Fixture::start();
    let mut c = config(&fixture, &[("MLFLOW_EXPERIMENT_NAME", "sink spec")]);
    c.queue_capacity = CAPACITY;
    c.retry.max_retries = 1;
    c.retry.timeout = Duration::from_secs(2);
    let guard = mlflow::start(&c).unwrap();
    check(
        "mlflow",
        CAPACITY,
        DEADLINE,
        &mut Mlflow {
            server: Server::Up(fixture),
            items: HashMap::new(),
            guard: Some(guard),
        },
    );
}
