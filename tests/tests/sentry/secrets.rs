//! No secret and no prompt leaves the process: scrubbed from messages and
//! breadcrumbs before they are sent.

use hyperkit_obs::track_build;

use crate::{BEARER, Failure, PASSWORD, PROMPT, PUBLIC_KEY, TOKEN, flush, harness, serial, tag};

#[track_build(chain)]
fn leak(chain: &str, dsn: &str) -> Result<(), Failure> {
    Err(Failure(format!(
        "RPC refused: Authorization: Bearer {BEARER}; password={PASSWORD}; key {TOKEN}; sentry at {dsn}"
    )))
}

#[test]
fn no_secret_and_no_prompt_leaves_the_process() {
    let h = harness();
    let _serial = serial();
    let mark = h.capture.requests();

    tracing::info!(authorization = %format!("Bearer {BEARER}"), "calling the RPC");
    tracing::info!(prompt = PROMPT, tokens.input = 12, "sending the prompt");
    tracing::info!(
        db_password = PASSWORD,
        "connecting with password={PASSWORD}"
    );
    let _ = leak("arbitrum", &h.dsn);
    flush();

    let events = h.capture.events_since(mark);
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        tag(event, "chain"),
        Some("arbitrum"),
        "tags survive scrubbing"
    );
    let message = event.message.as_deref().unwrap_or_default();
    assert!(message.starts_with("RPC refused: "), "{message}");
    assert_eq!(
        message,
        "RPC refused: Authorization: [Filtered]; password=[Filtered]; key [Filtered]; sentry at [Filtered]"
    );
    assert_eq!(
        event.fingerprint.last().map(|m| m.as_ref()),
        Some(message),
        "the group is made from the scrubbed message, not the raw one"
    );
    let prompt_crumb = event
        .breadcrumbs
        .values
        .iter()
        .find(|b| b.message.as_deref() == Some("sending the prompt"))
        .expect("the line itself is kept");
    assert!(!prompt_crumb.data.contains_key("prompt"));
    assert_eq!(
        prompt_crumb.data["tokens.input"], 12,
        "counts are not prompts"
    );

    let state = h.capture.state();
    assert!(state.0.len() > mark);
    for received in &state.0 {
        let body = String::from_utf8_lossy(&received.body);
        for secret in [TOKEN, PASSWORD, BEARER, PROMPT, h.dsn.as_str(), PUBLIC_KEY] {
            assert!(
                !body.contains(secret),
                "{secret:?} was sent in a body: {body}"
            );
        }
        assert!(
            received.auth.contains(PUBLIC_KEY),
            "the key is sent only where Sentry requires it"
        );
    }
}
