//! A shorthand label may name a binding inside a parameter pattern.

use hyperkit_obs::track_build;

struct Spec {
    chain: String,
    size: u32,
}

#[track_build(chain)]
fn build(Spec { chain, size }: Spec, (_, factor): (u8, u32)) -> u32 {
    assert!(!chain.is_empty());
    size * factor
}

use test_support::metrics::counter_total as counter;

fn main() {
    assert_eq!(
        build(
            Spec {
                chain: "gnosis".to_owned(),
                size: 3
            },
            (0, 2)
        ),
        6
    );
    assert_eq!(
        counter(
            "hyperkit_builds_total",
            &[("chain", "gnosis"), ("status", "success")]
        ),
        1
    );
}
