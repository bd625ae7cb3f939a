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

use test_support::metrics::counter_total as counter;

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
