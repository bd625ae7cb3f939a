//! Sentry's rate limits: a `429` stops sending until `Retry-After` has
//! passed, and what is held back is counted as dropped.

use std::time::Duration;

use hyperkit_obs::track_build;

use crate::capture::Reply;
use crate::{Failure, dropped, flush, harness, serial};

#[track_build(chain)]
fn rate_limited(chain: &str) -> Result<(), Failure> {
    Err(Failure("throttled".to_owned()))
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
