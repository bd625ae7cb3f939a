//! A label expression that yields a temporary (a method call, as the
//! `LabelValue` hint itself suggests) is evaluated once, before the body.

use std::cell::Cell;

use hyperkit_obs::track_build;

struct Spec {
    chain: &'static str,
    asked: Cell<u32>,
}

impl Spec {
    fn name(&self) -> String {
        self.asked.set(self.asked.get() + 1);
        self.chain.to_owned()
    }
}

#[track_build(chain = spec.name())]
fn build(spec: &Spec) -> u32 {
    spec.asked.get()
}

use test_support::metrics::counter_total as counter;

fn main() {
    let spec = Spec {
        chain: "scroll",
        asked: Cell::new(0),
    };
    assert_eq!(
        build(&spec),
        1,
        "the label is computed before the body runs"
    );
    assert_eq!(spec.asked.get(), 1, "and only once");
    assert_eq!(
        counter(
            "hyperkit_builds_total",
            &[("chain", "scroll"), ("status", "success")]
        ),
        1
    );
}
