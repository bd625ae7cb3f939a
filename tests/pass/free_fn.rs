//! A free function: `Ok` counts as success, `Err` as failure.

use hyperkit_obs::track_build;

#[track_build(chain)]
fn build(chain: &str, size: u32) -> Result<u32, String> {
    if size == 0 {
        Err("nothing to build".to_owned())
    } else {
        Ok(size * 2)
    }
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
    assert_eq!(build("ethereum", 21), Ok(42));
    assert_eq!(build("ethereum", 0), Err("nothing to build".to_owned()));

    let builds = |status| {
        counter(
            "hyperkit_builds_total",
            &[("chain", "ethereum"), ("status", status)],
        )
    };
    assert_eq!(builds("success"), 1);
    assert_eq!(builds("failure"), 1);
}
