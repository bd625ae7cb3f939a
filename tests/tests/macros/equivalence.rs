//! Property: an annotated function returns exactly what the same function
//! without the attribute returns, for every input.

use hyperkit_obs::{track_build, track_model, track_query};
use proptest::prelude::*;

macro_rules! twins {
    ($plain:ident, $tracked:ident, #[$attr:meta], fn($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        fn $plain($($arg: $ty),*) -> $ret $body
        #[$attr]
        fn $tracked($($arg: $ty),*) -> $ret $body
    };
}

twins!(parse_plain, parse_tracked, #[track_build(chain)], fn(chain: &str, input: String) -> Result<i64, String> {
    let n: i64 = input.trim().parse().map_err(|e| format!("{chain}: {e}"))?;
    if n < 0 {
        return Err("negative".into());
    }
    Ok(n.wrapping_mul(3))
});

twins!(split_plain, split_tracked, #[track_model(model = "m", task)], fn(task: &str, text: String, n: usize) -> Vec<String> {
    text.split(|c: char| c.is_whitespace()).take(n).map(|s| format!("{task}:{s}")).collect()
});

twins!(pick_plain, pick_tracked, #[track_query(operation = "pick")], fn(xs: Vec<u32>, i: usize) -> Option<u32> {
    xs.get(i).copied()
});

proptest! {
    #[test]
    fn build_returns_what_the_plain_function_returns(chain in "[a-z]{1,8}", input in ".{0,12}") {
        prop_assert_eq!(parse_tracked(&chain, input.clone()), parse_plain(&chain, input));
    }

    #[test]
    fn model_returns_what_the_plain_function_returns(task in "[a-z]{1,4}", text in ".{0,40}", n in 0usize..10) {
        prop_assert_eq!(split_tracked(&task, text.clone(), n), split_plain(&task, text, n));
    }

    #[test]
    fn query_returns_what_the_plain_function_returns(xs in proptest::collection::vec(any::<u32>(), 0..20), i in 0usize..25) {
        prop_assert_eq!(pick_tracked(xs.clone(), i), pick_plain(xs, i));
    }
}
