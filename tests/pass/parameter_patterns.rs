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
