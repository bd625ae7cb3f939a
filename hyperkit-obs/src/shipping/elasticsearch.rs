//! The Elasticsearch shipper (`ELASTICSEARCH_URL`): batches of documents as
//! gzip-compressed NDJSON `_bulk` requests, following the bulk API's
//! documentation
//! (<https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-bulk.html>),
//! and the search client of `logs search`.
//!
//! A batch goes out when it holds `HYPERKIT_ES_BATCH_EVENTS` documents or
//! `HYPERKIT_ES_BATCH_BYTES` bytes, or its oldest document has waited
//! `HYPERKIT_ES_FLUSH_MS`. Each document goes to the index named by
//! `HYPERKIT_ES_INDEX` for the UTC day of its timestamp (`index` action), or
//! to the data stream `HYPERKIT_ES_INDEX` (`create` action).
//!
//! The answer is read item by item:
//! - 2xx, and 409 on `create` (the document is already there): delivered;
//! - 429 or 5xx: that item alone is retried, before any newer document,
//!   after an exponential backoff with jitter;
//! - any other status (400 `mapper_parsing_exception`, …): refused for good,
//!   never retried, counted in `hyperkit_obs_dropped_total{sink="elasticsearch"}`
//!   and [`ShipperStatus::rejected`](super::ShipperStatus::rejected), and
//!   handed with its reason to the callback of
//!   [`ShipperHandle::on_rejected`](super::ShipperHandle::on_rejected).
//!
//! A whole request answered 413 is split in halves, each sent on its own (a
//! single document too large is refused for good); 408, 429 and 5xx, a
//! timeout or a broken connection retry the whole batch after a backoff
//! that honours `Retry-After`; 401, 403 and 404 (a configuration problem)
//! too, so that nothing is lost while it is fixed, within the queue bound;
//! any other 4xx refuses the batch for good. An `index` retried after a
//! timeout may have been applied already, so Elasticsearch may hold such a
//! document twice; a `create` into a data stream may not (409).
//!
//! Unless `HYPERKIT_ES_TEMPLATE=false`, the index template
//! `hyperkit-logs` with ECS mappings is installed at start, in the
//! background: the first batch waits for the first attempt (at most one
//! request timeout), and a failure is retried with backoff and reported by
//! the readiness check.
//!
//! Credentials never appear in `Debug`, errors or logs.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::{FailureLog, Lifecycle, Shared, ShipperGuard, ShippingError, WorkerIo};
use crate::config::{ConfigError, Secret};
use crate::util::next_backoff;

/// The default index pattern: one index a day.
pub const DEFAULT_INDEX: &str = "hyperkit-logs-%Y.%m.%d";
/// The default data stream when `HYPERKIT_ES_DATA_STREAM=true`.
pub const DEFAULT_DATA_STREAM: &str = "logs-hyperkit-default";
/// The name of the index template installed at start.
pub const TEMPLATE_NAME: &str = "hyperkit-logs";

const EXAMPLE_URL: &str = "https://elastic:changeme@127.0.0.1:9200";

/// Credentials for Elasticsearch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElasticsearchAuth {
    /// `ELASTICSEARCH_API_KEY`: `Authorization: ApiKey <key>` (the base64
    /// `encoded` value Elasticsearch returns when creating a key).
    ApiKey(Secret),
    /// `ELASTICSEARCH_USERNAME`/`ELASTICSEARCH_PASSWORD` or credentials in
    /// the URL: HTTP basic auth.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
}

/// Where and how to ship documents to Elasticsearch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElasticsearchConfig {
    /// `ELASTICSEARCH_URL`: `http(s)://host:port[/prefix]`, without
    /// credentials (those in the URL become [`ElasticsearchAuth::Basic`]).
    pub url: String,
    /// `ELASTICSEARCH_API_KEY` or `ELASTICSEARCH_USERNAME`/`PASSWORD`.
    pub auth: Option<ElasticsearchAuth>,
    /// `HYPERKIT_ES_INDEX`: the index pattern (default
    /// `hyperkit-logs-%Y.%m.%d`; `%Y`, `%m`, `%d` are the UTC date of the
    /// document's timestamp, `%%` a percent sign), or with `data_stream`
    /// the data stream's name (default `logs-hyperkit-default`).
    pub index: String,
    /// `HYPERKIT_ES_DATA_STREAM` (default `false`): write to the data
    /// stream `index` with `create` actions.
    pub data_stream: bool,
    /// `HYPERKIT_ES_BATCH_EVENTS` (default 1000): documents per request.
    pub batch_events: usize,
    /// `HYPERKIT_ES_BATCH_BYTES` (default 5 MB): uncompressed bytes of
    /// documents per request.
    pub batch_bytes: usize,
    /// `HYPERKIT_ES_FLUSH_MS` (default 1000): the longest a document waits
    /// for its batch to fill.
    pub flush_interval: Duration,
    /// `HYPERKIT_ES_QUEUE_CAPACITY` (default 10000): documents waiting or
    /// being retried; more are dropped and counted.
    pub queue_capacity: usize,
    /// `HYPERKIT_ES_TEMPLATE` (default `true`): install the index template
    /// at start.
    pub install_template: bool,
    /// `HYPERKIT_ES_TIMEOUT_MS` (default 30000): the limit of one request.
    pub timeout: Duration,
    /// `HYPERKIT_ES_RETRY_INITIAL_MS` (default 100): the first backoff; it
    /// doubles on each failure.
    pub retry_initial: Duration,
    /// `HYPERKIT_ES_RETRY_MAX_MS` (default 30000): the longest backoff.
    pub retry_max: Duration,
}

impl ElasticsearchConfig {
    /// A configuration for the server at `url` (no credentials) with the
    /// defaults.
    pub fn new(url: impl Into<String>) -> Self {
        ElasticsearchConfig {
            url: url.into().trim_end_matches('/').to_owned(),
            auth: None,
            index: DEFAULT_INDEX.to_owned(),
            data_stream: false,
            batch_events: 1000,
            batch_bytes: 5 * 1024 * 1024,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 10_000,
            install_template: true,
            timeout: Duration::from_secs(30),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        }
    }

    /// Reads `ELASTICSEARCH_*` and `HYPERKIT_ES_*` through `var` (which
    /// returns a set, non-blank variable); `None` when `ELASTICSEARCH_URL`
    /// is not set.
    ///
    /// ```
    /// use hyperkit_obs::shipping::{ElasticsearchAuth, ElasticsearchConfig};
    ///
    /// let c = ElasticsearchConfig::from_lookup(|k| match k {
    ///     "ELASTICSEARCH_URL" => Some("https://elastic:s3cret@es.internal:9200".to_owned()),
    ///     _ => None,
    /// })
    /// .unwrap()
    /// .unwrap();
    /// assert_eq!(c.url, "https://es.internal:9200");
    /// assert!(matches!(c.auth, Some(ElasticsearchAuth::Basic { .. })));
    /// assert!(!format!("{c:?}").contains("s3cret"));
    /// ```
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let Some(url) = var("ELASTICSEARCH_URL") else {
            return Ok(None);
        };
        let (url, url_auth) = parse_url(&url)?;
        let mut c = ElasticsearchConfig::new(url);
        let key = var("ELASTICSEARCH_API_KEY");
        let user = var("ELASTICSEARCH_USERNAME");
        let password = var("ELASTICSEARCH_PASSWORD");
        c.auth = match (key, user, password) {
            (None, None, None) => url_auth,
            (Some(k), None, None) => Some(ElasticsearchAuth::ApiKey(Secret::new(k.trim()))),
            (None, Some(username), Some(p)) => Some(ElasticsearchAuth::Basic {
                username,
                password: Secret::new(p),
            }),
            (Some(_), _, _) => {
                return Err(crate::config::invalid(
                    "ELASTICSEARCH_API_KEY",
                    "***",
                    "cannot be combined with ELASTICSEARCH_USERNAME/PASSWORD; choose one",
                    "<base64 encoded API key>",
                ));
            }
            (None, Some(_), None) => {
                return Err(crate::config::invalid(
                    "ELASTICSEARCH_PASSWORD",
                    "",
                    "is required when ELASTICSEARCH_USERNAME is set",
                    "<password>",
                ));
            }
            (None, None, Some(_)) => {
                return Err(crate::config::invalid(
                    "ELASTICSEARCH_USERNAME",
                    "",
                    "is required when ELASTICSEARCH_PASSWORD is set",
                    "elastic",
                ));
            }
        };
        if let Some(v) = var("HYPERKIT_ES_DATA_STREAM") {
            c.data_stream = crate::config::parse_bool("HYPERKIT_ES_DATA_STREAM", &v)?;
        }
        match var("HYPERKIT_ES_INDEX") {
            Some(v) => c.index = v.trim().to_owned(),
            None if c.data_stream => c.index = DEFAULT_DATA_STREAM.to_owned(),
            None => {}
        }
        check_index(&c.index, c.data_stream).map_err(|problem| {
            crate::config::invalid("HYPERKIT_ES_INDEX", &c.index, problem, DEFAULT_INDEX)
        })?;
        let number = |name: &'static str, min: u64, max: u64, example: &'static str| {
            var(name)
                .map(|v| super::parse_number(name, &v, min, max, example))
                .transpose()
        };
        if let Some(n) = number("HYPERKIT_ES_BATCH_EVENTS", 1, 100_000, "1000")? {
            c.batch_events = n as usize;
        }
        if let Some(n) = number(
            "HYPERKIT_ES_BATCH_BYTES",
            1024,
            100 * 1024 * 1024,
            "5242880",
        )? {
            c.batch_bytes = n as usize;
        }
        if let Some(n) = number("HYPERKIT_ES_FLUSH_MS", 1, 3_600_000, "1000")? {
            c.flush_interval = Duration::from_millis(n);
        }
        if let Some(n) = number("HYPERKIT_ES_QUEUE_CAPACITY", 1, 10_000_000, "10000")? {
            c.queue_capacity = n as usize;
        }
        if let Some(v) = var("HYPERKIT_ES_TEMPLATE") {
            c.install_template = crate::config::parse_bool("HYPERKIT_ES_TEMPLATE", &v)?;
        }
        if let Some(n) = number("HYPERKIT_ES_TIMEOUT_MS", 1, 600_000, "30000")? {
            c.timeout = Duration::from_millis(n);
        }
        if let Some(n) = number("HYPERKIT_ES_RETRY_INITIAL_MS", 1, 600_000, "100")? {
            c.retry_initial = Duration::from_millis(n);
        }
        if let Some(n) = number("HYPERKIT_ES_RETRY_MAX_MS", 1, 3_600_000, "30000")? {
            c.retry_max = Duration::from_millis(n);
        }
        Ok(Some(c))
    }

    /// The index (or data stream) a document with this timestamp goes to.
    ///
    /// ```
    /// let c = hyperkit_obs::shipping::ElasticsearchConfig::new("http://127.0.0.1:9200");
    /// // 2026-11-27T23:59:59.999Z
    /// assert_eq!(c.index_for(1_795_823_999_999), "hyperkit-logs-2026.11.27");
    /// ```
    pub fn index_for(&self, timestamp_ms: i64) -> String {
        if self.data_stream {
            return self.index.clone();
        }
        let (y, m, d) = crate::util::civil_from_days(timestamp_ms.div_euclid(86_400_000));
        let mut out = String::with_capacity(self.index.len() + 4);
        let mut chars = self.index.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('Y') => out.push_str(&format!("{y:04}")),
                Some('m') => out.push_str(&format!("{m:02}")),
                Some('d') => out.push_str(&format!("{d:02}")),
                Some(other) => out.push(other),
                None => {}
            }
        }
        out
    }

    /// The index pattern that covers every index this configuration writes
    /// (`hyperkit-logs-*`), for the template and for searches.
    pub fn index_wildcard(&self) -> String {
        if self.data_stream {
            return self.index.clone();
        }
        match self.index.find('%') {
            Some(i) => format!("{}*", &self.index[..i]),
            None => self.index.clone(),
        }
    }

    /// The index template installed at start: ECS mappings for the fields
    /// the log layer writes, other strings as `keyword`.
    pub fn template(&self) -> Value {
        let keyword = || json!({"type": "keyword", "ignore_above": 1024});
        let mut template = json!({
            "index_patterns": [self.index_wildcard()],
            // Above the built-in `logs-*-*` template (100).
            "priority": 200,
            "template": {
                "mappings": {
                    "dynamic_templates": [{
                        "strings_as_keyword": {
                            "match_mapping_type": "string",
                            "mapping": keyword(),
                        }
                    }],
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "message": {"type": "match_only_text"},
                        "ecs": {"properties": {"version": keyword()}},
                        "log": {"properties": {"level": keyword()}},
                        "service": {"properties": {"name": keyword()}},
                        "event": {"properties": {"duration": {"type": "long"}}},
                        "error": {"properties": {
                            "message": {"type": "text"},
                            "type": keyword(),
                        }},
                        "trace": {"properties": {"id": keyword()}},
                        "span": {"properties": {"id": keyword()}},
                        "chain": keyword(),
                        "model": keyword(),
                        "task": keyword(),
                        "operation": keyword(),
                        "status": keyword(),
                    }
                }
            },
            "_meta": {"description": "ECS log documents written by hyperkit-obs"}
        });
        if self.data_stream {
            template["data_stream"] = json!({});
        }
        template
    }
}

impl ElasticsearchConfig {
    /// The values as `(variable, value)` pairs, secrets shown as `***`, for
    /// `hyperkit-obs check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let unset = || "(unset)".to_owned();
        let (key, user, password) = match &self.auth {
            Some(ElasticsearchAuth::ApiKey(k)) => (k.to_string(), unset(), unset()),
            Some(ElasticsearchAuth::Basic { username, password }) => {
                (unset(), username.clone(), password.to_string())
            }
            None => (unset(), unset(), unset()),
        };
        vec![
            ("ELASTICSEARCH_URL", self.url.clone()),
            ("ELASTICSEARCH_API_KEY", key),
            ("ELASTICSEARCH_USERNAME", user),
            ("ELASTICSEARCH_PASSWORD", password),
            ("HYPERKIT_ES_INDEX", self.index.clone()),
            ("HYPERKIT_ES_DATA_STREAM", self.data_stream.to_string()),
            ("HYPERKIT_ES_BATCH_EVENTS", self.batch_events.to_string()),
            ("HYPERKIT_ES_BATCH_BYTES", self.batch_bytes.to_string()),
            (
                "HYPERKIT_ES_FLUSH_MS",
                self.flush_interval.as_millis().to_string(),
            ),
            (
                "HYPERKIT_ES_QUEUE_CAPACITY",
                self.queue_capacity.to_string(),
            ),
            ("HYPERKIT_ES_TEMPLATE", self.install_template.to_string()),
            (
                "HYPERKIT_ES_TIMEOUT_MS",
                self.timeout.as_millis().to_string(),
            ),
            (
                "HYPERKIT_ES_RETRY_INITIAL_MS",
                self.retry_initial.as_millis().to_string(),
            ),
            (
                "HYPERKIT_ES_RETRY_MAX_MS",
                self.retry_max.as_millis().to_string(),
            ),
        ]
    }

    /// The secret values, for scrubbing them from text that leaves the
    /// process.
    pub fn secrets(&self) -> Vec<&str> {
        match &self.auth {
            Some(ElasticsearchAuth::ApiKey(k)) => vec![k.expose()],
            Some(ElasticsearchAuth::Basic { password, .. }) => vec![password.expose()],
            None => Vec::new(),
        }
    }
}

/// Why an index pattern (or data stream name) is unusable, if it is.
fn check_index(index: &str, data_stream: bool) -> Result<(), String> {
    if index.is_empty() || index.len() > 200 {
        return Err("must be 1 to 200 characters".to_owned());
    }
    if index.starts_with(['-', '_', '+', '.']) {
        return Err("must not start with -, _, + or .".to_owned());
    }
    let literal = index
        .replace("%%", "")
        .replace("%Y", "")
        .replace("%m", "")
        .replace("%d", "");
    if let Some(c) = literal
        .chars()
        .find(|c| c.is_ascii_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(*c))
    {
        return Err(format!(
            "holds {c:?}: Elasticsearch index names are lowercase, without spaces or \\ / * ? \" < > | , # :"
        ));
    }
    let mut chars = index.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'm' | 'd') if data_stream => {
                    return Err(
                        "names a data stream (HYPERKIT_ES_DATA_STREAM=true): no date placeholders"
                            .to_owned(),
                    );
                }
                Some('Y' | 'm' | 'd' | '%') => {}
                _ => return Err("may only use the placeholders %Y, %m, %d and %%".to_owned()),
            }
        }
    }
    Ok(())
}

/// Reads `ELASTICSEARCH_URL`; credentials in it become basic auth and leave
/// the URL, so the URL can be shown.
fn parse_url(v: &str) -> Result<(String, Option<ElasticsearchAuth>), ConfigError> {
    let url = crate::config::parse_server_url("ELASTICSEARCH_URL", v, EXAMPLE_URL)?;
    let auth = url
        .credentials
        .map(|(username, password)| ElasticsearchAuth::Basic { username, password });
    Ok((url.base, auth))
}

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
enum BulkAnswer {
    /// 200: one result per document.
    Items(Vec<ItemResult>),
    /// 413: the batch is too large.
    TooLarge,
    /// Worth trying again later (after `retry_after` when given).
    Retry(ShippingError, Option<Duration>),
    /// Refused for good.
    Refused(String),
}

#[derive(Debug, PartialEq, Eq)]
enum ItemResult {
    Delivered,
    Retry(String),
    Rejected(String),
}

impl ElasticsearchClient {
    /// A client for `config`'s server and credentials.
    pub fn new(config: &ElasticsearchConfig) -> Result<Self, ShippingError> {
        let mut headers = HeaderMap::new();
        if let Some(ElasticsearchAuth::ApiKey(key)) = &config.auth {
            let mut value =
                HeaderValue::from_str(&format!("ApiKey {}", key.expose())).map_err(|_| {
                    ShippingError::Setup {
                        sink: "elasticsearch",
                        message: "ELASTICSEARCH_API_KEY holds characters an HTTP header cannot"
                            .to_owned(),
                    }
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
            message: crate::util::error_chain(e),
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
        let body = response.text().await.unwrap_or_default();
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
        let text = response.text().await.map_err(|e| self.transport(&e))?;
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
    async fn bulk(&self, body: Vec<u8>, count: usize, create: bool) -> BulkAnswer {
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
        let retry_after = crate::util::retry_after(response.headers());
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => return BulkAnswer::Retry(self.transport(&e), None),
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
fn parse_items(text: &str, count: usize, create: bool) -> Result<Vec<ItemResult>, String> {
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

/// Starts the Elasticsearch shipper on its own thread and registers the
/// `elasticsearch` readiness check. Never waits for the server.
pub fn start(config: &ElasticsearchConfig) -> Result<ShipperGuard, ShippingError> {
    check_index(&config.index, config.data_stream).map_err(|problem| ShippingError::Setup {
        sink: "elasticsearch",
        message: format!("the index {:?} {problem}", config.index),
    })?;
    let client = ElasticsearchClient::new(config)?;
    let config = config.clone();
    super::spawn(
        "elasticsearch",
        config.url.clone(),
        config.queue_capacity,
        move |io| Worker::new(config, client, io).run(),
    )
}

struct Entry {
    doc: Arc<[u8]>,
    index: Arc<str>,
}

struct Worker {
    config: ElasticsearchConfig,
    client: ElasticsearchClient,
    io: WorkerIo,
    pending: VecDeque<Entry>,
    pending_bytes: usize,
    /// When the oldest document now waiting arrived.
    oldest: Option<Instant>,
    /// The sizes of the next requests after 413s: each half of a batch
    /// too large is sent on its own.
    splits: VecDeque<usize>,
    backoff: Duration,
    retry_at: Option<Instant>,
    day: Option<(i64, Arc<str>)>,
    log: FailureLog,
}

impl Worker {
    fn new(config: ElasticsearchConfig, client: ElasticsearchClient, io: WorkerIo) -> Self {
        Worker {
            splits: VecDeque::new(),
            config,
            client,
            io,
            pending: VecDeque::new(),
            pending_bytes: 0,
            oldest: None,
            backoff: Duration::ZERO,
            retry_at: None,
            day: None,
            log: FailureLog::new(),
        }
    }

    fn shared(&self) -> &Shared {
        &self.io.shared
    }

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

    async fn run(mut self) {
        let mut lc = Lifecycle::new();
        if self.config.install_template {
            let first = self.start_template();
            // The first batch may create today's index: give the template
            // its first chance, bounded, without blocking start-up.
            let wait = self.config.timeout;
            let _ = lc
                .run(&mut self.io.control, tokio::time::timeout(wait, first))
                .await;
        }
        loop {
            lc.poll(&mut self.io.control);
            while let Ok(doc) = self.io.rx.try_recv() {
                let index = self.index(doc.timestamp_ms);
                self.pending_bytes += doc.bytes.len();
                self.oldest.get_or_insert_with(Instant::now);
                self.pending.push_back(Entry {
                    doc: doc.bytes,
                    index,
                });
            }
            if lc.past_deadline() {
                let left = self.pending.len();
                if left > 0 {
                    self.shared().dropped(left);
                    let message = format!(
                        "{left} log documents could not be delivered to Elasticsearch at {} before \
                         the shutdown deadline and are dropped",
                        self.config.url
                    );
                    self.log.log(&self.io.shared, &message);
                }
                break;
            }
            if lc.stop_at.is_some() && self.pending.is_empty() {
                break;
            }
            let now = Instant::now();
            let due = self.oldest.map(|t| t + self.config.flush_interval);
            let ready = !self.pending.is_empty()
                && self.retry_at.is_none_or(|t| now >= t)
                && (lc.urgent()
                    || !self.splits.is_empty()
                    || self.pending.len() >= self.config.batch_events
                    || self.pending_bytes >= self.config.batch_bytes
                    || due.is_some_and(|t| now >= t));
            if ready {
                self.retry_at = None;
                self.send_batch(&mut lc).await;
                lc.answer(self.shared());
                continue;
            }
            lc.answer(self.shared());
            let next = match (self.retry_at, due) {
                (Some(r), Some(d)) => Some(r.max(d)),
                (Some(r), None) => Some(r),
                (None, d) => d,
            };
            lc.wait(&mut self.io.control, next).await;
        }
        for w in lc.waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// Spawns the template installer; the receiver hears of its first
    /// attempt.
    fn start_template(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let client = self.client.clone();
        let shared = Arc::clone(&self.io.shared);
        let (initial, max) = (self.config.retry_initial, self.config.retry_max);
        shared.set_warning(Some("the index template is not installed yet".to_owned()));
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut backoff = Duration::ZERO;
            loop {
                match client.install_template().await {
                    Ok(()) => {
                        shared.set_warning(None);
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                        return;
                    }
                    Err(e) => {
                        let message = format!(
                            "the index template {TEMPLATE_NAME} could not be installed ({e}); \
                             retrying in the background"
                        );
                        if tx.is_some() {
                            tracing::warn!(target: "hyperkit_obs::shipping", sink = "elasticsearch", "{message}");
                        }
                        shared.set_warning(Some(message));
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                        backoff = next_backoff(backoff, initial, max);
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        });
        rx
    }

    async fn send_batch(&mut self, lc: &mut Lifecycle) {
        let limit = self.splits.pop_front().unwrap_or(self.config.batch_events);
        let mut count = 0;
        let mut bytes = 0;
        for e in &self.pending {
            if count > 0 && (count >= limit || bytes + e.doc.len() > self.config.batch_bytes) {
                break;
            }
            count += 1;
            bytes += e.doc.len();
        }
        let batch: Vec<Entry> = self.pending.drain(..count).collect();
        self.pending_bytes -= bytes;
        let create = self.config.data_stream;
        let body = match encode(&batch, create) {
            Ok(b) => b,
            Err(e) => {
                // Writing to memory does not fail; keep the documents if it did.
                self.requeue(batch);
                let message = format!("cannot compress a bulk request: {e}");
                self.log.log(&self.io.shared, &message);
                self.back_off(None);
                return;
            }
        };
        let answer = match lc
            .run(
                &mut self.io.control,
                self.client.bulk(body, batch.len(), create),
            )
            .await
        {
            Some(a) => a,
            None => {
                // The shutdown deadline passed while waiting.
                self.requeue(batch);
                return;
            }
        };
        match answer {
            BulkAnswer::Items(results) => {
                let mut retry = Vec::new();
                let mut delivered = 0;
                let mut last_retry_reason = None;
                for (entry, result) in batch.into_iter().zip(results) {
                    match result {
                        ItemResult::Delivered => delivered += 1,
                        ItemResult::Retry(reason) => {
                            last_retry_reason = Some(reason);
                            retry.push(entry);
                        }
                        ItemResult::Rejected(reason) => {
                            self.io.shared.rejected(&entry.doc, &reason);
                        }
                    }
                }
                self.io.shared.delivered(delivered);
                if let Some(reason) = last_retry_reason {
                    let message = format!(
                        "Elasticsearch at {} asked to retry {} documents ({reason})",
                        self.config.url,
                        retry.len()
                    );
                    self.requeue(retry);
                    self.log.log(&self.io.shared, &message);
                    self.back_off(None);
                } else {
                    self.backoff = Duration::ZERO;
                    self.io.shared.set_error(None);
                }
            }
            BulkAnswer::TooLarge => {
                if batch.len() > 1 {
                    let first = batch.len().div_ceil(2);
                    self.splits.push_front(batch.len() - first);
                    self.splits.push_front(first);
                    self.requeue(batch);
                } else {
                    for entry in batch {
                        self.io.shared.rejected(
                            &entry.doc,
                            "HTTP 413: the document alone is larger than the server accepts \
                             (http.max_content_length)",
                        );
                    }
                }
            }
            BulkAnswer::Retry(e, retry_after) => {
                let message = format!(
                    "a bulk request of {} documents to Elasticsearch failed and will be retried: {e}",
                    batch.len()
                );
                self.requeue(batch);
                self.log.log(&self.io.shared, &message);
                self.back_off(retry_after);
            }
            BulkAnswer::Refused(reason) => {
                for entry in &batch {
                    self.io.shared.rejected(&entry.doc, &reason);
                }
                let message = format!(
                    "Elasticsearch at {} refused a bulk request of {} documents: {reason}",
                    self.config.url,
                    batch.len()
                );
                self.log.log(&self.io.shared, &message);
            }
        }
        if self.pending.is_empty() {
            self.oldest = None;
        }
    }

    /// Puts documents back at the front, before newer ones, in order.
    fn requeue(&mut self, batch: Vec<Entry>) {
        for entry in batch.into_iter().rev() {
            self.pending_bytes += entry.doc.len();
            self.pending.push_front(entry);
        }
        if !self.pending.is_empty() {
            self.oldest.get_or_insert_with(Instant::now);
        }
    }

    fn back_off(&mut self, retry_after: Option<Duration>) {
        self.backoff = next_backoff(
            self.backoff,
            self.config.retry_initial,
            self.config.retry_max,
        );
        let wait = retry_after.map_or(self.backoff, |r| r.min(self.config.retry_max));
        self.retry_at = Some(Instant::now() + wait);
    }
}

/// The gzip-compressed NDJSON body of a bulk request.
fn encode(batch: &[Entry], create: bool) -> std::io::Result<Vec<u8>> {
    let action = if create { "create" } else { "index" };
    let raw: usize = batch.iter().map(|e| e.doc.len() + e.index.len() + 32).sum();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw / 4 + 64),
        flate2::Compression::fast(),
    );
    let mut line = Vec::new();
    for e in batch {
        line.clear();
        line.extend_from_slice(b"{\"");
        line.extend_from_slice(action.as_bytes());
        line.extend_from_slice(b"\":{\"_index\":");
        serde_json::to_writer(&mut line, &*e.index)?;
        line.extend_from_slice(b"}}\n");
        let start = line.len();
        line.extend_from_slice(&e.doc);
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

impl Shared {
    pub(crate) fn set_warning(&self, warning: Option<String>) {
        *self.warning.lock().unwrap_or_else(PoisonError::into_inner) = warning;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Option<ElasticsearchConfig>, ConfigError> {
        ElasticsearchConfig::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn shipping_es_is_off_without_its_url() {
        assert_eq!(from(&[]).unwrap(), None);
    }

    #[test]
    fn shipping_es_url_credentials_become_basic_auth_and_leave_the_url() {
        let c = from(&[("ELASTICSEARCH_URL", "https://elastic:p%40ss@es:9200/")])
            .unwrap()
            .unwrap();
        assert_eq!(c.url, "https://es:9200");
        assert_eq!(
            c.auth,
            Some(ElasticsearchAuth::Basic {
                username: "elastic".to_owned(),
                password: Secret::new("p@ss"),
            })
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn shipping_es_reads_api_key_and_limits() {
        let c = from(&[
            ("ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
            ("ELASTICSEARCH_API_KEY", "a2V5OnNlY3JldA=="),
            ("HYPERKIT_ES_BATCH_EVENTS", "10"),
            ("HYPERKIT_ES_FLUSH_MS", "5"),
            ("HYPERKIT_ES_TEMPLATE", "false"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.auth,
            Some(ElasticsearchAuth::ApiKey(Secret::new("a2V5OnNlY3JldA==")))
        );
        assert!(!format!("{c:?}").contains("a2V5"));
        assert!(!format!("{:?}", c.describe()).contains("a2V5"));
        assert_eq!(c.secrets(), ["a2V5OnNlY3JldA=="]);
        assert_eq!(c.batch_events, 10);
        assert_eq!(c.flush_interval, Duration::from_millis(5));
        assert!(!c.install_template);
    }

    #[test]
    fn shipping_es_errors_name_the_variable_and_show_an_example() {
        let cases: &[&[(&str, &str)]] = &[
            &[("ELASTICSEARCH_URL", "es:9200")],
            &[("ELASTICSEARCH_URL", "ftp://es:9200")],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("HYPERKIT_ES_INDEX", "Logs-%Y"),
            ],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("HYPERKIT_ES_DATA_STREAM", "true"),
                ("HYPERKIT_ES_INDEX", "logs-%Y"),
            ],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("HYPERKIT_ES_BATCH_EVENTS", "0"),
            ],
            &[
                ("ELASTICSEARCH_URL", "http://es:9200"),
                ("ELASTICSEARCH_USERNAME", "elastic"),
            ],
        ];
        for vars in cases {
            let e = from(vars).unwrap_err().to_string();
            assert!(e.contains("is invalid") && e.contains("for example"), "{e}");
        }
        let e = from(&[("ELASTICSEARCH_URL", "nope://user:topsecret@es")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ELASTICSEARCH_URL="), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn shipping_es_daily_index_uses_the_utc_date_of_the_document() {
        let c = ElasticsearchConfig::new("http://es:9200");
        assert_eq!(c.index_for(0), "hyperkit-logs-1970.01.01");
        assert_eq!(c.index_for(-1), "hyperkit-logs-1969.12.31");
        // 2024-02-29T12:00:00Z
        assert_eq!(c.index_for(1_709_208_000_000), "hyperkit-logs-2024.02.29");
        // 2000-03-01T00:00:00Z
        assert_eq!(c.index_for(951_868_800_000), "hyperkit-logs-2000.03.01");
        assert_eq!(c.index_wildcard(), "hyperkit-logs-*");
    }

    #[test]
    fn shipping_es_data_stream_uses_its_name_and_create() {
        let c = from(&[
            ("ELASTICSEARCH_URL", "http://es:9200"),
            ("HYPERKIT_ES_DATA_STREAM", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.index_for(0), DEFAULT_DATA_STREAM);
        assert_eq!(c.template()["data_stream"], json!({}));
        assert_eq!(c.template()["index_patterns"], json!([DEFAULT_DATA_STREAM]));
    }

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

    #[test]
    fn shipping_es_body_is_gzip_ndjson_with_one_action_per_document() {
        let batch = vec![
            Entry {
                doc: Arc::from(&b"{\"@timestamp\":\"x\",\n\"message\":\"a\"}"[..]),
                index: Arc::from("hyperkit-logs-2026.01.01"),
            },
            Entry {
                doc: Arc::from(&b"{\"@timestamp\":\"y\"}"[..]),
                index: Arc::from("hyperkit-logs-2026.01.02"),
            },
        ];
        let gz = encode(&batch, true).unwrap();
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
