//! Label sets are keyed exactly and label values cannot break the exposition
//! format or another series.

use std::sync::{Mutex, MutexGuard, PoisonError};

use hyperkit_obs::prometheus::{Encoder, TextEncoder};
use hyperkit_obs::{LabelValue, track_build, track_model};
use test_support::metrics::*;

#[track_model(model, task)]
fn call(model: &str, task: &str) -> u8 {
    0
}

fn calls(model: &str, task: &str) -> u64 {
    counter(
        "hyperkit_model_calls_total",
        &[("model", model), ("task", task), ("status", "success")],
    )
}

#[test]
fn tuples_that_concatenate_alike_are_separate_series() {
    // The prometheus crate's MetricVec hashes "ab"+"c" and "a"+"bc" alike.
    call("ab", "c");
    call("a", "bc");
    call("a", "bc");
    assert_eq!((calls("ab", "c"), calls("a", "bc")), (1, 2));
}

#[test]
fn adversarial_values_cannot_poison_another_series() {
    let victim = ("victim", "task");
    call(victim.0, victim.1);
    let attacks = [
        ("victim\",task=\"task", ""),
        ("victim", "task\"} 999\nhyperkit_x{a=\"b"),
        ("vic", "timtask"),
        ("victim\u{0}", "task"),
        ("victim\n", "task"),
    ];
    for (m, t) in attacks {
        call(m, t);
    }
    assert_eq!(calls(victim.0, victim.1), 1, "only the victim's own call");

    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&hyperkit_obs::registry().gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
        assert!(
            series.starts_with("hyperkit_") || series.starts_with("process_"),
            "{line:?}"
        );
        assert!(!series.contains('\u{0}'), "{line:?}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("hyperkit_x")),
        "the value stays inside its quotes: no injected series"
    );
}

#[track_build(chain)]
fn build(chain: String) {}

#[test]
fn long_and_control_values_are_sanitised() {
    build("x".repeat(1000));
    build("line\nbreak".to_owned());
    assert_eq!(
        builds(&"x".repeat(hyperkit_obs::MAX_LABEL_LEN), "success"),
        1
    );
    assert_eq!(builds("line_break", "success"), 1);
}

#[derive(Clone, Copy, LabelValue)]
enum Chain {
    Ethereum,
    #[label = "bsc"]
    BnbSmart,
    PolygonZkEvm,
}

#[track_build(chain)]
fn build_enum(chain: Chain) {}

/// The tests that build on `Chain::Ethereum` take turns: one counts what
/// its own calls added, and the other's call must not land in between.
fn ethereum_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn enum_labels_use_snake_case_or_their_rename() {
    let _turn = ethereum_turn();
    // Counted from what is there already: the next test builds on Ethereum
    // too, and may run first.
    let before = ["ethereum", "bsc", "polygon_zk_evm"].map(|c| builds(c, "success"));
    build_enum(Chain::Ethereum);
    build_enum(Chain::BnbSmart);
    build_enum(Chain::BnbSmart);
    build_enum(Chain::PolygonZkEvm);
    assert_eq!(builds("ethereum", "success") - before[0], 1);
    assert_eq!(builds("bsc", "success") - before[1], 2);
    assert_eq!(builds("polygon_zk_evm", "success") - before[2], 1);
}

#[test]
fn every_status_series_exists_from_the_first_call() {
    let _turn = ethereum_turn();
    build_enum(Chain::Ethereum);
    for status in ["success", "failure", "panic", "cancelled"] {
        assert!(
            find(
                "hyperkit_builds_total",
                &[("chain", "ethereum"), ("status", status)]
            )
            .is_some(),
            "status {status} is exported (as 0) so rate() works from the start"
        );
    }
}

struct Spec {
    chain: &'static str,
}

#[track_build(chain = spec.chain)]
fn build_spec(spec: Spec) -> &'static str {
    spec.chain
}

#[test]
fn expression_labels_are_evaluated_before_the_body_moves_the_parameter() {
    assert_eq!(build_spec(Spec { chain: "from-spec" }), "from-spec");
    assert_eq!(builds("from-spec", "success"), 1);
}

#[test]
fn integer_and_bool_labels() {
    #[track_build(chain)]
    fn by_id(chain: u64) {}
    #[track_model(model = "m-bool", task)]
    fn flag(task: bool) {}
    by_id(56);
    flag(true);
    assert_eq!(builds("56", "success"), 1);
    assert_eq!(calls("m-bool", "true"), 1);
}
