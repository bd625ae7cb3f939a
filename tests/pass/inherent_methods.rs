//! Inherent methods taking `&self`, `&mut self` and `self`, with labels from
//! the receiver's fields.

use hyperkit_obs::track_build;

struct Builder {
    chain: String,
    built: u32,
}

impl Builder {
    #[track_build(chain = self.chain)]
    fn peek(&self) -> u32 {
        self.built
    }

    #[track_build(chain = self.chain)]
    fn build(&mut self) -> u32 {
        self.built += 1;
        self.built
    }

    #[track_build(chain = self.chain)]
    fn finish(self) -> String {
        format!("{} x{}", self.chain, self.built)
    }
}

use test_support::metrics::counter_total as counter;

fn main() {
    let mut builder = Builder {
        chain: "solana".to_owned(),
        built: 0,
    };
    assert_eq!(builder.build(), 1);
    assert_eq!(builder.build(), 2);
    assert_eq!(builder.peek(), 2);
    assert_eq!(builder.finish(), "solana x2");

    assert_eq!(
        counter(
            "hyperkit_builds_total",
            &[("chain", "solana"), ("status", "success")]
        ),
        4
    );
}
