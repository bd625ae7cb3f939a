//! The three ways to give a label: a parameter name, a literal, and an
//! expression over the parameters.

use hyperkit_obs::{track_build, track_model};

struct Spec {
    chain: &'static str,
}

struct Request {
    model: String,
    prompt: String,
}

#[track_build(chain)]
fn shorthand(chain: &str) {}

#[track_build(chain = "literal-chain")]
fn literal(_spec: &Spec) {}

#[track_build(chain = spec.chain)]
fn expression(spec: &Spec) -> &'static str {
    spec.chain
}

// The label expression borrows a parameter that the body then moves.
#[track_model(model = request.model, task = "codegen")]
fn mixed(request: Request) -> usize {
    let Request { prompt, .. } = request;
    prompt.len()
}

use test_support::metrics::counter_total as counter;

fn main() {
    shorthand("shorthand-chain");
    literal(&Spec { chain: "unused" });
    assert_eq!(
        expression(&Spec {
            chain: "expression-chain"
        }),
        "expression-chain"
    );
    assert_eq!(
        mixed(Request {
            model: "small-1".to_owned(),
            prompt: "abcd".to_owned()
        }),
        4
    );

    let builds = |chain| {
        counter(
            "hyperkit_builds_total",
            &[("chain", chain), ("status", "success")],
        )
    };
    assert_eq!(builds("shorthand-chain"), 1);
    assert_eq!(builds("literal-chain"), 1);
    assert_eq!(builds("expression-chain"), 1);
    assert_eq!(builds("unused"), 0);
    assert_eq!(
        counter(
            "hyperkit_model_calls_total",
            &[
                ("model", "small-1"),
                ("task", "codegen"),
                ("status", "success")
            ]
        ),
        1
    );
}
