//! Errors and panics in Sentry, end to end.
//!
//! No Sentry server can run here, so the real `sentry` client, started by
//! `hyperkit_obs::Builder` from a `SENTRY_DSN`, sends to a CAPTURE SERVER on
//! 127.0.0.1: a small HTTP server that accepts envelopes the way Sentry's
//! envelope endpoint is documented to (`POST /api/<project>/envelope/`,
//! authenticated by the `X-Sentry-Auth` header carrying the DSN's public
//! key, answered `200 {}`), and can be told to answer `429` with
//! `Retry-After` and `X-Sentry-Rate-Limits` instead. Everything it received
//! is parsed with Sentry's own envelope parser (`sentry-types`).
//!
//! Its own test binary: `init()` installs the process-wide subscriber and
//! Sentry client once, so every test shares one start-up and runs alone
//! (`serial()`), looking only at what arrived after it started.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hyperkit_obs::{Builder, MonitoringConfig, ObsGuard, track_build, track_model, track_query};
use sentry_types::protocol::v7::{Envelope, EnvelopeItem, Event, Level};

const PROJECT: u64 = 42;
const PUBLIC_KEY: &str = "publickey";
/// The configured `/metrics` token: a secret the process knows.
const TOKEN: &str = "tok-5e6f7a8b9c0d1e2f";
/// A password that only ever appears in what the program logs.
const PASSWORD: &str = "pa55-hunter2-wd";
/// A bearer token in a logged header value.
const BEARER: &str = "xyz-bearer-0451";
/// A model prompt, logged as a field.
const PROMPT: &str = "write a limerick about gas fees";

// ---------------------------------------------------------------------------
// The capture server.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    Accept,
    /// Answer the next envelope `429` with these headers, then accept again.
    RateLimit {
        retry_after: u64,
        sentry_limits: Option<&'static str>,
    },
}

struct Received {
    at: Instant,
    path: String,
    auth: String,
    body: Vec<u8>,
    status: u16,
}

#[derive(Clone)]
struct Capture {
    addr: SocketAddr,
    state: Arc<Mutex<(Vec<Received>, Reply)>>,
}

impl Capture {
    fn start() -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the capture server");
        let capture = Capture {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new((Vec::new(), Reply::Accept))),
        };
        let server = capture.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let server = server.clone();
                std::thread::spawn(move || server.serve(stream));
            }
        });
        capture
    }

    fn state(&self) -> MutexGuard<'_, (Vec<Received>, Reply)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one keep-alive connection.
    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let length = header("content-length").map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            if header("content-encoding").as_deref() == Some("gzip") {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                body = plain;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let auth = header("x-sentry-auth").unwrap_or_default();
            let response = self.answer(&request_line, path, auth, body);
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// What Sentry's envelope endpoint would answer, and a record of it.
    fn answer(&self, request_line: &str, path: String, auth: String, body: Vec<u8>) -> String {
        let mut state = self.state();
        let (status, extra, text) =
            if !request_line.starts_with("POST ") || path != format!("/api/{PROJECT}/envelope/") {
                (404, String::new(), r#"{"detail":"not found"}"#)
            } else if !auth.starts_with("Sentry ")
                || !auth.contains(&format!("sentry_key={PUBLIC_KEY}"))
                || !auth.contains("sentry_version=7")
            {
                (401, String::new(), r#"{"detail":"missing authorization"}"#)
            } else if let Reply::RateLimit {
                retry_after,
                sentry_limits,
            } = state.1
            {
                state.1 = Reply::Accept;
                let mut extra = format!("Retry-After: {retry_after}\r\n");
                if let Some(limits) = sentry_limits {
                    extra.push_str(&format!("X-Sentry-Rate-Limits: {limits}\r\n"));
                }
                (429, extra, r#"{"detail":"rate limited"}"#)
            } else {
                (200, String::new(), "{}")
            };
        state.0.push(Received {
            at: Instant::now(),
            path,
            auth,
            body,
            status,
        });
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{text}",
            text.len()
        )
    }

    fn requests(&self) -> usize {
        self.state().0.len()
    }

    fn reply_next(&self, reply: Reply) {
        self.state().1 = reply;
    }

    /// The events in the envelopes received since request number `mark`.
    fn events_since(&self, mark: usize) -> Vec<Event<'static>> {
        self.state().0[mark..]
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| {
                let envelope =
                    Envelope::from_slice(&r.body).expect("Sentry's parser reads the envelope");
                envelope
                    .into_items()
                    .filter_map(|item| match item {
                        EnvelopeItem::Event(event) => Some(*event),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// One start-up for the whole binary.

struct Harness {
    capture: Capture,
    dsn: String,
    _obs: ObsGuard,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let capture = Capture::start();
        let dsn = format!("http://{PUBLIC_KEY}@{}/{PROJECT}", capture.addr);
        let vars = [
            ("SENTRY_DSN", dsn.as_str()),
            ("SENTRY_ENVIRONMENT", "ci"),
            ("HYPERKIT_METRICS_TOKEN", TOKEN),
            ("RUST_LOG", "info"),
            // Only Sentry is under test: no MLflow runs or log store in the
            // crate's directory.
            ("HYPERKIT_MLFLOW_ENABLED", "false"),
            ("HYPERKIT_LOG_STORE", "false"),
        ];
        let config = MonitoringConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        let obs = Builder::from_config(config)
            .release("tests@0.0.0")
            .init()
            .unwrap();
        assert!(obs.sentry_enabled());
        Harness {
            capture,
            dsn,
            _obs: obs,
        }
    })
}

/// Runs one test at a time: they share the client, its rate limits and the
/// capture server.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn flush() {
    assert!(
        hyperkit_obs::sentry::flush(Duration::from_secs(5)),
        "the client sends what it holds within its deadline"
    );
}

fn dropped() -> u64 {
    hyperkit_obs::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "hyperkit_obs_dropped_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "sink" && l.value() == "sentry")
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn tag<'a>(event: &'a Event<'static>, name: &str) -> Option<&'a str> {
    event.tags.get(name).map(String::as_str)
}

// ---------------------------------------------------------------------------
// The functions under test.

#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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

#[track_build(chain)]
fn leak(chain: &str, dsn: &str) -> Result<(), Failure> {
    Err(Failure(format!(
        "RPC refused: Authorization: Bearer {BEARER}; password={PASSWORD}; key {TOKEN}; sentry at {dsn}"
    )))
}

#[track_build(chain)]
fn rate_limited(chain: &str) -> Result<(), Failure> {
    Err(Failure("throttled".to_owned()))
}

// ---------------------------------------------------------------------------
// The behaviour.

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

#[test]
fn a_429_stops_sending_until_retry_after_passes_and_the_drops_are_counted() {
    let h = harness();
    let _serial = serial();

    for (retry_after, sentry_limits) in [(2, None), (1, Some("2:error:organization:quota"))] {
        h.capture.reply_next(Reply::RateLimit {
            retry_after,
            sentry_limits,
        });
        let dropped_before = dropped();
        let mark = h.capture.requests();

        let _ = rate_limited("ethereum");
        flush();
        let limited_at = {
            let state = h.capture.state();
            assert_eq!(state.0.len(), mark + 1, "one request, answered 429");
            assert_eq!(state.0[mark].status, 429);
            state.0[mark].at
        };

        // Inside the window: the client drops instead of sending, and never
        // retries the refused envelope. (Under a per-category limit the
        // client may still send its own client reports, which no error
        // limit covers; no event goes out.)
        for _ in 0..5 {
            let _ = rate_limited("ethereum");
        }
        flush();
        assert!(
            limited_at.elapsed() < Duration::from_secs(2),
            "still in the window"
        );
        if sentry_limits.is_none() {
            assert_eq!(h.capture.requests(), mark + 1, "nothing sent in the window");
        }
        assert!(
            h.capture.events_since(mark + 1).is_empty(),
            "no event sent in the window"
        );
        assert_eq!(
            dropped() - dropped_before,
            6,
            "the refused event and the five held back are counted"
        );

        // After it: sending resumes, and the client report tells Sentry.
        let window = Duration::from_secs(2) + Duration::from_millis(1200);
        std::thread::sleep(window.saturating_sub(limited_at.elapsed()));
        let mark = h.capture.requests();
        let _ = rate_limited("ethereum");
        flush();
        assert_eq!(h.capture.events_since(mark).len(), 1, "sending resumed");
        let body = String::from_utf8_lossy(&h.capture.state().0[mark].body).into_owned();
        assert!(body.contains("\"reason\":\"ratelimit_backoff\""), "{body}");
    }
}
