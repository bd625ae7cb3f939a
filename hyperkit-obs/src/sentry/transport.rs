//! The transport: Sentry envelopes sent over the workspace's `reqwest`
//! (rustls) from the shared export runtime ([`crate::export`]), honouring
//! Sentry's rate limits (`429`, `Retry-After`, `X-Sentry-Rate-Limits`) with
//! the `sentry` crate's own `RateLimiter`. An envelope that could not reach
//! Sentry (no connection, no answer, or a gateway's `502`/`503`/`504`) stays
//! queued and is sent again after the runtime's backoff, so a Sentry that is
//! down or restarting loses nothing within the queue's bound (a resend after
//! a lost answer is harmless: Sentry drops an event whose `event_id` it has
//! already stored). An envelope refused (any other answer), rate limited,
//! still unsent at shutdown or over the bounded queue is dropped and counted
//! in `hyperkit_obs_dropped_total{sink="sentry"}` (one per envelope that
//! carries telemetry; the client's own reports are not counted) and in
//! Sentry's client reports.

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::sentry::client_report::{Reason as LossReason, Recorder};
use ::sentry::protocol::{Envelope, EnvelopeFilterCallbacks, EnvelopeItem};
use ::sentry::transports::{RateLimiter, RateLimitingCategory};
use ::sentry::{Transport, TransportFactory};

use super::SINK;
use crate::export::{self, Delivery, Exporter, Guard, Handle};
use crate::net::Blocking;

/// Envelopes waiting to be sent; past this, new ones are dropped and counted.
const QUEUE_CAPACITY: usize = 64;

/// Time limit of one request to Sentry.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    static ON_TRANSPORT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether this is the transport's thread, whose own events are never
/// reported (they would come back to it).
pub(super) fn on_transport_thread() -> bool {
    ON_TRANSPORT_THREAD.get()
}

/// Makes the client's [`HttpTransport`].
pub(super) struct HttpTransportFactory {
    pub(super) http: reqwest::Client,
}

impl TransportFactory for HttpTransportFactory {
    fn create_transport_with_options(
        &self,
        options: ::sentry::TransportOptions,
    ) -> Arc<dyn Transport> {
        Arc::new(HttpTransport::start(self.http.clone(), &options))
    }
}

/// Queues envelopes for the sink's worker, never waiting.
struct HttpTransport {
    handle: Option<Handle<Envelope>>,
    guard: Mutex<Option<Guard<Envelope>>>,
    recorder: Recorder,
}

impl HttpTransport {
    fn start(http: reqwest::Client, options: &::sentry::TransportOptions) -> Self {
        let recorder = options.client_report_recorder.clone();
        let exporter = Blocking::new().ok().map(|runtime| EnvelopeExporter {
            http,
            url: options.dsn.envelope_api_url().to_string(),
            auth: options.dsn.to_auth(Some(&options.user_agent)).to_string(),
            limits: RateLimiter::new(),
            recorder: recorder.clone(),
            runtime,
        });
        let target = format!(
            "{}://{}:{}/api/{}/envelope/",
            options.dsn.scheme(),
            options.dsn.host(),
            options.dsn.port(),
            options.dsn.project_id()
        );
        let guard = exporter.and_then(|exporter| {
            let options = export::Options::new(SINK, target)
                .capacity(QUEUE_CAPACITY)
                .batch(1, 0)
                .shutdown_deadline(super::FLUSH_DEADLINE);
            export::spawn(options, exporter).ok()
        });
        HttpTransport {
            // Without its worker the transport drops (and counts) everything.
            handle: guard.as_ref().map(Guard::handle),
            guard: Mutex::new(guard),
            recorder,
        }
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        let refused = match &self.handle {
            Some(handle) => handle.try_send(envelope).err(),
            None => {
                crate::metrics::record_dropped(SINK, telemetry_items(&envelope));
                Some(envelope)
            }
        };
        if let Some(envelope) = refused {
            self.recorder
                .record_lost_data(&envelope, LossReason::QueueOverflow);
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.handle.as_ref().is_none_or(|h| h.flush(timeout))
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let drained = self.flush(timeout);
        let guard = self
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(guard) = guard {
            guard.shutdown(if drained { Duration::ZERO } else { timeout });
        }
        drained
    }
}

/// The sending side, on the sink's own thread.
struct EnvelopeExporter {
    http: reqwest::Client,
    url: String,
    auth: String,
    limits: RateLimiter,
    recorder: Recorder,
    runtime: Blocking,
}

impl EnvelopeExporter {
    /// Counts `envelope` as lost, in the metric when it carries telemetry,
    /// and in Sentry's client reports.
    fn lost(&self, delivery: &mut Delivery<'_, Envelope>, envelope: &Envelope, reason: LossReason) {
        if telemetry_items(envelope) > 0 {
            delivery.reject(1);
        }
        self.recorder.record_lost_data(envelope, reason);
    }

    fn send(&mut self, envelope: Envelope, delivery: &mut Delivery<'_, Envelope>) {
        if self.limits.is_disabled(RateLimitingCategory::Any).is_some() {
            self.lost(delivery, &envelope, LossReason::RatelimitBackoff);
            return;
        }
        // Per-category limits (`X-Sentry-Rate-Limits: 60:error:…`), as the
        // sentry crate's own transports apply them.
        let limits = &self.limits;
        let recorder = &self.recorder;
        let mut limited = 0;
        let envelope = envelope.filter(EnvelopeFilterCallbacks::new(
            |item: &EnvelopeItem| limits.is_enabled(category(item)),
            |item: EnvelopeItem| {
                limited += u64::from(!matches!(item, EnvelopeItem::ClientReport(_)));
                recorder.record_lost_data(&item, LossReason::RatelimitBackoff);
            },
        ));
        let Some(envelope) = envelope else {
            // Every item was held back.
            if limited > 0 {
                delivery.reject(1);
            }
            return;
        };
        if limited > 0 {
            crate::metrics::record_dropped(SINK, limited);
        }
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            self.lost(delivery, &envelope, LossReason::InternalError);
            return;
        }
        let request = self
            .http
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-sentry-envelope",
            )
            .body(body);
        let answer = self.runtime.run_until(|| delivery.deadline(), async move {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            // Read the (small) body so the connection can be reused.
            let _ = crate::net::read_capped(response, 64 * 1024).await;
            Ok::<_, reqwest::Error>((status, headers))
        });
        match answer {
            Some(Ok((status, headers))) => {
                let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
                if let Some(limits) = header("x-sentry-rate-limits") {
                    self.limits.update_from_sentry_header(limits);
                } else if let Some(after) = header("retry-after") {
                    self.limits.update_from_retry_after(after);
                } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    self.limits.update_from_429();
                }
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    // Lost, but Sentry counts it itself: no client report.
                    if telemetry_items(&envelope) > 0 {
                        delivery.reject(1);
                    }
                    delivery.fail("Sentry answered HTTP 429: rate limited");
                } else if matches!(status.as_u16(), 502..=504) {
                    // A gateway in front of Sentry, which did not get it.
                    delivery.fail(format!("Sentry answered HTTP {status}; sending again"));
                    delivery.retry(envelope);
                } else if !status.is_success() {
                    self.lost(delivery, &envelope, LossReason::SendError);
                    delivery.fail(format!("Sentry answered HTTP {status}"));
                }
            }
            Some(Err(e)) => {
                delivery.fail(format!(
                    "cannot reach Sentry: {}",
                    crate::net::error_chain(&e)
                ));
                delivery.retry(envelope);
            }
            // The stop's deadline passed: what is left is lost.
            None => {
                if telemetry_items(&envelope) > 0 {
                    delivery.give_up(1);
                }
                self.recorder
                    .record_lost_data(&envelope, LossReason::NetworkError);
            }
        }
    }
}

impl Exporter for EnvelopeExporter {
    type Item = Envelope;

    fn export(&mut self, batch: Vec<Envelope>, delivery: &mut Delivery<'_, Envelope>) {
        ON_TRANSPORT_THREAD.set(true);
        for envelope in batch {
            self.send(envelope, delivery);
        }
    }
}

/// The rate-limit category of an envelope item, as Sentry names them.
fn category(item: &EnvelopeItem) -> RateLimitingCategory {
    match item {
        EnvelopeItem::Event(_) => RateLimitingCategory::Error,
        EnvelopeItem::SessionUpdate(_) | EnvelopeItem::SessionAggregates(_) => {
            RateLimitingCategory::Session
        }
        EnvelopeItem::Transaction(_) => RateLimitingCategory::Transaction,
        EnvelopeItem::Attachment(_) => RateLimitingCategory::Attachment,
        _ => RateLimitingCategory::Any,
    }
}

/// Items of an envelope that count as telemetry (client reports are the
/// client's own bookkeeping).
fn telemetry_items(envelope: &Envelope) -> u64 {
    let n = envelope
        .items()
        .filter(|i| !matches!(i, EnvelopeItem::ClientReport(_)))
        .count();
    u64::try_from(n).unwrap_or(u64::MAX)
}
