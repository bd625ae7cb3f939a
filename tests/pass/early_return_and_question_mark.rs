//! `return` and `?` in the body end the body, not the tracking: each call is
//! recorded once, with the status of what it returned. Sync and async.

use hyperkit_obs::track_build;

#[track_build(chain)]
fn parse(chain: &str, input: &str) -> Result<u32, std::num::ParseIntError> {
    if input == "max" {
        return Ok(u32::MAX);
    }
    let n: u32 = input.parse()?;
    Ok(n)
}

#[track_build(chain)]
async fn parse_async(chain: &str, input: &str) -> Result<u32, std::num::ParseIntError> {
    if input == "max" {
        return Ok(u32::MAX);
    }
    let n: u32 = input.parse()?;
    Ok(n)
}

#[track_build(chain)]
fn first_even(chain: &str, values: &[u32]) -> Option<u32> {
    for v in values {
        if v % 2 == 0 {
            return Some(*v);
        }
    }
    None
}

use test_support::metrics::counter_total as counter;

fn main() {
    assert_eq!(parse("sync", "max"), Ok(u32::MAX));
    assert_eq!(parse("sync", "7"), Ok(7));
    assert!(parse("sync", "seven").is_err());

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(parse_async("async", "max")), Ok(u32::MAX));
    assert_eq!(rt.block_on(parse_async("async", "7")), Ok(7));
    assert!(rt.block_on(parse_async("async", "seven")).is_err());

    assert_eq!(first_even("loop", &[1, 4, 5]), Some(4));
    assert_eq!(first_even("loop", &[1]), None);

    let builds = |chain, status| {
        counter(
            "hyperkit_builds_total",
            &[("chain", chain), ("status", status)],
        )
    };
    for chain in ["sync", "async"] {
        assert_eq!(builds(chain, "success"), 2, "{chain}");
        assert_eq!(builds(chain, "failure"), 1, "{chain}");
    }
    // `None` is not an error: any non-`Result` return is a success.
    assert_eq!(builds("loop", "success"), 2);
}
