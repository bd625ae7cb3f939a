//! The Elasticsearch shipper on the shared export runtime: only what
//! belongs to `_bulk` is here (the request body, splitting on 413, reading
//! the items, the index template); queueing, batching, backoff, flush and
//! drop counting are [`crate::export`]'s.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{BulkAnswer, ElasticsearchClient, ItemResult};
use super::config::{ElasticsearchConfig, TEMPLATE_NAME, check_index};
use super::{RejectedFn, SINK};
use crate::export::{self, Delivery, Exporter, Housekeeping};
use crate::logs::ship::{Document, ShipperGuard, ShippingError};
use crate::net::Blocking;
use crate::util::next_backoff;

pub(super) fn start(
    config: &ElasticsearchConfig,
    on_rejected: Option<Arc<RejectedFn>>,
) -> Result<ShipperGuard, ShippingError> {
    check_index(&config.index, config.data_stream).map_err(|problem| ShippingError::Setup {
        sink: SINK,
        message: format!("the index {:?} {problem}", config.index),
    })?;
    let client = ElasticsearchClient::new(config)?;
    let runtime = Blocking::new().map_err(|e| ShippingError::Setup {
        sink: SINK,
        message: format!("cannot build its runtime: {e}"),
    })?;
    let options = export::Options::new(SINK, config.url.clone())
        .capacity(config.queue_capacity)
        .batch(config.batch_events, config.batch_bytes)
        .linger(config.flush_interval)
        .retry(config.retry_initial, config.retry_max);
    let exporter = BulkExporter {
        template: config.install_template.then(|| Template {
            installed: false,
            attempts: 0,
            next_at: Instant::now(),
            backoff: Duration::ZERO,
        }),
        config: config.clone(),
        client,
        runtime,
        day: None,
        on_rejected,
    };
    export::spawn(options, exporter).map_err(|e| ShippingError::Setup {
        sink: SINK,
        message: e.to_string(),
    })
}

/// Where the index template stands.
struct Template {
    installed: bool,
    attempts: u32,
    next_at: Instant,
    backoff: Duration,
}

struct BulkExporter {
    config: ElasticsearchConfig,
    client: ElasticsearchClient,
    runtime: Blocking,
    /// The index of the last day seen, which most documents share.
    day: Option<(i64, Arc<str>)>,
    template: Option<Template>,
    on_rejected: Option<Arc<RejectedFn>>,
}

impl BulkExporter {
    fn index(&mut self, timestamp_ms: i64) -> Arc<str> {
        let day = timestamp_ms.div_euclid(86_400_000);
        match &self.day {
            Some((d, name)) if *d == day => Arc::clone(name),
            _ => {
                let name: Arc<str> = self.config.index_for(timestamp_ms).into();
                self.day = Some((day, Arc::clone(&name)));
                name
            }
        }
    }

    /// One attempt at the template when one is due; the first attempt's
    /// failure is logged, each one shown as the sink's warning until one
    /// succeeds.
    fn install_template(&mut self, house: &mut Housekeeping<'_>, now: Instant) {
        let Some(t) = self.template.as_mut() else {
            return;
        };
        if t.installed || now < t.next_at {
            return;
        }
        t.attempts += 1;
        let client = &self.client;
        let result = self
            .runtime
            .run_until(|| house.deadline(), client.install_template());
        let Some(t) = self.template.as_mut() else {
            return;
        };
        match result {
            Some(Ok(())) => {
                t.installed = true;
                house.warning(None);
            }
            Some(Err(e)) => {
                let message = format!(
                    "the index template {TEMPLATE_NAME} could not be installed ({e}); \
                     retrying in the background"
                );
                if t.attempts == 1 {
                    house.log(&message);
                }
                house.warning(Some(message));
                t.backoff =
                    next_backoff(t.backoff, self.config.retry_initial, self.config.retry_max);
                t.next_at = Instant::now() + t.backoff;
            }
            None => {}
        }
    }

    fn reject(&self, delivery: &mut Delivery<'_, Document>, doc: &Document, reason: &str) {
        delivery.reject(1);
        if let Some(callback) = &self.on_rejected {
            // A panicking callback must not cost the rest of the batch.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                callback(&doc.bytes, reason);
            }));
        }
    }
}

impl Exporter for BulkExporter {
    type Item = Document;

    fn weight(&self, doc: &Document) -> usize {
        doc.bytes.len()
    }

    fn tick(&mut self, house: &mut Housekeeping<'_>) {
        self.install_template(house, Instant::now());
    }

    fn export(&mut self, batch: Vec<Document>, delivery: &mut Delivery<'_, Document>) {
        // The first batch may create today's index: the template gets its
        // first chance before it.
        if self.template.as_ref().is_some_and(|t| t.attempts == 0) {
            self.install_template(delivery.housekeeping(), Instant::now());
        }
        let create = self.config.data_stream;
        // Parts still to send, in order: the batch, or halves of it after
        // a 413.
        let mut parts: VecDeque<Vec<Document>> = VecDeque::from([batch]);
        while let Some(part) = parts.pop_front() {
            let indices: Vec<Arc<str>> = part.iter().map(|d| self.index(d.timestamp_ms)).collect();
            let body = match encode(&part, &indices, create) {
                Ok(b) => b,
                Err(e) => {
                    // Writing to memory does not fail; keep the documents if it did.
                    delivery.fail(format!("cannot compress a bulk request: {e}"));
                    delivery.retry_all(part.into_iter().chain(parts.into_iter().flatten()));
                    return;
                }
            };
            let n = part.len();
            let answer = self
                .runtime
                .run_until(|| delivery.deadline(), self.client.bulk(body, n, create));
            let Some(answer) = answer else {
                // The shutdown deadline passed while waiting.
                delivery.retry_all(part.into_iter().chain(parts.into_iter().flatten()));
                return;
            };
            match answer {
                BulkAnswer::Items(results) => {
                    let mut last_retry_reason = None;
                    let mut retried = 0;
                    for (doc, result) in part.into_iter().zip(results) {
                        match result {
                            ItemResult::Delivered => {}
                            ItemResult::Retry(reason) => {
                                last_retry_reason = Some(reason);
                                retried += 1;
                                delivery.retry(doc);
                            }
                            ItemResult::Rejected(reason) => self.reject(delivery, &doc, &reason),
                        }
                    }
                    if let Some(reason) = last_retry_reason {
                        delivery.fail(format!(
                            "Elasticsearch at {} asked to retry {retried} documents ({reason})",
                            self.config.url
                        ));
                    }
                }
                BulkAnswer::TooLarge if n > 1 => {
                    let mut first = part;
                    let second = first.split_off(n.div_ceil(2));
                    parts.push_front(second);
                    parts.push_front(first);
                }
                BulkAnswer::TooLarge => {
                    for doc in &part {
                        self.reject(
                            delivery,
                            doc,
                            "HTTP 413: the document alone is larger than the server accepts \
                             (http.max_content_length)",
                        );
                    }
                }
                BulkAnswer::Retry(e, retry_after) => {
                    delivery.fail(format!(
                        "a bulk request of {n} documents to Elasticsearch failed and will be \
                         retried: {e}"
                    ));
                    if let Some(wait) = retry_after {
                        delivery.retry_after(wait);
                    }
                    delivery.retry_all(part.into_iter().chain(parts.into_iter().flatten()));
                    return;
                }
                BulkAnswer::Refused(reason) => {
                    for doc in &part {
                        self.reject(delivery, doc, &reason);
                    }
                    delivery.fail(format!(
                        "Elasticsearch at {} refused a bulk request of {n} documents: {reason}",
                        self.config.url
                    ));
                }
            }
        }
    }
}

/// The gzip-compressed NDJSON body of a bulk request: each document with
/// its action line, `indices[i]` being document `i`'s index.
fn encode(batch: &[Document], indices: &[Arc<str>], create: bool) -> std::io::Result<Vec<u8>> {
    let action = if create { "create" } else { "index" };
    let raw: usize = batch
        .iter()
        .zip(indices)
        .map(|(d, i)| d.bytes.len() + i.len() + 32)
        .sum();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw / 4 + 64),
        flate2::Compression::fast(),
    );
    let mut line = Vec::new();
    for (doc, index) in batch.iter().zip(indices) {
        line.clear();
        line.extend_from_slice(b"{\"");
        line.extend_from_slice(action.as_bytes());
        line.extend_from_slice(b"\":{\"_index\":");
        serde_json::to_writer(&mut line, &**index)?;
        line.extend_from_slice(b"}}\n");
        let start = line.len();
        line.extend_from_slice(&doc.bytes);
        // A raw newline can only be whitespace in valid JSON; NDJSON splits on it.
        for b in &mut line[start..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        line.push(b'\n');
        gz.write_all(&line)?;
    }
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn shipping_es_body_is_gzip_ndjson_with_one_action_per_document() {
        let batch = vec![
            Document::new(
                Arc::from(&b"{\"@timestamp\":\"x\",\n\"message\":\"a\"}"[..]),
                0,
            ),
            Document::new(Arc::from(&b"{\"@timestamp\":\"y\"}"[..]), 0),
        ];
        let indices: Vec<Arc<str>> = vec![
            Arc::from("hyperkit-logs-2026.01.01"),
            Arc::from("hyperkit-logs-2026.01.02"),
        ];
        let gz = encode(&batch, &indices, true).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert!(text.ends_with('\n'));
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            r#"{"create":{"_index":"hyperkit-logs-2026.01.01"}}"#
        );
        for l in &lines {
            serde_json::from_str::<Value>(l).unwrap();
        }
    }
}
