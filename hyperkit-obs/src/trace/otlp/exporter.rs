//! The OTLP/HTTP side of the span sinks: one batch becomes one export
//! request, and the answer is read as the OTLP specification says. 200 is
//! delivered (a partial success's rejected spans are counted as rejected
//! and its message logged); 429, 502, 503 and 504, and a server that cannot
//! be reached, keep the batch for the export runtime to try again after a
//! backoff or the `Retry-After` given; any other answer refuses the batch
//! for good. An answer's body is read up to [`MAX_ANSWER_BYTES`], so a
//! hostile server cannot make the worker hold more. Runs on the sink's own
//! thread; never panics on an answer.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap};

#[cfg(feature = "otlp")]
use super::OtlpConfig;
use super::Protocol;
use super::encode::{self, SpanItem};
use crate::export::{Delivery, Exporter, Housekeeping};
use crate::net::{Blocking, error_chain, read_capped, retry_after};

/// The most of an answer's body that is read.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where one exporter sends, once known.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) endpoint: String,
    pub(crate) headers: HeaderMap,
    pub(crate) protocol: Protocol,
    pub(crate) gzip: bool,
    pub(crate) timeout: Duration,
}

impl Target {
    #[cfg(feature = "otlp")]
    pub(crate) fn of(config: &OtlpConfig) -> Target {
        use reqwest::header::{HeaderName, HeaderValue};
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            // Names and values were checked when the variables were read.
            if let (Ok(k), Ok(mut v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v.expose()),
            ) {
                v.set_sensitive(true);
                headers.insert(k, v);
            }
        }
        Target {
            endpoint: config.endpoint.clone(),
            headers,
            protocol: config.protocol,
            gzip: config.gzip,
            timeout: config.timeout,
        }
    }
}

/// What a target that must be looked up first says (MLflow: which server
/// version, which experiment).
#[cfg_attr(not(feature = "mlflow"), allow(dead_code))]
pub(crate) enum Resolved {
    /// Send there from now on.
    Ready(Target),
    /// Not now (the server is down): the batch waits, and the lookup is
    /// tried again.
    NotYet(String),
    /// Never: spans for this target are dropped from now on (said once).
    Never(String),
}

/// Finds a target on the exporter's thread.
pub(crate) trait Resolve: Send + 'static {
    fn resolve(&mut self, runtime: &Blocking, http: &reqwest::Client) -> Resolved;
}

enum State {
    Ready(Target),
    Pending(Box<dyn Resolve>),
    Never,
}

/// The delivery code of a span sink.
pub(crate) struct SpanExporter {
    http: reqwest::Client,
    runtime: Blocking,
    resource: Resource,
    state: State,
    /// Set when the target turns out to be `Never`, so callers stop
    /// queueing.
    off: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SpanExporter {
    pub(crate) fn new(
        resource: Resource,
        target: Result<Target, Box<dyn Resolve>>,
        off: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<SpanExporter, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hyperkit-obs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        let runtime =
            Blocking::new().map_err(|e| format!("cannot build the exporter's runtime: {e}"))?;
        Ok(SpanExporter {
            http,
            runtime,
            resource,
            state: match target {
                Ok(t) => State::Ready(t),
                Err(r) => State::Pending(r),
            },
            off,
        })
    }

    /// The target, looking it up if needed.
    fn target(&mut self, house: &mut Housekeeping<'_>) -> Result<Target, bool> {
        match &mut self.state {
            State::Ready(t) => Ok(t.clone()),
            State::Never => Err(false),
            State::Pending(resolver) => match resolver.resolve(&self.runtime, &self.http) {
                Resolved::Ready(t) => {
                    self.state = State::Ready(t.clone());
                    Ok(t)
                }
                Resolved::NotYet(why) => {
                    house.fail(why);
                    Err(true)
                }
                Resolved::Never(why) => {
                    house.log(&why);
                    self.off.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.state = State::Never;
                    Err(false)
                }
            },
        }
    }
}

/// How the server answered one export request.
enum Answer {
    Delivered {
        rejected: u64,
        message: String,
    },
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Refused(String),
}

impl Exporter for SpanExporter {
    type Item = SpanItem;

    fn weight(&self, item: &SpanItem) -> usize {
        item.weight()
    }

    fn export(&mut self, batch: Vec<SpanItem>, delivery: &mut Delivery<'_, SpanItem>) {
        let target = match self.target(delivery.housekeeping()) {
            Ok(t) => t,
            Err(true) => {
                delivery.retry_all(batch);
                return;
            }
            // A target that will never take spans: they are dropped
            // without a word each time (it was said once).
            Err(false) => {
                delivery.give_up(batch.len());
                return;
            }
        };
        let request = encode::request(&self.resource, &batch);
        let (body, content_type, gzipped) = encode::body(&request, target.protocol, target.gzip);
        drop(request);
        let answer = self.runtime.run_until(
            || delivery.deadline(),
            send(&self.http, &target, body, content_type, gzipped),
        );
        let n = batch.len();
        match answer {
            None => {
                delivery.give_up(n);
                delivery.fail(format!(
                    "{} did not answer before the sink stopped; {n} spans are lost",
                    target.endpoint
                ));
            }
            Some(Answer::Delivered { rejected, message }) => {
                if rejected > 0 {
                    delivery.reject(usize::try_from(rejected).unwrap_or(n).min(n));
                    delivery.log(&format!(
                        "{} rejected {rejected} of {n} spans: {message}",
                        target.endpoint
                    ));
                } else if !message.is_empty() {
                    delivery.log(&format!("{} warns: {message}", target.endpoint));
                }
            }
            Some(Answer::Retry { after, why }) => {
                delivery.fail(why);
                if let Some(after) = after {
                    delivery.retry_after(after);
                }
                delivery.retry_all(batch);
            }
            Some(Answer::Refused(why)) => {
                delivery.fail(why);
                delivery.reject(n);
            }
        }
    }

    fn tick(&mut self, house: &mut Housekeeping<'_>) {
        // Look the target up ahead of the first batch.
        if matches!(self.state, State::Pending(_)) {
            let _ = self.target(house);
        }
    }
}

async fn send(
    http: &reqwest::Client,
    target: &Target,
    body: Vec<u8>,
    content_type: &'static str,
    gzipped: bool,
) -> Answer {
    let mut request = http
        .post(&target.endpoint)
        .timeout(target.timeout)
        .headers(target.headers.clone())
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if gzipped {
        request = request.header(CONTENT_ENCODING, "gzip");
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Answer::Retry {
                after: None,
                why: format!("cannot reach {}: {}", target.endpoint, error_chain(&e)),
            };
        }
    };
    let status = response.status().as_u16();
    let after = retry_after(response.headers());
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let body = read_capped(response, MAX_ANSWER_BYTES).await;
    match status {
        200..=299 => {
            let Ok(body) = body else {
                // Delivered: what the answer said is lost, not the spans.
                return Answer::Delivered {
                    rejected: 0,
                    message: String::new(),
                };
            };
            let decoded = if body.is_empty() {
                None
            } else if json {
                serde_json::from_slice::<ExportTraceServiceResponse>(&body).ok()
            } else {
                ExportTraceServiceResponse::decode(body.as_slice()).ok()
            };
            let partial = decoded.and_then(|r| r.partial_success);
            Answer::Delivered {
                rejected: partial
                    .as_ref()
                    .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)),
                message: partial.map(|p| shown(&p.error_message)).unwrap_or_default(),
            }
        }
        429 | 502 | 503 | 504 => Answer::Retry {
            after,
            why: format!("{} answered {status}; the spans wait", target.endpoint),
        },
        _ => {
            let detail = body
                .map(|b| shown(&String::from_utf8_lossy(&b)))
                .unwrap_or_default();
            Answer::Refused(format!(
                "{} refused the spans ({status}){}{detail}",
                target.endpoint,
                if detail.is_empty() { "" } else { ": " }
            ))
        }
    }
}

/// At most 300 printable characters of what a server said.
fn shown(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}
