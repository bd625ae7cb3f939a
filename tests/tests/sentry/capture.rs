//! The capture server: Sentry's envelope endpoint as documented
//! (`POST /api/<project>/envelope/`, authenticated by `X-Sentry-Auth`,
//! answered `200 {}`), or a `429` with `Retry-After` and
//! `X-Sentry-Rate-Limits` when told to; every envelope received kept, and
//! read back with Sentry's own parser.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use sentry_types::protocol::v7::{Envelope, EnvelopeItem, Event};
use test_support::fixture::{self, HttpFixture, Request, Response};

use crate::{PROJECT, PUBLIC_KEY};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Reply {
    Accept,
    /// Answer the next envelope `429` with these headers, then accept again.
    RateLimit {
        retry_after: u64,
        sentry_limits: Option<&'static str>,
    },
}

pub(crate) struct Received {
    pub(crate) at: Instant,
    pub(crate) path: String,
    pub(crate) auth: String,
    pub(crate) body: Vec<u8>,
    pub(crate) status: u16,
}

/// What was received, and how the next envelope is answered.
type State = Arc<Mutex<(Vec<Received>, Reply)>>;

pub(crate) struct Capture {
    http: HttpFixture,
    state: State,
}

impl Capture {
    pub(crate) fn start() -> Capture {
        let state: State = Arc::new(Mutex::new((Vec::new(), Reply::Accept)));
        let shared = Arc::clone(&state);
        let http = HttpFixture::start(move |request| answer(&shared, request));
        Capture { http, state }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, (Vec<Received>, Reply)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn requests(&self) -> usize {
        self.state().0.len()
    }

    pub(crate) fn reply_next(&self, reply: Reply) {
        self.state().1 = reply;
    }

    /// The events in the envelopes received since request number `mark`.
    pub(crate) fn events_since(&self, mark: usize) -> Vec<Event<'static>> {
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

/// What Sentry's envelope endpoint would answer, and a record of it.
fn answer(state: &State, request: &Request) -> fixture::Reply {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let auth = request
        .header("x-sentry-auth")
        .unwrap_or_default()
        .to_owned();
    let (status, extra, text) =
        if request.method != "POST" || request.path != format!("/api/{PROJECT}/envelope/") {
            (404, Vec::new(), r#"{"detail":"not found"}"#)
        } else if !auth.starts_with("Sentry ")
            || !auth.contains(&format!("sentry_key={PUBLIC_KEY}"))
            || !auth.contains("sentry_version=7")
        {
            (401, Vec::new(), r#"{"detail":"missing authorization"}"#)
        } else if let Reply::RateLimit {
            retry_after,
            sentry_limits,
        } = state.1
        {
            state.1 = Reply::Accept;
            let mut extra = vec![("Retry-After", retry_after.to_string())];
            if let Some(limits) = sentry_limits {
                extra.push(("X-Sentry-Rate-Limits", limits.to_owned()));
            }
            (429, extra, r#"{"detail":"rate limited"}"#)
        } else {
            (200, Vec::new(), "{}")
        };
    state.0.push(Received {
        at: request.at,
        path: request.path.clone(),
        auth,
        body: request.body.clone(),
        status,
    });
    extra
        .into_iter()
        .fold(
            Response::new(status, "application/json", text),
            |r, (k, v)| r.header(k, v),
        )
        .into()
}
