//! `level = "debug"` lowers the success event to DEBUG; a failure is still
//! logged at ERROR.

use std::sync::{Arc, Mutex};

use hyperkit_obs::track_query;
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[track_query(operation = "ping", level = "debug")]
fn ping(ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err("unreachable".to_owned())
    }
}

#[track_query(operation = "pong")]
fn pong() {}

/// Collects the level and message of every event.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Level, String)>>>);

impl<S: Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message.0));
    }
}

fn main() {
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    tracing::subscriber::with_default(subscriber, || {
        ping(true).unwrap();
        ping(false).unwrap_err();
        pong();
    });

    let events = events.0.lock().unwrap();
    assert_eq!(
        *events,
        [
            (Level::DEBUG, "ping succeeded".to_owned()),
            (Level::ERROR, "ping failed: unreachable".to_owned()),
            (Level::INFO, "pong succeeded".to_owned()),
        ]
    );
}
