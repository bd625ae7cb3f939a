//! `provider` on `#[track_model]`: a literal, a parameter or an expression,
//! like the labels, reaching the call's sinks and never the metrics'
//! label sets.

use std::sync::{Arc, Mutex};

use hyperkit_obs::calls::{self, CallSink, FinishedCall};
use hyperkit_obs::track_model;

struct Request {
    provider: String,
}

#[track_model(model, task = "codegen", provider = "openai")]
fn literal(model: &str) -> usize {
    model.len()
}

#[track_model(model, task = "codegen", provider)]
async fn parameter(model: &str, provider: &str) -> String {
    format!("{model} by {provider}")
}

#[track_model(provider = request.provider, model = "small-1", task = "review")]
fn expression(request: &Request) -> Result<(), String> {
    let _ = &request.provider;
    Ok(())
}

#[derive(Default)]
struct Providers(Mutex<Vec<Option<&'static str>>>);

impl CallSink for Providers {
    fn on_call(&self, call: &FinishedCall<'_>) {
        self.0.lock().unwrap().push(call.provider);
    }
}

fn main() {
    let seen = Arc::new(Providers::default());
    let _registration = calls::register(Arc::clone(&seen));
    assert_eq!(literal("gpt-4o"), 6);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let answer = rt.block_on(parameter("claude-sonnet", "anthropic"));
    assert_eq!(answer, "claude-sonnet by anthropic");
    expression(&Request {
        provider: "meta".into(),
    })
    .unwrap();
    assert_eq!(
        *seen.0.lock().unwrap(),
        [Some("openai"), Some("anthropic"), Some("meta")]
    );
    let labels = test_support::metrics::find(
        "hyperkit_model_calls_total",
        &[("model", "gpt-4o"), ("task", "codegen"), ("status", "success")],
    );
    assert!(labels.is_some(), "the label set is model and task only");
}

