//! The text lines' specification: when colour is allowed, and what a line
//! reads like for calls that succeed, fail or are cancelled, with spans,
//! fields and hostile values.

use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::logs::testing::Lines;

#[test]
fn colour_needs_a_terminal_no_no_color_and_a_terminal_that_is_not_dumb() {
    let os = |s: &'static str| Some(std::ffi::OsStr::new(s));
    assert!(colour_allowed_by(true, None, os("xterm-256color")));
    assert!(colour_allowed_by(true, None, None));
    assert!(
        colour_allowed_by(true, os(""), os("xterm")),
        "empty NO_COLOR"
    );
    assert!(!colour_allowed_by(false, None, os("xterm")));
    assert!(!colour_allowed_by(true, os("1"), os("xterm")));
    assert!(!colour_allowed_by(true, None, os("dumb")));
}

/// The lines `emit` logs, each without its timestamp (checked to be
/// there).
fn lines_of(colour: bool, emit: impl FnOnce()) -> Vec<String> {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry()
        .with(text_layer().with_writer(lines.clone()).with_ansi(colour));
    tracing::subscriber::with_default(subscriber, emit);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|line| {
            if colour {
                return line.to_owned();
            }
            let (time, rest) = line.split_once(' ').unwrap();
            assert!(
                time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                "{line}"
            );
            rest.to_owned()
        })
        .collect()
}

#[test]
fn a_failed_call_reads_as_one_sentence_with_its_labels_duration_and_error_once() {
    let lines = lines_of(false, || {
        let span = tracing::info_span!("complete", model = "gpt-4o", task = "codegen");
        let _in = span.enter();
        let error = "gpt-4o: 429 rate limited";
        tracing::error!(target: "demo", status = "failure", event.duration = 69_095_539u64,
            error.message = %error, "complete failed: {}", error);
    });
    assert_eq!(
        lines,
        [
            "ERROR complete{model=gpt-4o task=codegen}: demo: complete failed: gpt-4o: 429 rate limited took=69.1ms status=failure"
        ]
    );
}

#[test]
fn a_successful_call_shows_no_status() {
    let lines = lines_of(false, || {
        let span = tracing::info_span!("build", chain = "solana");
        let _in = span.enter();
        tracing::info!(target: "demo", status = "success", event.duration = 2_320_708_449u64, "build succeeded");
    });
    assert_eq!(
        lines,
        [" INFO build{chain=solana}: demo: build succeeded took=2.32s"]
    );
}

#[test]
fn nested_spans_are_listed_from_the_outermost_and_other_fields_follow_in_order() {
    let lines = lines_of(false, || {
        let outer = tracing::info_span!("job", id = 7u64);
        let _o = outer.enter();
        let inner = tracing::info_span!("deploy", region = "eu west");
        let _i = inner.enter();
        tracing::warn!(target: "agent", status = "cancelled", attempt = 2, reason = "", ok = true, "deploy was cancelled");
    });
    assert_eq!(
        lines,
        [
            r#" WARN job{id=7}:deploy{region="eu west"}: agent: deploy was cancelled status=cancelled attempt=2 reason="" ok=true"#
        ]
    );
}

#[test]
fn an_error_message_the_message_does_not_contain_is_kept() {
    let lines = lines_of(false, || {
        tracing::event!(target: "agent", Level::ERROR, error.message = "disk full", "cannot save");
    });
    assert_eq!(
        lines,
        [r#"ERROR agent: cannot save error.message="disk full""#]
    );
}

#[test]
fn a_duration_that_is_not_a_count_of_nanoseconds_is_left_as_it_is() {
    let lines = lines_of(false, || {
        tracing::event!(target: "agent", Level::INFO, event.duration = -5i64, "odd");
    });
    assert_eq!(lines, [" INFO agent: odd event.duration=-5"]);
}

#[test]
fn control_characters_in_logged_values_are_escaped() {
    let lines = lines_of(false, || {
        tracing::warn!(target: "agent", user = "\x1b[2Jeve", note = ?"a\x07b", "hello \x1b[31mred\u{9b}");
    });
    assert_eq!(
        lines,
        [r#" WARN agent: hello \x1b[31mred\u{9b} user="\u{1b}[2Jeve" note="a\u{7}b""#]
    );
}

#[test]
fn without_colour_no_escape_code_is_written_and_with_it_the_level_is_coloured() {
    let emit = || {
        let span = tracing::info_span!("build", chain = "bsc");
        let _in = span.enter();
        tracing::error!(status = "failure", event.duration = 5u64, "build failed");
    };
    let plain = lines_of(false, emit);
    assert!(!plain[0].contains('\x1b'), "{plain:?}");
    let coloured = lines_of(true, emit);
    assert!(coloured[0].contains("\x1b[31mERROR\x1b[0m"), "{coloured:?}");
    assert!(coloured[0].contains("\x1b[1mbuild\x1b[0m"), "{coloured:?}");
}
