//! What a failed or panicking tracked call becomes in Sentry: one event
//! tagged with its labels, grouped by function and error, with its stack
//! trace, and the recent log lines as breadcrumbs.

use std::panic::AssertUnwindSafe;

use hyperkit_obs::{track_build, track_model, track_query};
use sentry_types::protocol::v7::Level;

use crate::{Failure, PROJECT, flush, harness, serial, tag};

#[track_build(chain)]
fn deploy_contract(chain: &str) -> Result<(), Failure> {
    Err(Failure("out of gas at block 17".to_owned()))
}

#[track_build(chain)]
fn verify(chain: &str, attempts: u32) -> Result<(), Failure> {
    Err(Failure(format!(
        "verification on {chain} failed after {attempts} attempts"
    )))
}

#[track_build(chain)]
fn publish(chain: &str, attempts: u32) -> Result<(), Failure> {
    Err(Failure(format!(
        "verification on {chain} failed after {attempts} attempts"
    )))
}

#[track_build(chain)]
fn prepare(chain: &str) -> Result<u32, Failure> {
    Ok(1)
}

#[track_build(chain)]
fn explode(chain: &str) {
    panic!("boom: nonce too low");
}

#[track_model(model, task = "codegen")]
fn complete(model: &str, _prompt: &str) -> Result<String, Failure> {
    Err(Failure("context window exceeded".to_owned()))
}

#[track_query(operation = "insert_build", db = "postgres")]
fn insert_build(_id: u64) -> Result<(), Failure> {
    Err(Failure("duplicate key".to_owned()))
}

#[test]
fn a_failed_tracked_build_is_one_event_tagged_with_its_labels() {
    let h = harness();
    let _serial = serial();
    let mark = h.capture.requests();

    let _ = deploy_contract("ethereum");
    flush();

    let events = h.capture.events_since(mark);
    assert_eq!(events.len(), 1, "one event per failed call");
    let event = &events[0];
    assert_eq!(event.message.as_deref(), Some("out of gas at block 17"));
    assert_eq!(event.level, Level::Error);
    assert_eq!(tag(event, "chain"), Some("ethereum"));
    assert_eq!(tag(event, "status"), Some("failure"));
    assert_eq!(tag(event, "function"), Some("deploy_contract"));
    assert_eq!(event.environment.as_deref(), Some("ci"));
    assert_eq!(event.release.as_deref(), Some("tests@0.0.0"));
    let received = &h.capture.state().0[mark];
    assert_eq!(received.path, format!("/api/{PROJECT}/envelope/"));
    assert!(received.auth.contains("sentry_key=publickey"));
}

#[test]
fn model_and_query_failures_carry_their_own_labels() {
    let h = harness();
    let _serial = serial();
    let mark = h.capture.requests();

    let _ = complete("gpt-x", "say hi");
    let _ = insert_build(7);
    flush();

    let events = h.capture.events_since(mark);
    assert_eq!(events.len(), 2, "one event per failed call");
    let model = &events[0];
    assert_eq!(model.message.as_deref(), Some("context window exceeded"));
    assert_eq!(tag(model, "model"), Some("gpt-x"));
    assert_eq!(tag(model, "task"), Some("codegen"));
    assert_eq!(tag(model, "status"), Some("failure"));
    assert_eq!(tag(model, "function"), Some("complete"));
    let query = &events[1];
    assert_eq!(query.message.as_deref(), Some("duplicate key"));
    assert_eq!(tag(query, "operation"), Some("insert_build"));
    assert_eq!(tag(query, "db"), Some("postgres"));
    assert_eq!(tag(query, "status"), Some("failure"));
    assert_eq!(tag(query, "function"), Some("insert_build"));
}

#[test]
fn the_same_error_from_the_same_function_groups_together_whatever_the_labels() {
    let h = harness();
    let _serial = serial();
    let mark = h.capture.requests();

    let _ = verify("ethereum", 3);
    let _ = verify("solana", 5);
    let _ = publish("ethereum", 3);
    flush();

    let events = h.capture.events_since(mark);
    assert_eq!(events.len(), 3);
    let (eth, sol, other) = (&events[0], &events[1], &events[2]);
    assert_eq!(tag(eth, "chain"), Some("ethereum"));
    assert_eq!(tag(sol, "chain"), Some("solana"));
    assert_eq!(
        sol.message.as_deref(),
        Some("verification on solana failed after 5 attempts"),
        "the message stays the error's own text"
    );
    assert_ne!(
        eth.fingerprint.as_ref(),
        &[std::borrow::Cow::Borrowed("{{ default }}")][..]
    );
    assert_eq!(
        eth.fingerprint, sol.fingerprint,
        "same function, same error, other labels: one group"
    );
    assert_ne!(
        eth.fingerprint, other.fingerprint,
        "another function is another group"
    );
}

#[test]
fn a_panic_in_a_tracked_function_is_reported_once_with_its_stack_trace() {
    let h = harness();
    let _serial = serial();
    let mark = h.capture.requests();

    let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| explode("base")));
    assert!(panicked.is_err(), "the panic continues as before");
    flush();

    let events = h.capture.events_since(mark);
    assert_eq!(
        events.len(),
        1,
        "one report per panic, not one per integration"
    );
    let event = &events[0];
    let exception = &event.exception.values[0];
    assert_eq!(exception.ty, "panic");
    assert_eq!(exception.value.as_deref(), Some("boom: nonce too low"));
    let frames = &exception.stacktrace.as_ref().expect("a stack trace").frames;
    assert!(
        frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains("explode"))),
        "the stack trace reaches the panicking function"
    );
    assert_eq!(tag(event, "function"), Some("explode"));
    assert_eq!(tag(event, "chain"), Some("base"));
    assert_eq!(tag(event, "status"), Some("panic"));

    // The call's own "panicked" line is kept as a breadcrumb of what follows.
    let mark = h.capture.requests();
    let _ = deploy_contract("base");
    flush();
    let events = h.capture.events_since(mark);
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .breadcrumbs
            .values
            .iter()
            .any(|b| b.message.as_deref() == Some("explode panicked") && b.level == Level::Error)
    );
}

#[test]
fn breadcrumbs_are_the_recent_info_and_warn_log_lines() {
    let h = harness();
    let _serial = serial();
    let mark = h.capture.requests();

    tracing::info!(step = 1, "fetching the chain spec");
    tracing::debug!("too chatty to keep");
    let _ = prepare("polygon");
    tracing::warn!("retrying the RPC");
    let _ = deploy_contract("polygon");
    flush();

    let events = h.capture.events_since(mark);
    assert_eq!(events.len(), 1, "log lines are breadcrumbs, not events");
    let crumbs: Vec<(&str, Level)> = events[0]
        .breadcrumbs
        .values
        .iter()
        .filter_map(|b| Some((b.message.as_deref()?, b.level)))
        .collect();
    let recent: Vec<_> = crumbs.iter().rev().take(3).rev().cloned().collect();
    assert_eq!(
        recent,
        [
            ("fetching the chain spec", Level::Info),
            ("prepare succeeded", Level::Info),
            ("retrying the RPC", Level::Warning),
        ]
    );
    assert!(!crumbs.iter().any(|(m, _)| *m == "too chatty to keep"));
}
