//! A generic function with a where clause, called with an enum label and with
//! a string label.

use hyperkit_obs::{LabelValue, track_build};

#[derive(Clone, Copy, LabelValue)]
enum Chain {
    Ethereum,
}

#[track_build(chain)]
fn build<'a, C, S>(chain: C, sources: &'a [S]) -> Vec<&'a str>
where
    C: LabelValue,
    S: AsRef<str>,
{
    sources.iter().map(AsRef::as_ref).collect()
}

use test_support::metrics::counter_total as counter;

fn main() {
    let sources = vec!["a.sol".to_owned(), "b.sol".to_owned()];
    assert_eq!(build(Chain::Ethereum, &sources), ["a.sol", "b.sol"]);
    assert_eq!(build("polygon".to_owned(), &["c.sol"]), ["c.sol"]);

    let builds = |chain| {
        counter(
            "hyperkit_builds_total",
            &[("chain", chain), ("status", "success")],
        )
    };
    assert_eq!(builds("ethereum"), 1);
    assert_eq!(builds("polygon"), 1);
}
