//! Under a glob import, parameters and locals named like the wrapper's own
//! variables are the user's: the generated code neither sees nor shadows them.

#![allow(non_snake_case)]

use hyperkit_obs::*;

#[track_build(chain = __hk_label0)]
fn build(__hk_label0: &str, __hk_out: u32) -> Result<u32, String> {
    let __hk_prepared = __hk_out + 1;
    let __hk_call = __hk_prepared * 2;
    let __hk_log = __hk_call + 1;
    Ok(__hk_log)
}

#[track_model(model, task = "hygiene")]
async fn complete(model: &str, __hk_call: &str) -> String {
    let __hk_out = format!("{model}:{__hk_call}");
    let finished = __hk_out.len();
    format!("{__hk_out}/{finished}")
}

// Names the glob brings in, redefined locally, do not reach generated code.
#[allow(dead_code)]
fn registry() {}
#[allow(dead_code)]
struct Status;

use test_support::metrics::counter_total as counter;

fn main() {
    assert_eq!(build("hygiene", 1), Ok(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(complete("small-1", "x")), "small-1:x/9");

    assert_eq!(
        counter(
            "hyperkit_builds_total",
            &[("chain", "hygiene"), ("status", "success")]
        ),
        1
    );
    assert_eq!(
        counter(
            "hyperkit_model_calls_total",
            &[("model", "small-1"), ("task", "hygiene")]
        ),
        1
    );
}
