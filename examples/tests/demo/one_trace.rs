//! The demo's two services share one trace per build: the API receives a
//! build, hands it to the agent over HTTP with `traceparent`, the agent
//! runs it (a build, a model call, deploys) and reports back to the API.
//! Read from the local log store once the demo stopped, as
//! `hyperkit-obs logs search 'trace.id:<id>'` reads it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyperkit_obs::logs::{LogStore, Query, SearchOptions};
use serde_json::Value;
use test_support::TempDir;

use crate::tmux::settings_to_drop;

/// How long a loaded 2-core machine may take to finish a build at 200x.
const WITHIN: Duration = Duration::from_secs(120);

fn text<'a>(line: &'a Value, key: &str) -> &'a str {
    line[key].as_str().unwrap_or_default()
}

#[test]
fn a_build_is_one_trace_across_the_api_and_the_agent() {
    let dir = TempDir::new("demo-one-trace");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"));
    for name in settings_to_drop() {
        demo.env_remove(name);
    }
    // No failures: the build followed deploys and reports success.
    let mut child = demo
        .current_dir(dir.path())
        .env("HYPERKIT_METRICS_ADDR", "127.0.0.1:0")
        .env("HYPERKIT_DEMO_SPEED", "200")
        .env("HYPERKIT_DEMO_FAILURE_RATE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("demo starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Piped, the demo prints every event as a JSON line: wait for the API
    // to hear from the agent that a build succeeded.
    let deadline = Instant::now() + WITHIN;
    let mut seen = Vec::new();
    let finished = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break None;
        };
        let parsed: Option<Value> = serde_json::from_str(&line).ok();
        seen.push(line);
        if let Some(v) = parsed
            && text(&v, "demo.service") == "api"
            && text(&v, "message").ends_with(" succeeded")
        {
            break Some(v);
        }
    };
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    let finished = finished.unwrap_or_else(|| {
        panic!(
            "no build succeeded within {WITHIN:?}; last lines: {:#?}",
            &seen[seen.len().saturating_sub(20)..]
        )
    });
    assert!(status.success(), "demo exit status {status:?}");

    let trace_id = text(&finished, "trace.id");
    let build_id = finished["build.id"].as_u64().expect("build.id");
    assert_eq!(trace_id.len(), 32, "{finished}");
    let store = LogStore::open(dir.path().join("hyperkit-data/logs")).expect("the local store");
    let query = Query::parse(&format!("trace.id:{trace_id}")).unwrap();
    let options = SearchOptions {
        limit: 1000,
        ..SearchOptions::default()
    };
    let lines: Vec<Value> = store
        .search(&query, &options)
        .expect("search")
        .iter()
        .map(|l| serde_json::from_str(&l.document).expect("a stored document is JSON"))
        .collect();
    let of = |service: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| text(l, "demo.service") == service)
            .collect()
    };
    let (api, agent) = (of("api"), of("agent"));
    let message = |lines: &[&Value], message: &str| -> Value {
        lines
            .iter()
            .find(|l| text(l, "message") == message)
            .map(|l| (*l).clone())
            .unwrap_or_else(|| panic!("no line {message:?} in trace {trace_id}: {lines:#?}"))
    };

    // The API received the build, handed it over, and heard it succeeded.
    let received = message(&api, &format!("build {build_id} received"));
    message(&api, &format!("build {build_id} handed to the agent"));
    let reported = message(&api, &format!("build {build_id} succeeded"));
    // The agent accepted it and ran it: the build, its model call and its
    // deploy are tracked calls of the same trace.
    let accepted = message(&agent, &format!("build {build_id} accepted"));
    let functions: Vec<&str> = agent
        .iter()
        .map(|l| text(l, "log.origin.function"))
        .collect();
    for function in ["build", "complete", "deploy"] {
        assert!(
            functions.contains(&function),
            "no {function} line in the agent's part of trace {trace_id}: {functions:?}"
        );
    }
    assert!(
        lines.iter().all(|l| text(l, "trace.id") == trace_id),
        "{lines:#?}"
    );

    // Each hop's parent: the agent's request is a child of the API's, the
    // report back a child of the agent's request; the build has its own span.
    assert_eq!(
        text(&accepted, "parent.id"),
        text(&received, "span.id"),
        "the agent's request names the API's span as its parent:\n{accepted}\n{received}"
    );
    assert_eq!(
        text(&reported, "parent.id"),
        text(&accepted, "span.id"),
        "the report names the agent's request span as its parent:\n{reported}\n{accepted}"
    );
    let build = agent
        .iter()
        .find(|l| text(l, "log.origin.function") == "build")
        .unwrap();
    assert_eq!(text(build, "status"), "success", "{build}");
    for other in [&received, &accepted, &reported] {
        assert_ne!(text(build, "span.id"), text(other, "span.id"));
    }
}
