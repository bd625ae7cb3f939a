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
