//! An `async fn`: the call is tracked from the first poll to completion, and
//! the in-flight gauge is up while the body runs.

use hyperkit_obs::track_build;

#[track_build(chain)]
async fn build(chain: &str, spec: &str) -> Result<usize, String> {
    let active = gauge("hyperkit_active_builds", &[("chain", chain)]);
    tokio::task::yield_now().await;
    if spec.is_empty() {
        return Err("empty spec".to_owned());
    }
    Ok(spec.len() + active as usize)
}

fn metric(family: &str, labels: &[(&str, &str)]) -> Vec<hyperkit_obs::prometheus::proto::Metric> {
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
        .cloned()
        .collect()
}

fn counter(family: &str, labels: &[(&str, &str)]) -> u64 {
    metric(family, labels)
        .iter()
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn gauge(family: &str, labels: &[(&str, &str)]) -> i64 {
    metric(family, labels)
        .iter()
        .map(|m| m.get_gauge().get_value() as i64)
        .sum()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // The body sees itself in flight.
    assert_eq!(rt.block_on(build("arbitrum", "abc")), Ok(4));
    assert_eq!(
        rt.block_on(build("arbitrum", "")),
        Err("empty spec".to_owned())
    );

    let builds = |status| {
        counter(
            "hyperkit_builds_total",
            &[("chain", "arbitrum"), ("status", status)],
        )
    };
    assert_eq!(builds("success"), 1);
    assert_eq!(builds("failure"), 1);
    assert_eq!(gauge("hyperkit_active_builds", &[("chain", "arbitrum")]), 0);
}
