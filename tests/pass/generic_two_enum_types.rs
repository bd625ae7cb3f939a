//! A generic function called with two different enum label types records each
//! call under its own value.

use hyperkit_obs::{LabelValue, track_build};

#[derive(Clone, Copy, LabelValue)]
enum Chain {
    Ethereum,
}

#[derive(Clone, Copy, LabelValue)]
enum Rollup {
    Arbitrum,
}

#[track_build(chain)]
fn build<C: LabelValue>(chain: C) {}

use test_support::metrics::counter_total as counter;

fn main() {
    build(Chain::Ethereum);
    build(Rollup::Arbitrum);
    let builds = |chain| {
        counter(
            "hyperkit_builds_total",
            &[("chain", chain), ("status", "success")],
        )
    };
    assert_eq!(builds("ethereum"), 1);
    assert_eq!(builds("arbitrum"), 1);
}
