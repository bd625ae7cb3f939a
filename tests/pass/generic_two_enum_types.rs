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

fn counter(family: &str, labels: &[(&str, &str)]) -> u64 {
    hyperkit_obs::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            let got = m.get_label();
            labels
                .iter()
                .all(|(k, v)| got.iter().any(|l| l.name() == *k && l.value() == *v))
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

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
