//! A client of one Elasticsearch server: `_bulk` requests and what their
//! answers mean item by item, the index template, and the `_search` of
//! `hyperkit-obs logs search`. Answers are read with a size cap, and a body
//! that is not Elasticsearch's JSON is an error, never a panic.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::config::{ElasticsearchAuth, ElasticsearchConfig, TEMPLATE_NAME};
use crate::logs::ship::ShippingError;
use crate::net::{BodyError, read_text_capped};

/// The most bytes of an answer read: a bulk answer takes about 150 bytes a
/// document, a search answer about one document's size a hit.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A client of one Elasticsearch server: bulk requests, the index template
/// and searches.
#[derive(Clone)]
pub struct ElasticsearchClient {
    http: reqwest::Client,
    config: Arc<ElasticsearchConfig>,
}

impl std::fmt::Debug for ElasticsearchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchClient")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

/// How a whole `_bulk` request went.
pub(super) enum BulkAnswer {
    /// 200: one result per document.
    Items(Vec<ItemResult>),
    /// 413: the batch is too large.
    TooLarge,
    /// Worth trying again later (after `retry_after` when given).
    Retry(ShippingError, Option<Duration>),
    /// Refused for good.
    Refused(String),
}

/// What the answer says of one document.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ItemResult {
    Delivered,
    Retry(String),
    Rejected(String),
}

impl ElasticsearchClient {
    /// A client for `config`'s server and credentials.
    pub fn new(config: &ElasticsearchConfig) -> Result<Self, ShippingError> {
        let mut headers = HeaderMap::new();
        let header = match &config.auth {
            Some(ElasticsearchAuth::ApiKey(key)) => Some(format!("ApiKey {}", key.expose())),
            Some(ElasticsearchAuth::Bearer(token)) => Some(format!("Bearer {}", token.expose())),
            _ => None,
        };
        if let Some(header) = header {
            let mut value = HeaderValue::from_str(&header).map_err(|_| ShippingError::Setup {
                sink: "elasticsearch",
                message: "ELASTICSEARCH_API_KEY holds characters an HTTP header cannot".to_owned(),
            })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("hyperkit-obs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ShippingError::Setup {
                sink: "elasticsearch",
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(ElasticsearchClient {
            http,
            config: Arc::new(config.clone()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}/{path}", self.config.url));
        match &self.config.auth {
            Some(ElasticsearchAuth::Basic { username, password }) => {
                rb.basic_auth(username, Some(password.expose()))
            }
            _ => rb,
        }
    }

    fn transport(&self, e: &reqwest::Error) -> ShippingError {
        // reqwest's text names the URL, which holds no credential.
        ShippingError::Transport {
            target: self.config.url.clone(),
            message: crate::net::error_chain(e),
        }
    }

    fn body_error(&self, e: BodyError) -> ShippingError {
        match e {
            BodyError::Transport(e) => self.transport(&e),
            BodyError::TooLarge(_) => ShippingError::Decode {
                target: self.config.url.clone(),
                message: e.to_string(),
            },
        }
    }

    /// Installs (or replaces) the index template [`TEMPLATE_NAME`]
    /// (`PUT _index_template/hyperkit-logs`).
    pub async fn install_template(&self) -> Result<(), ShippingError> {
        let response = self
            .request(
                reqwest::Method::PUT,
                &format!("_index_template/{TEMPLATE_NAME}"),
            )
            .header(CONTENT_TYPE, "application/json")
            .body(self.config.template().to_string())
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = read_text_capped(response, MAX_ANSWER_BYTES)
            .await
            .unwrap_or_default();
        Err(ShippingError::Http {
            target: self.config.url.clone(),
            status,
            body: body.chars().take(300).collect(),
        })
    }

    /// Searches the shipped logs with a Lucene `query_string` query (the
    /// language of `logs search`; an empty query matches everything),
    /// within `[since_ms, until_ms]` (milliseconds since the epoch) when
    /// given, newest first, at most `limit` documents. Returns the
    /// documents as stored.
    pub async fn search(
        &self,
        query_string: &str,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Value>, ShippingError> {
        let query = query_string.trim();
        let mut filter = Vec::new();
        if since_ms.is_some() || until_ms.is_some() {
            let mut range = json!({"format": "epoch_millis"});
            if let Some(s) = since_ms {
                range["gte"] = json!(s);
            }
            if let Some(u) = until_ms {
                range["lte"] = json!(u);
            }
            filter.push(json!({"range": {"@timestamp": range}}));
        }
        let must = if query.is_empty() {
            json!({"match_all": {}})
        } else {
            // Lenient: a word in a query over all fields must not fail on
            // the numeric and date ones.
            json!({"query_string": {"query": query, "lenient": true}})
        };
        let body = json!({
            "query": {"bool": {"must": [must], "filter": filter}},
            "sort": [{"@timestamp": {"order": "desc"}}],
            "size": limit,
        });
        let response = self
            .request(
                reqwest::Method::POST,
                &format!(
                    "{}/_search?ignore_unavailable=true&allow_no_indices=true",
                    self.config.index_wildcard()
                ),
            )
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let text = read_text_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| self.body_error(e))?;
        if !(200..300).contains(&status) {
            return Err(ShippingError::Http {
                target: self.config.url.clone(),
                status,
                body: text.chars().take(300).collect(),
            });
        }
        let answer: Value = serde_json::from_str(&text).map_err(|e| ShippingError::Decode {
            target: self.config.url.clone(),
            message: e.to_string(),
        })?;
        let hits = answer["hits"]["hits"]
            .as_array()
            .ok_or_else(|| ShippingError::Decode {
                target: self.config.url.clone(),
                message: "no hits.hits in the search answer".to_owned(),
            })?;
        Ok(hits
            .iter()
            .map(|h| h.get("_source").cloned().unwrap_or(Value::Null))
            .collect())
    }

    /// Sends one gzip-compressed NDJSON body to `_bulk`.
    pub(super) async fn bulk(&self, body: Vec<u8>, count: usize, create: bool) -> BulkAnswer {
        let response = match self
            .request(reqwest::Method::POST, "_bulk")
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header(CONTENT_ENCODING, "gzip")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return BulkAnswer::Retry(self.transport(&e), None),
        };
        let status = response.status().as_u16();
        let retry_after = crate::net::retry_after(response.headers());
        let text = match read_text_capped(response, MAX_ANSWER_BYTES).await {
            Ok(t) => t,
            Err(e) => return BulkAnswer::Retry(self.body_error(e), None),
        };
        let http = |status| ShippingError::Http {
            target: self.config.url.clone(),
            status,
            body: text.chars().take(300).collect(),
        };
        match status {
            200..=299 => match parse_items(&text, count, create) {
                Ok(items) => BulkAnswer::Items(items),
                Err(message) => BulkAnswer::Retry(
                    ShippingError::Decode {
                        target: self.config.url.clone(),
                        message,
                    },
                    None,
                ),
            },
            413 => BulkAnswer::TooLarge,
            401 | 403 | 404 | 408 | 429 | 500..=599 => BulkAnswer::Retry(http(status), retry_after),
            _ => BulkAnswer::Refused(format!(
                "the whole request was refused: {}",
                error_reason(&text).unwrap_or_else(|| format!("HTTP {status}"))
            )),
        }
    }
}

/// `type: reason` of an Elasticsearch error answer.
fn error_reason(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    let e = v.get("error")?;
    Some(describe_error(e))
}

fn describe_error(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        _ => format!(
            "{}: {}",
            e["type"].as_str().unwrap_or("unknown"),
            e["reason"].as_str().unwrap_or("no reason given")
        ),
    }
}

/// The per-item results of a `_bulk` answer, in request order.
pub(super) fn parse_items(
    text: &str,
    count: usize,
    create: bool,
) -> Result<Vec<ItemResult>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("bulk answer: {e}"))?;
    let items = v["items"]
        .as_array()
        .ok_or("the bulk answer has no items")?;
    if items.len() != count {
        return Err(format!(
            "the bulk answer has {} items for {count} documents",
            items.len()
        ));
    }
    items
        .iter()
        .map(|item| {
            let (action, result) = item
                .as_object()
                .and_then(|o| o.iter().next())
                .ok_or("a bulk item is not an object")?;
            let status = result["status"]
                .as_u64()
                .ok_or("a bulk item has no status")?;
            let reason = || match result.get("error") {
                Some(e) => format!("HTTP {status} {}", describe_error(e)),
                None => format!("HTTP {status}"),
            };
            Ok(match status {
                200..=299 => ItemResult::Delivered,
                409 if create || action == "create" => ItemResult::Delivered,
                429 | 500..=599 => ItemResult::Retry(reason()),
                _ => ItemResult::Rejected(reason()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipping_es_items_are_classified_as_the_bulk_api_documents() {
        let answer = json!({"took": 3, "errors": true, "items": [
            {"index": {"_index": "i", "status": 201}},
            {"index": {"_index": "i", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"_index": "i", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [event.duration]"}}},
            {"create": {"_index": "i", "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "exists"}}},
            {"index": {"_index": "i", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary not active"}}},
        ]});
        let items = parse_items(&answer.to_string(), 5, false).unwrap();
        assert_eq!(items[0], ItemResult::Delivered);
        assert!(
            matches!(&items[1], ItemResult::Retry(r) if r.contains("es_rejected_execution_exception"))
        );
        assert_eq!(
            items[2],
            ItemResult::Rejected(
                "HTTP 400 mapper_parsing_exception: failed to parse field [event.duration]"
                    .to_owned()
            )
        );
        assert_eq!(items[3], ItemResult::Delivered);
        assert!(matches!(&items[4], ItemResult::Retry(_)));
        assert!(parse_items(&answer.to_string(), 4, false).is_err());
    }

    // Property tests as fuzzers: whatever a server answers to `_bulk`, its
    // items are read or refused with a message, never a panic, and an
    // answer read always has one result per document. 100 times more by
    // hand: `PROPTEST_CASES=25600 cargo test -p hyperkit-obs --lib
    // logs::elastic`.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn item() -> impl Strategy<Value = serde_json::Value> {
            let status = prop_oneof![
                Just(json!(201)),
                Just(json!(409)),
                Just(json!(429)),
                Just(json!(400)),
                Just(json!(503)),
                Just(json!(-1)),
                Just(json!("201")),
                Just(json!(null)),
                Just(json!(1e300)),
            ];
            let error = prop_oneof![
                Just(json!(null)),
                Just(json!({"type": "mapper_parsing_exception", "reason": "bad"})),
                Just(json!("a string")),
                Just(json!([1, 2])),
            ];
            let action = prop_oneof![Just("index"), Just("create"), Just("delete"), Just("")];
            (action, status, error).prop_map(|(a, s, e)| json!({a: {"status": s, "error": e}}))
        }

        proptest! {
            #[test]
            fn any_bulk_answer_is_read_with_one_result_a_document_or_refused(
                items in proptest::collection::vec(item(), 0..20),
                count in 0usize..20,
                create in any::<bool>(),
            ) {
                let text = json!({"took": 1, "errors": true, "items": items}).to_string();
                if let Ok(results) = parse_items(&text, count, create) {
                    prop_assert_eq!(results.len(), count);
                }
            }

            #[test]
            fn arbitrary_bytes_as_a_bulk_answer_are_refused_not_a_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                count in 0usize..5,
            ) {
                let _ = parse_items(&String::from_utf8_lossy(&bytes), count, false);
            }

            #[test]
            fn nested_json_deeper_than_serde_allows_is_an_error(depth in 100usize..5000) {
                let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                prop_assert!(parse_items(&text, 1, false).is_err());
            }
        }
    }
}
